"""Writes the committed goldens of tests/test_fbbev_goldens.py: NVlabs/FB-BEV's own FB-OCC `_trt` model, shrunk
through config overrides, run on 3 synthetic frames with history, under both history-age conventions; every
prepared input, stage and output saved with its provenance. No FB-BEV code is committed, only its results.

    PYTHONPATH=. FBOCC_UPSTREAM_SRC=/path/to/FB-BEV VENV/bin/python tools/fbbev_goldens.py \
        --out tests/data/fbbev_goldens

The shrunk network (SMALL): FB-BEV's `_trt` config with the overrides of
`fbocc.export.fbbev_model.config_overrides(SMALL)` (6 cameras of 32 x 96, 8 depth bins, a 10 x 10 x 2 BEV of
8 m x 3.2 m cells, 2 history frames, 32/8-16-32/16 channels instead of 256/64-128-256/256); 80 BEV channels,
ResNet-50 and the attention heads stay as upstream hard-codes them. fbocc builds the same network from
`ModelConfig(**SMALL_FIELDS)`. Weights: fbocc's seeded re-randomisation of every parameter (upstream's own
init zeroes the attention offsets and weights; its init cannot be replayed without its code).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SMALL_FIELDS: dict[str, Any] = {
    "name": "fbocc-parity-small", "input_size": [32, 96], "grid_x": [-40.0, 40.0, 8.0],
    "grid_y": [-40.0, 40.0, 8.0], "grid_z": [-1.0, 5.4, 3.2], "depth_bound": [2.0, 42.0, 5.0], "bev_h": 10,
    "bev_w": 10, "bev_z": 2, "img_channels": 32, "depth_mid_channels": 32, "ffn_dim": 64, "history_cat_num": 2,
    "voxel_channels": [8, 16, 32], "voxel_out_channels": 16, "occ_size": [20, 20, 4],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fbbev", type=Path, default=os.environ.get("FBOCC_UPSTREAM_SRC"))
    parser.add_argument("--out", type=Path, default=Path("tests/data/fbbev_goldens"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--dump-config", type=Path, help="only write FB-BEV's config of the shrunk network (.py)")
    args = parser.parse_args(argv)
    if args.fbbev is None:
        parser.error("give the FB-BEV tree: --fbbev PATH or FBOCC_UPSTREAM_SRC")

    import numpy as np
    import torch

    from fbocc.export import fbbev_model, parity_run
    from fbocc.export.fbbev import check_tree, tree_provenance
    from fbocc.export.parity import state_digest
    from fbocc.model.config import ModelConfig

    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in SMALL_FIELDS.items()}
    cfg = ModelConfig(**fields)
    tree = check_tree(args.fbbev)
    config = fbbev_model.load_config(tree, cfg=cfg)
    if args.dump_config:
        config.dump(str(args.dump_config))
        return 0
    upstream, state = parity_run.weights_for(tree, config, cfg, "random", args.seed)
    per_age: dict[str, dict[str, np.ndarray]] = {}
    summary = []
    for age in ("deployment", "training"):
        case = parity_run.run_case(tree, config, cfg, upstream, state, weights="random", history_age=age,
                                   frames=args.frames, frame_seed=args.seed,
                                   progress=lambda m: print(m, file=sys.stderr, flush=True))
        got = per_age.setdefault(age, {})
        for i, rec in enumerate(case.upstream):
            for group, values in (("input", rec.inputs), ("stage", rec.stages), ("output", rec.outputs)):
                for name, value in values.items():
                    if group == "input" and name == "history_bev":
                        continue  # the previous frame's output_history_bev (zeros at frame 0)
                    got[f"{i}/{group}/{name}"] = np.ascontiguousarray(value)
        summary.append({"history_age": age, "passed_against_fbocc_now": case.passed,
                        "frames": [{"frame": f.frame, "passed": f.passed, "worst": max(
                            (d.max_abs_diff / d.max_abs_ref if d.max_abs_ref else 0.0) for d in f.diffs)}
                            for f in case.frames]})
    # What both conventions compute alike (inputs, every stage before the history fusion, frame 0) is stored
    # once under shared/; the test looks up AGE/KEY, then shared/KEY.
    arrays: dict[str, np.ndarray] = {}
    dep, tra = per_age["deployment"], per_age["training"]
    for key, value in dep.items():
        if value.dtype == tra[key].dtype and np.array_equal(value, tra[key]):
            arrays[f"shared/{key}"] = value
        else:
            arrays[f"deployment/{key}"] = value
            arrays[f"training/{key}"] = tra[key]
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "small.npz", **arrays)  # type: ignore[arg-type]
    provenance: dict[str, Any] = {
        "what": "NVlabs/FB-BEV FBOCCTRT.forward_trt outputs, stages and prepared inputs (CPU, fp32)",
        "model_config": {**asdict(cfg), "extra": {}},
        "config_overrides": {k: (list(v) if isinstance(v, tuple) else v)
                             for k, v in fbbev_model.config_overrides(cfg).items()},
        "weights": {"kind": "random", "seed": args.seed, "builder": "fbocc.model.network.build_model(cfg, seed=SEED)",
                    "state_sha256": state_digest(state)},
        "frames": {"count": args.frames, "builder": "fbocc.model.synthetic.synthetic_sequence(cfg, N, seed=SEED)",
                   "seed": args.seed},
        "history_ages": ["deployment", "training"],
        "upstream": tree_provenance(tree),
        "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "command": "PYTHONPATH=. FBOCC_UPSTREAM_SRC=FB-BEV python tools/fbbev_goldens.py "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
        "check_at_generation": summary,
    }
    provenance["upstream"]["root"] = "FB-BEV"  # no local paths in committed data
    (args.out / "provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")
    size = (args.out / "small.npz").stat().st_size
    print(f"wrote {args.out / 'small.npz'} ({size / 1e6:.2f} MB, {len(arrays)} arrays)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
