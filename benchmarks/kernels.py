"""Benchmark the plugin kernels at FB-OCC's shapes against the PyTorch references (`make bench-kernels`).

For each op and dtype: median over CUDA-event timings of single launches, effective bandwidth (each input
read once plus the output written once, over the time), its share of this device's measured
device-to-device copy bandwidth, the speed-up against the PyTorch reference timed in the same run, and,
for fp16, the largest deviation from the fp32 reference computed on the same (fp16) inputs. Small
workloads rotate over several input sets so that L2 does not hold them between launches.

With `--baseline-src PATH` (a checkout of DerryHub/BEVFormer_tensorrt at 303d314, the kernels FB-OCC users have
today) their kernels are compiled at run time with our adapter (`benchmarks/baseline/`) and timed on the same
tensors in the same run: "today's ms", our speed-up over them and their max error against the fp32 reference.
Their code is never committed here. `--baseline-patch` applies FB-OCC-TRT's plugin patch (which turns their MSDA
into the op FB-OCC exports) to a temporary copy.

With `--trt-src PATH` (a checkout of NVIDIA/TensorRT OSS, e.g. v10.8.0) TensorRT's own MultiscaleDeformableAttn
kernel is compiled the same way (`benchmarks/baseline/tensorrt_msda.py`) and timed on the same MSDA inputs in the same
run; the MSDA bar ("at least 2x TensorRT's own kernel") is then judged against that time instead of the figure
issue 3 quotes.

    python benchmarks/kernels.py --output docs/benchmarks/kernels.md [--json results.json]
        [--baseline-src PATH [--baseline-patch fb-occ_custom_op_trt_plugin.patch] [--trt-include DIR]
         [--baseline-compat DIR]] [--trt-src PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import msda_floors
from benchmarks import workloads as wl
from benchmarks.baseline import bevformer_trt as today_build
from benchmarks.baseline import tensorrt_msda
from benchmarks.baseline.bevformer_trt import TodaysKernels
from benchmarks.baseline.tensorrt_msda import TensorRTMsda
from fbocc.errors import FboccError
from fbocc.ops import cuda as kernels
from fbocc.ops import reference as ref

# Bars from issue 3 (ms at FB-OCC's shapes on the H100, TensorRT's own MSDA kernel for comparison). With --trt-src
# the MSDA bar uses TensorRT's kernel timed in the same run instead.
TRT_MSDA_MS = {"image cross-attention": 0.072, "BEV self-attention": 0.027}
BEV_POOL_BAR_MS = 0.03
GRID_SAMPLER_BAR_SHARE = 0.60
FP16_BAR = 1e-2
BURST = 20  # back-to-back launches per timing in the "back-to-back" columns


@dataclass
class Today:
    """A kernel we compare with (today's BEVFormer_tensorrt kernel, or TensorRT's own MSDA kernel) on the same
    inputs: time, and max |result - fp32 reference|."""

    ms: float | None  # None: not run, `note` says why
    max_err: float | None = None
    note: str = ""
    burst_ms: float | None = None  # per launch, BURST launches back to back (TensorRT's MSDA only)


@dataclass
class Floors:
    """MSDA's data-movement floors on the same inputs (benchmarks/msda_floors.py), and the timing method's fixed
    cost."""

    gather_ms: float  # the value gathers alone (their sum written out)
    stream_ms: float  # the location/weight reads and the output write alone
    empty_ms: float  # an empty kernel


@dataclass
class Row:
    op: str
    site: str
    dtype: str
    kernel_ms: float
    reference_ms: float
    bytes_moved: int
    bandwidth_gbs: float
    copy_share: float
    speedup: float
    fp16_max_err: float | None
    bar: str
    bar_met: bool | None
    today: Today | None = None  # None: no baseline given (--baseline-src)
    tensorrt: Today | None = None  # TensorRT's own MSDA kernel on the same inputs (--trt-src); None: not given
    burst_ms: float | None = None  # per launch, BURST launches back to back (MSDA rows with TensorRT's kernel)
    bar_ms: float | None = None  # the MSDA bar as a time
    floors: Floors | None = None  # MSDA rows with a bar


def _nbytes(tensors: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


_SPIN_CYCLES = 1_000_000  # ~0.5 ms of GPU clock cycles


def time_ms(fn: Callable[[int], object], reps: int, warmup: int = 5, burst: int = 1) -> float:
    """Median of `reps` CUDA-event timings of `fn(i)` (i selects the input set). With `burst` > 1 each timing
    covers that many launches back to back (i running on), and the median is divided by it: a kernel's cost in a
    stream of work, without the fixed cost of one event pair around one launch."""
    for i in range(warmup):
        fn(i)
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        # Keep the GPU busy while Python queues the launch: the events then time the kernel, not the
        # host's launch latency (which is longer than these kernels).
        torch.cuda._sleep(_SPIN_CYCLES)
        starts[i].record()
        for j in range(burst):
            fn(i * burst + j)
        ends[i].record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends, strict=True)) / burst


def _max_err(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got.float() - expected.float()).abs().max().item())


def measure_today(run: Callable[[int], object], reps: int, out: torch.Tensor, expected: torch.Tensor,
                  burst: bool = False) -> Today:
    """Time a kernel we compare with like ours (`run(i)` on input set i), also BURST launches back to back when
    `burst`, then compare `out` (what `run(0)` writes) with the fp32 reference on the same inputs."""
    ms = time_ms(run, reps)
    burst_ms = time_ms(run, reps, burst=BURST) if burst else None
    run(0)
    torch.cuda.synchronize()
    return Today(ms, _max_err(out, expected), burst_ms=burst_ms)


def copy_bandwidth_gbs() -> float:
    """Device-to-device copy bandwidth, counting bytes read plus bytes written."""
    src = torch.empty(1 << 28, dtype=torch.float32, device="cuda").normal_()  # 1 GiB
    dst = torch.empty_like(src)
    ms = time_ms(lambda _: dst.copy_(src), reps=20)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def input_sets(make: Callable[[int], tuple[torch.Tensor, ...]], l2_bytes: int) -> list[tuple[torch.Tensor, ...]]:
    """Enough distinct input sets that rotating through them overflows L2 twice (at most 16)."""
    first = make(0)
    count = max(1, min(16, -(-2 * l2_bytes // max(1, _nbytes(first)))))
    return [first, *(make(seed) for seed in range(1, count))]


def bench_grid_sampler(copy_gbs: float, reps: int, today: TodaysKernels | None = None) -> list[Row]:
    rows = []
    case = wl.FBOCC_GRID_SAMPLER
    volume32, grid = wl.grid_sampler_inputs(case, torch.float32, "cuda", warp="ego-motion")
    for dtype in (torch.float32, torch.float16):
        volume = volume32.to(dtype)
        out = torch.empty((case.n, case.c, *case.out), dtype=dtype, device="cuda")
        ref_grid = grid.to(dtype).permute(0, 2, 3, 4, 1).contiguous()

        def kernel(_: int, volume: torch.Tensor = volume, out: torch.Tensor = out) -> object:
            return kernels.grid_sampler3d(volume, grid, 0, 0, True, out=out)

        def reference(_: int, volume: torch.Tensor = volume, ref_grid: torch.Tensor = ref_grid) -> object:
            return torch.nn.functional.grid_sample(volume, ref_grid / 10, align_corners=True)

        k_ms = time_ms(kernel, reps)
        r_ms = time_ms(reference, reps)
        moved = _nbytes([volume, grid, out])
        err = None
        if dtype == torch.float16:
            err = (out.float() - ref.grid_sampler3d(volume.float(), grid, 0, 0, True)).abs().max().item()
        today_row = None
        if today is not None:
            # Their plugin takes the grid in the features' dtype (fp16 grid for fp16); converted before timing.
            today_grid = grid.to(dtype).contiguous()
            today_out = torch.empty_like(out)

            def todays(_: int, volume: torch.Tensor = volume, today_grid: torch.Tensor = today_grid,
                       today_out: torch.Tensor = today_out) -> object:
                return today.grid_sampler3d(volume, today_grid, 0, 0, True, out=today_out)

            today_row = measure_today(todays, reps, today_out, ref.grid_sampler3d(volume.float(), grid, 0, 0, True))
        bw = moved / (k_ms * 1e-3) / 1e9
        share = bw / copy_gbs
        rows.append(Row("GridSampler3D", "temporal fusion [1,1280,8,100,100], grid 8x100x100", str(dtype)[6:],
                        k_ms, r_ms, moved, bw, share, r_ms / k_ms, err,
                        f">= {GRID_SAMPLER_BAR_SHARE:.0%} of copy bandwidth",
                        share >= GRID_SAMPLER_BAR_SHARE and (err is None or err <= FP16_BAR), today_row))
    return rows


def bench_bev_pool(copy_gbs: float, reps: int, l2_bytes: int, today: TodaysKernels | None = None) -> list[Row]:
    rows = []
    case = wl.FBOCC_BEV_POOL
    for dtype in (torch.float32, torch.float16):
        sets = input_sets(lambda seed: wl.bev_pool_inputs(case, dtype, "cuda", seed=seed), l2_bytes)  # noqa: B023
        shape = (case.b, case.out_depth, case.out_height, case.out_width, case.c)
        outs = [torch.empty(shape, dtype=dtype, device="cuda") for _ in sets]
        args = (case.out_height, case.out_width, case.out_depth)

        def kernel(i: int) -> object:
            return kernels.bev_pool_v2(*sets[i % len(sets)], *args, out=outs[i % len(outs)])  # noqa: B023

        k_ms = time_ms(kernel, reps)
        r_ms = time_ms(lambda i: ref.bev_pool_v2(*sets[i % len(sets)], *args), reps)  # noqa: B023
        moved = _nbytes([*sets[0], outs[0]])
        err = None
        if dtype == torch.float16:
            got = kernels.bev_pool_v2(*sets[0], *args)
            expected = ref.bev_pool_v2(sets[0][0].float(), sets[0][1].float(), *sets[0][2:], *args)
            err = (got.float() - expected).abs().max().item()
        today_row = None
        if today is not None:
            today_outs = [torch.empty(shape, dtype=dtype, device="cuda") for _ in sets]

            def todays(i: int, sets: list[tuple[torch.Tensor, ...]] = sets,
                       today_outs: list[torch.Tensor] = today_outs) -> object:
                depth, feat, r_depth, r_feat, r_bev, starts, lengths = sets[i % len(sets)]
                return today.bev_pool_v2(depth, feat, r_depth, r_feat, r_bev, starts, lengths,
                                         today_outs[i % len(today_outs)])

            depth, feat, r_depth, r_feat, r_bev, starts, lengths = sets[0]
            expected32 = ref.bev_pool_v2(depth.float(), feat.float(), r_depth, r_feat, r_bev, starts, lengths,
                                         case.out_height, case.out_width, case.out_depth)
            today_row = measure_today(todays, reps, today_outs[0], expected32)
        bw = moved / (k_ms * 1e-3) / 1e9
        intervals = sets[0][5].numel()
        met = k_ms <= BEV_POOL_BAR_MS if dtype == torch.float32 else (err is not None and err <= FP16_BAR)
        rows.append(Row("BEVPoolV2", f"depth [1,6,80,16,44], feat [1,6,16,44,80], {case.points} points, "
                        f"{intervals} intervals -> [1,8,100,100,80]", str(dtype)[6:], k_ms, r_ms, moved, bw,
                        bw / copy_gbs, r_ms / k_ms, err,
                        f"<= {BEV_POOL_BAR_MS} ms fp32 incl. zero fill" if dtype == torch.float32 else
                        f"fp16 within {FP16_BAR}", met, today_row))
    return rows


def msda_bar_ms(site: str, tensorrt: Today | None) -> float | None:
    """The MSDA bar as a time: half TensorRT's time in this run when measured, else half the figure issue 3 quotes
    for the site; None where the site has no bar."""
    issue_ms = TRT_MSDA_MS.get(site)
    if issue_ms is None:
        return None
    return (tensorrt.ms if tensorrt is not None and tensorrt.ms is not None else issue_ms) / 2


def msda_bar(site: str, kernel_ms: float, err: float | None, tensorrt: Today | None) -> tuple[str, bool | None]:
    """The MSDA bar, at least 2x TensorRT's own kernel (msda_bar_ms); fp16 rows must also be within FP16_BAR of the
    fp32 reference."""
    bar_ms = msda_bar_ms(site, tensorrt)
    if bar_ms is None:
        return "none (reported only)", None
    met = kernel_ms <= bar_ms and (err is None or err <= FP16_BAR)
    issue_ms = TRT_MSDA_MS[site]
    if tensorrt is not None and tensorrt.ms is not None:
        return f"<= {bar_ms:.4f} ms (2x TensorRT's {tensorrt.ms:.4f} ms in this run; issue: {issue_ms} ms)", met
    return f"<= {bar_ms:.4f} ms (2x TensorRT's {issue_ms} ms)", met


def measure_msda(call: Callable[..., object], sets: list[tuple[torch.Tensor, ...]], shape: tuple[int, ...],
                 dtype: torch.dtype, reps: int, expected32: torch.Tensor, burst: bool = False) -> Today:
    """A compared MSDA kernel, `call(value, shapes, starts, locations, weights, out)`, on our input sets, each into
    its own output."""
    outs = [torch.empty(shape, dtype=dtype, device="cuda") for _ in sets]

    def run(i: int) -> object:
        return call(*sets[i % len(sets)], outs[i % len(outs)])

    return measure_today(run, reps, outs[0], expected32, burst)


def measure_floors(sets: list[tuple[torch.Tensor, ...]], outs: list[torch.Tensor], locality: str,
                   reps: int) -> Floors:
    """MSDA's data-movement floors (benchmarks/msda_floors.py) on the same input sets, into `outs`."""
    level = msda_floors.level_of(sets[0][1])  # read back once, before timing

    def gather(i: int) -> object:
        value, _, _, locations, _ = sets[i % len(sets)]
        return msda_floors.gather_floor(value, level, locations, locality, outs[i % len(outs)], seed=i)

    def stream(i: int) -> object:
        value, _, _, locations, weights = sets[i % len(sets)]
        return msda_floors.stream_floor(value, locations, weights, outs[i % len(outs)])

    return Floors(time_ms(gather, reps), time_ms(stream, reps), time_ms(lambda _: msda_floors.empty(), reps))


def bench_msda(copy_gbs: float, reps: int, l2_bytes: int, today: TodaysKernels | None = None,
               trt: TensorRTMsda | None = None) -> list[Row]:
    rows = []
    for site, case in wl.FBOCC_MSDA.items():
        for locality in ("local", "uniform"):
            for dtype in (torch.float32, torch.float16):
                def make(seed: int, dtype: torch.dtype = dtype, locality: str = locality,
                         case: wl.MsdaCase = case) -> tuple[torch.Tensor, ...]:
                    return wl.msda_inputs(case, dtype, "cuda", seed=seed, locality=locality)

                sets = input_sets(make, l2_bytes)
                shape = (case.n, case.queries, case.heads * case.channels)
                outs = [torch.empty(shape, dtype=dtype, device="cuda") for _ in sets]

                def kernel(i: int, sets: list[tuple[torch.Tensor, ...]] = sets,
                           outs: list[torch.Tensor] = outs) -> object:
                    return kernels.multi_scale_deformable_attn(*sets[i % len(sets)], out=outs[i % len(outs)])

                def reference(i: int, sets: list[tuple[torch.Tensor, ...]] = sets) -> object:
                    return ref.multi_scale_deformable_attn(*sets[i % len(sets)])

                k_ms = time_ms(kernel, reps)
                r_ms = time_ms(reference, reps)
                moved = _nbytes([*sets[0], outs[0]])
                v0, s0, st0, loc0, w0 = sets[0]
                expected32 = ref.multi_scale_deformable_attn(v0.float(), s0, st0, loc0.float(), w0.float())
                err = None
                if dtype == torch.float16:
                    got = kernels.multi_scale_deformable_attn(*sets[0])
                    err = (got.float() - expected32).abs().max().item()
                today_row = None
                if today is not None and not today.has_msda:
                    today_row = Today(None, note="not run: the checkout's MSDA is 303d314's original op "
                                      "(reference points + offsets, softmax inside); --baseline-patch gives FB-OCC's")
                elif today is not None:
                    today_row = measure_msda(today.multi_scale_deformable_attn, sets, shape, dtype, reps, expected32)
                trt_row = None
                burst_ms = None
                if trt is not None:
                    trt_row = measure_msda(trt.multi_scale_deformable_attn, sets, shape, dtype, reps, expected32,
                                           burst=True)
                    burst_ms = time_ms(kernel, reps, burst=BURST)
                bw = moved / (k_ms * 1e-3) / 1e9
                bar, met = msda_bar(site, k_ms, err, trt_row)
                bar_ms = msda_bar_ms(site, trt_row)
                floors = measure_floors(sets, outs, locality, reps) if bar_ms is not None else None
                n, lq, m, d, p = case.n, case.queries, case.heads, case.channels, case.points
                h, w_ = case.levels[0]
                where = "points near a reference point" if locality == "local" else "points uniformly anywhere"
                rows.append(Row("MultiScaleDeformableAttn", f"{site}: value [{n},{h * w_},{m},{d}], {lq} queries, "
                                f"{p} points, {where}", str(dtype)[6:], k_ms, r_ms, moved, bw, bw / copy_gbs,
                                r_ms / k_ms, err, bar, met, today_row, trt_row, burst_ms, bar_ms, floors))
    return rows


def run_once() -> None:
    """Each kernel once at FB-OCC's shapes, fp32 then fp16 (inputs prepared first), for ncu."""
    for dtype in (torch.float32, torch.float16):
        volume, grid = wl.grid_sampler_inputs(wl.FBOCC_GRID_SAMPLER, dtype, "cuda", warp="ego-motion",
                                              grid_dtype=torch.float32)
        bev = wl.bev_pool_inputs(wl.FBOCC_BEV_POOL, dtype, "cuda")
        msda = {site: wl.msda_inputs(case, dtype, "cuda") for site, case in wl.FBOCC_MSDA.items()}
        torch.cuda.synchronize()
        kernels.grid_sampler3d(volume, grid, 0, 0, True)
        c = wl.FBOCC_BEV_POOL
        kernels.bev_pool_v2(*bev, c.out_height, c.out_width, c.out_depth)
        for inputs in msda.values():
            kernels.multi_scale_deformable_attn(*inputs)
        torch.cuda.synchronize()


def _today_text(baseline: str | None) -> list[str]:
    if baseline is None:
        return ["Today's kernels (DerryHub/BEVFormer_tensorrt @303d314, what FB-OCC users deploy): not given in this",
                "run (`--baseline-src PATH`, or `BASELINE_SRC=PATH make bench-kernels`), so the table has no columns",
                "for them."]
    return [f"Today's kernels: DerryHub/BEVFormer_tensorrt from {baseline}.",
            "Their kernel files are compiled in this run with our adapter (`benchmarks/baseline/adapter.cu`) and",
            "called as their TensorRT plugins call them for FB-OCC's ops (the non-`2` plugins: fp16 as `__half`;",
            "the grid and MSDA's locations/weights in the features' dtype, as their plugins require), on the same",
            "input tensors as ours. Their BEVPool and MSDA launchers first zero the output with `cudaMemset`; that",
            "is timed with them. \"ours vs today's\" = today's ms / kernel ms. Today's max err:",
            "max |their output - fp32 reference on the same inputs| (fp32 rows too: that checks how their",
            "conventions were mapped to ours)."]


def _tensorrt_text(tensorrt: str | None) -> list[str]:
    if tensorrt is None:
        quoted = ", ".join(f"{ms} ms at the {site} site" for site, ms in TRT_MSDA_MS.items())
        return ["TensorRT's own MSDA kernel: not given in this run (`--trt-src PATH`, or `TRT_SRC=PATH make",
                f"bench-kernels`), so the MSDA bar uses the times issue 3 quotes for it on an H100 ({quoted})."]
    return [f"TensorRT's own MSDA kernel (MultiscaleDeformableAttnPlugin_TRT): {tensorrt}. Compiled in this run",
            "with our adapter (`benchmarks/baseline/trt_msda_adapter.cu`) and called as its plugin's enqueue calls it",
            "(locations and weights in the features' dtype, as the plugin requires), on the same input tensors as",
            "ours; the MSDA bar in the table is 2x its time in this run. Its rows are in the second table."]


def _tensorrt_table(rows: list[Row]) -> list[str]:
    measured = [r for r in rows if r.tensorrt is not None and r.tensorrt.ms is not None]
    if not measured:
        return []
    lines = ["", "TensorRT's own MSDA kernel, same run, same inputs (max err: against the fp32 reference). The",
             f"back-to-back columns time {BURST} launches between one pair of events (per launch): each kernel's cost",
             "in a stream of work, as inside an engine, without the fixed cost of timing a single launch.", "",
             "| workload | dtype | TensorRT ms | kernel ms | ours vs TensorRT | TensorRT max err | TensorRT ms "
             "back-to-back | kernel ms back-to-back | ours vs TensorRT back-to-back |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in measured:
        t = r.tensorrt
        assert t is not None and t.ms is not None
        t_err = "" if t.max_err is None else f"{t.max_err:.2e}"
        burst = " - | - | - |"
        if t.burst_ms is not None and r.burst_ms is not None:
            burst = f" {t.burst_ms:.4f} | {r.burst_ms:.4f} | {t.burst_ms / r.burst_ms:.2f}x |"
        lines.append(f"| {r.site} | {r.dtype} | {t.ms:.4f} | {r.kernel_ms:.4f} | {t.ms / r.kernel_ms:.2f}x | "
                     f"{t_err} |{burst}")
    return lines


def _floors_table(rows: list[Row]) -> list[str]:
    measured = [r for r in rows if r.floors is not None and r.bar_ms is not None]
    if not measured:
        return []
    lines = ["", "MSDA's data-movement floors, same run, same inputs, same timing (`benchmarks/msda_floors.cu`): two",
             "benchmark-only kernels with the plugin's gather kernel's thread mapping (5 lanes of a channel pair per",
             "(query, head)) that each do one part of its memory traffic and nothing else. \"value gathers alone\":",
             "the 4 x points corner rows of each (query, head), their sum written out, no locations or weights read;",
             "the rows follow a model of the row's pattern (local: each point within 3 pixels of the query's",
             "reference pixel, offsets of std 1.6, a little tighter than the workload's 2, so the model errs fast;",
             "uniform: anywhere). \"locations, weights, output alone\": no value rows read. The plugin kernel does",
             "both and the arithmetic between (its fp16 image cross-attention rows use the shared-memory kernel,",
             "which these floors do not model). \"empty kernel\" is what the timing method itself costs; \"bar\" is",
             "the MSDA bar's time from the table.",
             "",
             "| workload | dtype | kernel ms | bar ms | value gathers alone ms | locations, weights, output alone ms "
             "| empty kernel ms | bar below the gathers alone |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in measured:
        f = r.floors
        assert f is not None and r.bar_ms is not None
        below = "yes" if r.bar_ms < f.gather_ms else "no"
        lines.append(f"| {r.site} | {r.dtype} | {r.kernel_ms:.4f} | {r.bar_ms:.4f} | {f.gather_ms:.4f} | "
                     f"{f.stream_ms:.4f} | {f.empty_ms:.4f} | {below} |")
    return lines


def render(rows: list[Row], device: str, copy_gbs: float, command: str, l2_bytes: int,
           baseline: str | None = None, tensorrt: str | None = None) -> str:
    lines = [
        "# Kernel benchmark",
        "",
        f"Machine: {device}, CUDA {torch.version.cuda}, PyTorch {torch.__version__}, "
        f"L2 {l2_bytes / 2**20:.0f} MiB, {platform.node() or 'unknown host'}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"Command: `{command}`",
        "",
        f"Measured device-to-device copy bandwidth: **{copy_gbs:.0f} GB/s** (bytes read + written).",
        "Times are medians of CUDA-event timings of single warm launches, each queued behind a GPU spin so",
        "that host launch latency is not timed; effective bandwidth counts each",
        "input read once and the output written once. The reference is the PyTorch implementation in",
        "`fbocc/ops/reference.py` (for GridSampler3D: `torch.nn.functional.grid_sample` on the same tensors),",
        "timed in the same run. Inputs are unit-normal; GridSampler3D uses FB-OCC's ego-motion warp (3 degree",
        "yaw, 2.3/1.7 voxel shift); BEVPool puts 200k frustum points into random voxels. MSDA runs twice:",
        "with FB-OCC's access pattern (each query's points within ~2 pixels of its reference point, queries in",
        "raster order) and with points uniformly anywhere (no locality, the worst case). fp16 error: max |fp16",
        "kernel - fp32 reference on the same fp16 inputs|.",
        "",
        *_today_text(baseline),
        "",
        *_tensorrt_text(tensorrt),
        "",
    ]
    given = baseline is not None
    today_head = " today's ms | ours vs today's | today's max err |" if given else ""
    lines += [
        "| op | workload | dtype | kernel ms | PyTorch ms | speed-up |" + today_head
        + " GB/s | % of copy | fp16 max err | bar | met |",
        "| --- | --- | --- | ---: | ---: | ---: |" + (" ---: | ---: | ---: |" if given else "")
        + " ---: | ---: | ---: | --- | --- |",
    ]
    notes: list[str] = []
    for r in rows:
        err = "" if r.fp16_max_err is None else f"{r.fp16_max_err:.2e}"
        met = {True: "yes", False: "**no**", None: "-"}[r.bar_met]
        today = ""
        if given:
            t = r.today
            if t is None or t.ms is None:
                today = " - | - | - |"
                if t is not None and t.note and f"{r.op}: {t.note}" not in notes:
                    notes.append(f"{r.op}: {t.note}")
            else:
                t_err = "" if t.max_err is None else f"{t.max_err:.2e}"
                today = f" {t.ms:.4f} | {t.ms / r.kernel_ms:.1f}x | {t_err} |"
        lines.append(f"| {r.op} | {r.site} | {r.dtype} | {r.kernel_ms:.4f} | {r.reference_ms:.4f} | "
                     f"{r.speedup:.1f}x |{today} {r.bandwidth_gbs:.0f} | {r.copy_share:.0%} | {err} | {r.bar} | "
                     f"{met} |")
    if notes:
        lines += ["", *(f"Today's {n}." for n in notes)]
    lines += _tensorrt_table(rows)
    lines += _floors_table(rows)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="markdown table to write")
    parser.add_argument("--json", type=Path, help="machine-readable results to write")
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument("--only", choices=["grid", "bev", "msda"], action="append")
    parser.add_argument("--once", action="store_true", help="run each FB-OCC kernel once (for a profiler), no table")
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="checkout of DerryHub/BEVFormer_tensorrt @303d314: time today's kernels beside ours")
    parser.add_argument("--baseline-patch", type=Path, default=None,
                        help="FB-OCC-TRT's fb-occ_custom_op_trt_plugin.patch, applied to a temporary copy of their "
                        "kernels (gives FB-OCC's MSDA op)")
    parser.add_argument("--baseline-compat", type=Path, default=None,
                        help="folder holding cublas_v2.h and cudnn.h for their headers (default "
                        "$FBOCC_BASELINE_COMPAT, else .scratch/baseline-compat in this checkout)")
    parser.add_argument("--trt-include", type=Path, default=None,
                        help="TensorRT include/ folder for their headers (default $FBOCC_TRT_HEADERS, else "
                        f"{today_build.DEFAULT_TRT_INCLUDE})")
    parser.add_argument("--trt-src", type=Path, default=None,
                        help="checkout of NVIDIA/TensorRT OSS (e.g. v10.8.0): time TensorRT's own MSDA kernel beside "
                        "ours and judge the MSDA bar against it")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except FboccError as exc:
        print(f"bench-kernels: {exc.render()}", file=sys.stderr)
        return exc.exit_code


def _command(args: argparse.Namespace) -> str:
    """The command that reproduces this run; paths outside the checkout appear as placeholders (`<TRT_SRC>`)."""
    given = [(name, today_build.shown_path(value, f"<{name}>"))
             for name, value in (("BASELINE_SRC", args.baseline_src), ("BASELINE_PATCH", args.baseline_patch),
                                 ("TRT_SRC", args.trt_src)) if value]
    if not args.only:
        return " ".join([*(f"{name}={value}" for name, value in given), "make bench-kernels"])
    flags = [f"--only {o}" for o in args.only]
    flags += [f"--{name.lower().replace('_', '-')} {value}" for name, value in given]
    return "python benchmarks/kernels.py " + " ".join(flags)


def _run(args: argparse.Namespace) -> int:
    # Bad baseline paths fail here, before any GPU work (and on machines without one).
    sources = (today_build.locate(args.baseline_src, args.trt_include, args.baseline_patch, args.baseline_compat)
               if args.baseline_src is not None else None)
    trt_sources = tensorrt_msda.locate(args.trt_src) if args.trt_src is not None else None
    if not torch.cuda.is_available():
        print("bench-kernels: no CUDA device; run it on the GPU machine", file=sys.stderr)
        return 3
    props = torch.cuda.get_device_properties(0)
    l2_bytes = int(getattr(props, "L2_cache_size", 50 << 20))
    kernels.extension()
    if "msda" in (args.only or ["msda"]) and not args.once:
        msda_floors.extension()
    if args.once:
        run_once()
        return 0
    today = None
    if sources is not None:
        library = today_build.build(sources, today_build.cuda_arch())
        today = TodaysKernels(library)
        print(f"bench-kernels: today's kernels built: {library.path}", file=sys.stderr)
    trt = None
    if trt_sources is not None:
        trt = TensorRTMsda(tensorrt_msda.build(trt_sources, today_build.cuda_arch()))
        print(f"bench-kernels: TensorRT's MSDA kernel built: {trt.library.path}", file=sys.stderr)
    copy_gbs = copy_bandwidth_gbs()
    only = set(args.only or ["grid", "bev", "msda"])
    rows: list[Row] = []
    if "bev" in only:
        rows += bench_bev_pool(copy_gbs, args.reps, l2_bytes, today)
    if "msda" in only:
        rows += bench_msda(copy_gbs, args.reps, l2_bytes, today, trt)
    if "grid" in only:
        rows += bench_grid_sampler(copy_gbs, max(10, args.reps // 5), today)
    baseline = today.library.describe() if today is not None else None
    trt_text = trt.library.describe() if trt is not None else None
    text = render(rows, props.name, copy_gbs, _command(args), l2_bytes, baseline, trt_text)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"device": props.name, "copy_gbs": copy_gbs, "baseline": baseline,
                                         "tensorrt": trt_text,
                                         "rows": [asdict(r) for r in rows]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
