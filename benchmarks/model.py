"""FB-OCC forward latency in PyTorch on a CUDA device (`make bench-model`): the "PyTorch (original)" row.

One full network step (`forward_trt`: image backbone to occupancy logits, history in and out) on one
synthetic nuScenes-shaped frame, random weights (seeded; latency does not depend on the values). Variants:
fp32 and fp16 autocast, each with the custom ops run by the PyTorch references (`fbocc.ops.reference`)
and by our CUDA kernels (`fbocc.ops.cuda`, the plugin library's PyTorch binding). Timing: CUDA events
around each forward after warm-up, median and p90 over the iterations; host preprocessing is excluded
(it is an input of the TensorRT graph too).

    python benchmarks/model.py --output docs/benchmarks/model.md [--json results.json] [--iters 30]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fbocc.model import trt_ops
from fbocc.model.config import ModelConfig
from fbocc.model.network import INPUT_NAMES, build_model
from fbocc.model.preprocess import SequencePreprocessor
from fbocc.model.synthetic import synthetic_sequence


def _time(fn: Any, warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="Markdown report to write.")
    parser.add_argument("--json", type=Path, help="Raw results as JSON.")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench-model: no CUDA device", file=sys.stderr)
        return 3
    dev = torch.device("cuda")
    cfg = ModelConfig()
    model = build_model(cfg, seed=args.seed).to(dev)
    pre = SequencePreprocessor(cfg)
    frame = synthetic_sequence(cfg, 1, seed=args.seed)[0]
    arrays = pre.inputs(frame)
    arrays.update(pre.initial_history(frame.sequence_id))
    inputs = [torch.from_numpy(arrays[n]).to(dev) for n in INPUT_NAMES]

    results: list[dict[str, Any]] = []
    outputs: dict[tuple[str, str], torch.Tensor] = {}
    for backend in ("reference", "cuda"):
        for precision in ("fp32", "fp16"):
            trt_ops.set_backend(backend)
            row: dict[str, Any] = {"backend": backend, "precision": precision}

            def step(precision: str = precision) -> torch.Tensor:
                with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16,
                                                           enabled=precision == "fp16"):
                    return model(*inputs)[0]

            try:
                t0 = time.monotonic()
                outputs[(backend, precision)] = step().float()
                row["first_call_s"] = round(time.monotonic() - t0, 2)
                times = _time(step, args.warmup, args.iters)
                row.update(median_ms=statistics.median(times), p90_ms=sorted(times)[int(0.9 * (len(times) - 1))],
                           min_ms=min(times), iters=len(times))
            except Exception as exc:  # a variant that cannot run is reported, not hidden
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            results.append(row)
            print(json.dumps(row), flush=True)
    ref32 = outputs.get(("reference", "fp32"))
    for row in results:
        out = outputs.get((row["backend"], row["precision"]))
        if ref32 is not None and out is not None:
            row["max_abs_diff_vs_reference_fp32"] = float((out - ref32).abs().max())
    env = {
        "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
        "python": platform.python_version(), "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32, "iters": args.iters, "warmup": args.warmup,
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "results": results}, indent=2))
    lines = [
        "# FB-OCC forward latency in PyTorch (the \"PyTorch (original)\" row)", "",
        f"Machine: {env['device']}, torch {env['torch']} (CUDA {env['cuda']}), Python {env['python']}; "
        f"cuDNN TF32 {'on' if env['cudnn_tf32'] else 'off'}, matmul TF32 {'on' if env['matmul_tf32'] else 'off'} "
        "(torch defaults).", "",
        "Workload: fbocc-r50-cbgs_depth_16f_16x4_20e, batch 1, 6 cameras at 256x704, one synthetic frame, random "
        f"weights (seed {args.seed}); one `forward_trt` step including history fusion; host preprocessing not "
        f"included. CUDA-event time per forward, {args.warmup} warm-up + {args.iters} timed iterations.", "",
        "Command: `python benchmarks/model.py --output docs/benchmarks/model.md` (`make bench-model`).", "",
        "| custom ops | precision | median ms | p90 ms | min ms | max abs diff vs reference fp32 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in results:
        label = "PyTorch references" if row["backend"] == "reference" else "fbocc CUDA kernels"
        prec = "fp32" if row["precision"] == "fp32" else "fp16 autocast"
        if "error" in row:
            lines.append(f"| {label} | {prec} | failed: {row['error']} | | | |")
            continue
        diff = row.get("max_abs_diff_vs_reference_fp32")
        lines.append(f"| {label} | {prec} | {row['median_ms']:.2f} | {row['p90_ms']:.2f} | {row['min_ms']:.2f} | "
                     + (f"{diff:.3g}" if diff is not None else "n/a") + " |")
    lines += ["", f"Peak GPU memory allocated: {env['peak_mem_gib']} GiB.", ""]
    text = "\n".join(lines)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
