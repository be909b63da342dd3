"""`make bench-kernels`: MSDA's data-movement floors (benchmarks/msda_floors.cu) and back-to-back timings.

The floors bound what the plugin kernel could reach only if they do the work they claim, so on a GPU their outputs
are checked against the same computation in PyTorch (the gathered rows recomputed from the same hash), and the
input checks are exercised. The table logic needs no GPU.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("torch")

import torch

from benchmarks import kernels as bench
from benchmarks import msda_floors

SITE = "BEV self-attention"
MASK = 0xFFFFFFFF


def _row(burst: float | None, trt_burst: float | None, floors: bench.Floors | None) -> bench.Row:
    tensorrt = bench.Today(0.0222, 9e-6, burst_ms=trt_burst)
    bar, met = bench.msda_bar(SITE, 0.0135, None, tensorrt)
    return bench.Row("MultiScaleDeformableAttn", f"{SITE}: value [1,10000,8,10]", "float32", 0.0135, 0.36, 1 << 20,
                     758.0, 0.25, 26.7, None, bar, met, None, tensorrt, burst, bench.msda_bar_ms(SITE, tensorrt),
                     floors)


def test_the_bar_as_a_time_follows_tensorrts_time_else_the_issues_figure() -> None:
    assert bench.msda_bar_ms(SITE, bench.Today(0.0222)) == pytest.approx(0.0111)
    assert bench.msda_bar_ms(SITE, bench.Today(None, note="x")) == pytest.approx(0.0135)
    assert bench.msda_bar_ms(SITE, None) == pytest.approx(0.0135)
    assert bench.msda_bar_ms("depth sampling", bench.Today(0.08)) is None


def test_the_tables_show_back_to_back_times_and_the_floors() -> None:
    floors = bench.Floors(gather_ms=0.0103, stream_ms=0.0075, empty_ms=0.0039)
    text = bench.render([_row(0.0122, 0.0202, floors)], "H100", 3000.0, "make bench-kernels", 50 << 20,
                        tensorrt="`TensorRT/plugin/multiscaleDeformableAttnPlugin`")
    assert f"back-to-back columns time {bench.BURST} launches between one pair of events" in text
    assert "| float32 | 0.0222 | 0.0135 | 1.64x | 9.00e-06 | 0.0202 | 0.0122 | 1.66x |" in text
    assert "MSDA's data-movement floors, same run, same inputs, same timing" in text
    assert ("| BEV self-attention: value [1,10000,8,10] | float32 | 0.0135 | 0.0111 | 0.0103 | 0.0075 | 0.0039 | no |"
            in text)
    below = bench.Floors(gather_ms=0.0120, stream_ms=0.0075, empty_ms=0.0039)
    assert "| 0.0111 | 0.0120 | 0.0075 | 0.0039 | yes |" in bench.render(
        [_row(None, None, below)], "H100", 3000.0, "make bench-kernels", 50 << 20)


def test_rows_without_floors_add_no_floor_table() -> None:
    text = bench.render([_row(None, None, None)], "H100", 3000.0, "make bench-kernels", 50 << 20)
    assert "data-movement floors" not in text


def test_the_floor_kernels_compile_for_the_h100_and_orin(nvcc: Path, tmp_path: Path) -> None:
    source = Path(msda_floors.__file__).with_name("msda_floors.cu")
    for arch in ("90", "87"):
        done = subprocess.run([str(nvcc), "-std=c++17", "-O3", f"-arch=sm_{arch}", "-c", str(source), "-o",
                               str(tmp_path / f"floors_{arch}.o")], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert (tmp_path / f"floors_{arch}.o").stat().st_size > 0


# --- on a GPU: the floors do the work they claim --------------------------------------------------------------

def _mix(x: torch.Tensor) -> torch.Tensor:
    """The floors' 32-bit hash on int64 tensors (products split so that nothing overflows)."""
    def mul(a: torch.Tensor, c: int) -> torch.Tensor:
        return (a * (c & 0xFFFF) + ((a * (c >> 16)) << 16)) & MASK

    x = x & MASK
    x = x ^ (x >> 16)
    x = mul(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = mul(x, 0x846CA68B)
    return x ^ (x >> 16)


def _expected_gather(value: torch.Tensor, queries: int, points: int, h: int, w: int, local: bool,
                     seed: int) -> torch.Tensor:
    n, _, heads, channels = value.shape
    dev = value.device
    task = torch.arange(n * queries * heads, device=dev)
    q = (task // heads) % queries
    m = task % heads
    b = task // heads // queries
    p = torch.arange(points, device=dev)
    r = _mix(task[:, None] * points + p[None, :] + seed)
    if local:
        cols = max(1, math.ceil(math.sqrt(queries * w / h)))
        rows = max(1, -(-queries // cols))
        # the reference pixel floor((q % cols + 0.5) / cols * w - 0.5), likewise y, in exact integers
        rx = torch.div((2 * (q % cols) + 1) * w - cols, 2 * cols, rounding_mode="floor")
        ry = torch.div((2 * (q // cols) + 1) * h - rows, 2 * rows, rounding_mode="floor")
        px = rx[:, None] + (r & 3) + ((r >> 2) & 3) - 3
        py = ry[:, None] + ((r >> 4) & 3) + ((r >> 6) & 3) - 3
    else:
        px = ((r & 0xFFFF) * w) >> 16
        py = ((r >> 16) * h) >> 16
    px = px.clamp(0, max(w - 2, 0))
    py = py.clamp(0, max(h - 2, 0))
    row = py * w + px
    dx, dy = (1 if w > 1 else 0), (w if h > 1 else 0)
    corners = torch.stack([row, row + dx, row + dy, row + dy + dx], -1).reshape(len(task), -1)  # [T, 4P]
    v = value.float()
    gathered = v[b[:, None], corners, m[:, None]]  # [T, 4P, D]
    return gathered.sum(1).reshape(n, queries, heads * channels)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("locality", ["local", "uniform"])
def test_the_gather_floor_sums_the_corner_rows_it_claims(dtype: torch.dtype, locality: str) -> None:
    from benchmarks import workloads as wl

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    # run-time sizes, a level one pixel high, and FB-OCC's two sites (sizes compiled in)
    for case in (wl.MsdaCase(n=2, levels=((9, 13),), heads=3, channels=6, queries=50, points=3),
                 wl.MsdaCase(n=1, levels=((1, 5),), heads=2, channels=2, queries=4, points=1),
                 wl.FBOCC_MSDA[SITE], wl.FBOCC_MSDA["image cross-attention"]):
        value, shapes, _, loc, _ = wl.msda_inputs(case, dtype, "cuda", locality=locality)
        out = torch.full((case.n, case.queries, case.heads * case.channels), float("nan"), dtype=dtype,
                         device="cuda")
        msda_floors.gather_floor(value, msda_floors.level_of(shapes), loc, locality, out, seed=7)
        h, w = case.levels[0]
        expected = _expected_gather(value, case.queries, case.points, h, w, locality == "local", 7)
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(out.float(), expected, atol=tol, rtol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_stream_floor_reads_every_location_and_weight(dtype: torch.dtype) -> None:
    from benchmarks import workloads as wl

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    # run-time point count; FB-OCC's two sites (4 and 8 points: vector loads)
    for case in (wl.MsdaCase(n=2, levels=((9, 13),), heads=3, channels=6, queries=50, points=3),
                 wl.FBOCC_MSDA[SITE], wl.FBOCC_MSDA["image cross-attention"]):
        value, _, _, loc, weights = wl.msda_inputs(case, dtype, "cuda")
        out = torch.full((case.n, case.queries, case.heads * case.channels), float("nan"), dtype=dtype,
                         device="cuda")
        msda_floors.stream_floor(value, loc, weights, out)
        wt = weights.float().reshape(case.n, case.queries, case.heads, case.points, 1)
        xy = (loc.float().reshape(case.n, case.queries, case.heads, case.points, 2) * wt).sum(3)  # [N,Lq,M,2]
        expected = xy.repeat(1, 1, 1, case.channels // 2).reshape(out.shape)  # each pair: (sum w x, sum w y)
        tol = 1e-5 if dtype == torch.float32 else 1e-2
        torch.testing.assert_close(out.float(), expected, atol=tol, rtol=tol)


@pytest.mark.gpu
def test_the_floors_refuse_what_they_do_not_model() -> None:
    from benchmarks import workloads as wl

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    two_levels = wl.MsdaCase(n=1, levels=((4, 4), (2, 2)), heads=1, channels=2, queries=3, points=1)
    value, shapes, _, loc, weights = wl.msda_inputs(two_levels, torch.float32, "cuda")
    out = torch.empty(1, 3, 2, device="cuda")
    with pytest.raises(ValueError, match=r"one level, got spatial_shapes \[2, 2\]"):
        msda_floors.level_of(shapes)
    odd = wl.MsdaCase(n=1, levels=((4, 4),), heads=1, channels=3, queries=3, points=1)
    value, shapes, _, loc, weights = wl.msda_inputs(odd, torch.float32, "cuda")
    with pytest.raises(ValueError, match="D must be even, got 3"):
        msda_floors.stream_floor(value, loc, weights, torch.empty(1, 3, 3, device="cuda"))
    # The binding's own checks, behind those: an error, not a crash.
    with pytest.raises(RuntimeError, match="D must be even"):
        msda_floors.extension().stream_floor(value, loc, weights, torch.empty(1, 3, 3, device="cuda"))
    with pytest.raises(ValueError, match="locality must be 'local' or 'uniform'"):
        msda_floors.gather_floor(value, (4, 4), loc, "sorted", out)
    even = wl.MsdaCase(n=1, levels=((4, 4),), heads=1, channels=2, queries=3, points=1)
    value, shapes, _, loc, weights = wl.msda_inputs(even, torch.float32, "cuda")
    with pytest.raises(ValueError, match=r"out must be torch.float32 with N \* Lq \* M \* D = 6 elements, got "
                       r"torch.float16 \[1, 3, 2\]"):
        msda_floors.stream_floor(value, loc, weights, torch.empty(1, 3, 2, device="cuda", dtype=torch.float16))
    with pytest.raises(ValueError, match=r"sampling_locations must be torch\.float32 like value, got torch\.float16"):
        msda_floors.stream_floor(value, loc.half(), weights, torch.empty(1, 3, 2, device="cuda"))
    with pytest.raises(ValueError, match="sampling_locations must be a contiguous CUDA tensor"):
        msda_floors.stream_floor(value, loc.cpu(), weights, torch.empty(1, 3, 2, device="cuda"))


@pytest.mark.gpu
def test_back_to_back_timing_is_per_launch() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    calls: list[int] = []

    def spin(i: int) -> None:
        calls.append(i)
        torch.cuda._sleep(200_000)

    one = bench.time_ms(spin, reps=5, warmup=0)
    per_launch = bench.time_ms(spin, reps=5, warmup=0, burst=4)
    assert calls[5:] == list(range(20)), "each launch gets its own index, so input sets keep rotating"
    assert per_launch == pytest.approx(one, rel=0.2)
