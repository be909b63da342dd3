"""How far FB-BEV's TensorRT history convention (every age 0) moves FB-OCC's output from the training convention
(+1 per frame, reset at a sequence start), on fbocc's model alone: `FBOCC(history_age="deployment")` is
bit-identical to FB-BEV's `forward_trt` (docs/parity.md), so this is "upstream's engine vs fbocc".

    PYTHONPATH=. .venv/bin/python tools/history_age_effect.py --frames 3 [--checkpoint PTH | --seed N]

Synthetic frames: the size of the difference, not its effect on mIoU (that needs a checkpoint and nuScenes:
`fbocc export --dataroot ...` then `fbocc validate`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--preset", default="fbocc-r50-16f")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from fbocc.model.checkpoint import load_checkpoint
    from fbocc.model.config import PRESETS
    from fbocc.model.network import HISTORY_PAIRS, INPUT_NAMES, OUTPUT_NAMES, build_model
    from fbocc.model.preprocess import SequencePreprocessor
    from fbocc.model.synthetic import synthetic_sequence

    cfg = PRESETS[args.preset]
    model = build_model(cfg, seed=None if args.checkpoint else args.seed)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint)
    frames = synthetic_sequence(cfg, args.frames, seed=args.seed)
    pre = SequencePreprocessor(cfg)
    inputs = [pre.inputs(f) for f in frames]
    preds: dict[str, list[np.ndarray]] = {}
    for age in ("training", "deployment"):
        model.history_age = age
        history = SequencePreprocessor(cfg).initial_history(frames[0].sequence_id)
        preds[age] = []
        for i, arrays in enumerate(inputs):
            feed = dict(arrays, **history)
            with torch.no_grad():
                out = model(*[torch.from_numpy(np.ascontiguousarray(feed[n])) for n in INPUT_NAMES])
            named = dict(zip(OUTPUT_NAMES, (o.numpy() for o in out), strict=True))
            history = {a: named[b] for a, b in HISTORY_PAIRS}
            preds[age].append(named["pred_occupancy"])
            print(f"{age} frame {i} done", file=sys.stderr, flush=True)
    rows = []
    for i in range(args.frames):
        a, b = preds["training"][i].astype(np.float64), preds["deployment"][i].astype(np.float64)
        cos = float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))
        rows.append({"frame": i, "max_abs_diff": float(np.abs(a - b).max()), "max_abs_ref": float(np.abs(a).max()),
                     "cosine": cos, "labels_agree": float((a.argmax(1) == b.argmax(1)).mean())})
    print(json.dumps({"weights": str(args.checkpoint) if args.checkpoint else f"random seed {args.seed}",
                      "frames": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
