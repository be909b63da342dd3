"""Upstream's own ONNX graph and .dat inputs, made by NVlabs/FB-BEV's deployment/pth2onnx.py itself (and, with
--frames N, its eval_orin/preprocess_samples.py), on a machine without nuScenes or CUDA; plus the reference
outputs of upstream's PyTorch forward on those inputs, so `fbocc check-onnx --run` can be held against them.

    PYTHONPATH=. VENV/bin/python tools/fbbev_onnx.py --fbbev FB-BEV --out OUT [--checkpoint PTH | --seed N]

What is shimmed, and nothing else: the data loader (no dataset here: one synthetic nuScenes-shaped frame from
fbocc.model.synthetic, in the layout FB-BEV's test pipeline yields: img_inputs + img_metas); torch.onnx.export
gets dynamo=False (torch >= 2.9 defaults to the dynamo exporter, which ignores autograd `symbolic`s); the
kernel call inside `_BEVPoolV2.forward` (`bev_pool_v2_gpu`, itself an autograd Function) runs as a plain
function, since torch 2.13's tracer fails on nested autograd Functions (`RuntimeError: unordered_map::at`);
`--cuda False` (no GPU); the CPU stand-ins of fbocc.export.fbbev. pth2onnx.py writes OUT/onnx/<config>.onnx and
OUT/trt_inputs/<input>.dat (+ .npy of three); this tool adds OUT/trt_inputs/<output>.dat (upstream PyTorch).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class _Meta:
    """mmcv's DataContainer as FB-BEV's scripts read it: `.data[0][0]` is the frame's img_metas dict."""

    def __init__(self, meta: dict[str, Any]):
        self.data = [[meta]]


def synthetic_loader(cfg: Any, frames: int, seed: int) -> list[dict[str, Any]]:
    """FB-BEV test-pipeline batches (batch 1) of fbocc's synthetic frames."""
    from fbocc.model.synthetic import synthetic_sequence

    batches = []
    for frame in synthetic_sequence(cfg, frames, seed=seed):
        img_inputs = [frame.imgs[None], *frame.cam_params()]
        meta = {"sequence_group_idx": frame.sequence_id, "start_of_sequence": frame.start_of_sequence,
                "curr_to_prev_ego_rt": frame.curr_to_prev_ego_rt}
        batches.append({"img_inputs": [img_inputs], "img_metas": [_Meta(meta)]})
    return batches


def _load_script(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"fbbev_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fbbev", type=Path, default=os.environ.get("FBOCC_UPSTREAM_SRC"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--seed", type=int, default=0, help="fbocc's seeded random weights when no checkpoint")
    parser.add_argument("--frames", type=int, default=0,
                        help="also run eval_orin/preprocess_samples.py over N frames into OUT/samples_trt/")
    args = parser.parse_args(argv)
    if args.fbbev is None:
        parser.error("give the FB-BEV tree: --fbbev PATH or FBOCC_UPSTREAM_SRC")

    import numpy as np
    import torch

    from fbocc.export.fbbev import TRT_CONFIG, activate, bev_pool_v2_plain, check_tree, cpu_as_cuda
    from fbocc.model.config import PRESETS
    from fbocc.model.network import OUTPUT_NAMES, build_model

    tree = check_tree(args.fbbev)
    activate(tree)
    cfg = PRESETS["fbocc-r50-16f"]
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = out / f"fbocc-random-seed{args.seed}.pth"
        torch.save({"state_dict": build_model(cfg, seed=args.seed).state_dict()}, checkpoint)
    data_dir = out / "trt_inputs"
    recorded: list[Any] = []
    real_export = torch.onnx.export

    def export(model: Any, args: Any, f: Any, **kwargs: Any) -> Any:
        call = args if isinstance(args, tuple) else (args,)  # as the tracer calls it: a list is one argument
        with torch.no_grad():  # upstream's PyTorch outputs on the very inputs being traced
            recorded[:] = [o.detach().clone() for o in model(*call)]
        kwargs.setdefault("dynamo", False)
        return real_export(model, args, f, **kwargs)

    pool_module: Any = importlib.import_module("mmdet3d.models.fbbev.custom_ops.bev_pool_v2")
    pool_module.bev_pool_v2_gpu = bev_pool_v2_plain  # a nested autograd Function breaks torch 2.13's tracer
    pth2onnx = _load_script(tree.root / "deployment" / "pth2onnx.py")
    batches = synthetic_loader(cfg, 1, args.seed)
    pth2onnx.build_dataset = lambda *_a, **_k: batches
    pth2onnx.build_dataloader = lambda dataset, **_k: dataset
    argv_saved = sys.argv
    sys.argv = ["pth2onnx.py", str(tree.root / TRT_CONFIG), "--checkpoint", str(checkpoint), "--data_dir",
                str(data_dir), "--onnx_path", str(out / "onnx"), "--cuda", ""]
    torch.onnx.export = export  # type: ignore[assignment]
    try:
        with cpu_as_cuda():
            pth2onnx.main()
    finally:
        torch.onnx.export = real_export
        sys.argv = argv_saved
    for name, value in zip(OUTPUT_NAMES, recorded, strict=True):
        np.ascontiguousarray(value.numpy()).tofile(data_dir / f"{name}.dat")
        if name == "pred_occupancy":  # its shape, as FB-BEV keeps the shapes of ranks_bev & co (.npy)
            np.save(data_dir / f"{name}.npy", value.numpy())
    print(f"references: {', '.join(OUTPUT_NAMES)} -> {data_dir}")

    if args.frames:
        script = _load_script(tree.root / "deployment" / "eval_orin" / "preprocess_samples.py")
        frames = synthetic_loader(cfg, args.frames, args.seed)
        script.build_dataset = lambda *_a, **_k: frames
        script.build_dataloader = lambda dataset, **_k: dataset
        sys.argv = ["preprocess_samples.py", str(tree.root / TRT_CONFIG), "--checkpoint", str(checkpoint),
                    "--save_dir", str(out / "samples_trt")]
        try:
            with cpu_as_cuda():
                script.main()
        finally:
            sys.argv = argv_saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
