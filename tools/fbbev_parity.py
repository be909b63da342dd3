"""fbocc's FB-OCC against NVlabs/FB-BEV's own code, full size: both weight sets, both history-age conventions,
N frames with history; prints (and with --markdown writes) the table committed in docs/parity.md.

Run in an environment that imports the FB-BEV tree (fbocc doctor --fbbev PATH says how to make one):

    FBOCC_UPSTREAM_SRC=/path/to/FB-BEV PYTHONPATH=. VENV/bin/python tools/fbbev_parity.py --frames 3 \
        --markdown docs/parity-table.md --json parity.json

Exit 0 when every compared tensor is within 1e-5 x max|ref| and every occupancy label agrees.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fbbev", type=Path, default=os.environ.get("FBOCC_UPSTREAM_SRC"),
                        help="FB-BEV tree (default $FBOCC_UPSTREAM_SRC)")
    parser.add_argument("--preset", default="fbocc-r50-16f")
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="weights seed (both sets) and frame seed")
    parser.add_argument("--weights", nargs="+", default=["upstream-init", "random"])
    parser.add_argument("--history-age", nargs="+", default=["deployment", "training"])
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--summarize", type=Path, nargs="+", help="only print the compact table of these --json files")
    args = parser.parse_args(argv)
    if args.summarize:
        print(summary([json.loads(p.read_text()) for p in args.summarize]))
        return 0
    if args.fbbev is None:
        parser.error("give the FB-BEV tree: --fbbev PATH or FBOCC_UPSTREAM_SRC")

    import torch

    from fbocc.export import fbbev_model, parity_run
    from fbocc.export.fbbev import check_tree, tree_provenance
    from fbocc.export.parity import markdown_table
    from fbocc.model.config import PRESETS

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    cfg = PRESETS[args.preset]
    tree = check_tree(args.fbbev)
    config = fbbev_model.load_config(tree, cfg=cfg)
    started = time.monotonic()
    cases = []
    for weights in args.weights:
        upstream, state = parity_run.weights_for(tree, config, cfg, weights, args.seed)
        for age in args.history_age:
            case = parity_run.run_case(tree, config, cfg, upstream, state, weights=weights, history_age=age,
                                       frames=args.frames, frame_seed=args.seed, keep_records=False,
                                       progress=lambda m: print(m, file=sys.stderr, flush=True))
            cases.append(case)
    rows, record = [], []
    for case in cases:
        for f in case.frames:
            for d in f.diffs:
                rows.append([case.weights, case.history_age, str(f.frame), *d.row()])
            rows.append([case.weights, case.history_age, str(f.frame), "occupancy labels (argmax)",
                         f"{100 * f.labels_agree:.4f} % agree", "", "pass" if f.labels_agree == 1.0 else "FAIL",
                         "; ".join(f.problems)])
            record.append({"weights": case.weights, "history_age": case.history_age, "frame": f.frame,
                           "passed": f.passed, "labels_agree": f.labels_agree, "problems": f.problems,
                           "diffs": [{"name": d.name, "max_abs_diff": d.max_abs_diff, "max_abs_ref": d.max_abs_ref,
                                      "passed": d.passed, "note": d.note} for d in f.diffs],
                           "seconds": case.seconds[f.frame]})
    table = markdown_table(rows, ["weights", "history age", "frame", "tensor", "max abs diff", "max abs ref",
                                  "bar 1e-5 x ref", "note"])
    passed = all(c.passed for c in cases)
    provenance = {"fbbev": tree_provenance(tree), "torch": torch.__version__, "python": platform.python_version(),
                  "preset": args.preset, "frames": args.frames, "seed": args.seed,
                  "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                  "seconds": round(time.monotonic() - started, 1), "passed": passed}
    print(table)
    print(json.dumps(provenance, indent=1))
    if args.markdown:
        args.markdown.write_text(table + "\n")
    if args.json:
        args.json.write_text(json.dumps({"provenance": provenance, "frames": record}, indent=1))
    return 0 if passed else 1


COLUMNS = ("stage image_features", "stage context", "stage depth", "stage bev_pool", "stage backward_projection",
           "stage fused_bev", "stage voxel_features.0", "stage voxel_features.1", "stage voxel_features.2",
           "output pred_occupancy", "output output_history_bev", "output output_history_sweep_time")


def summary(docs: list[dict]) -> str:
    """One row per weight set x history age x frame: max abs diff of every stage and output (the bar is
    1e-5 x max|ref| of each), labels, and the worst prepared input."""
    from fbocc.export.parity import markdown_table

    rows = []
    for doc in docs:
        for f in doc["frames"]:
            by = {d["name"]: d for d in f["diffs"]}
            prep = [d for d in f["diffs"] if d["name"].startswith("input ")]
            worst_prep = max(prep, key=lambda d: d["max_abs_diff"] / d["max_abs_ref"] if d["max_abs_ref"] else 0)
            rows.append([f["weights"], f["history_age"], str(f["frame"] + 1),
                         *[f"{by[c]['max_abs_diff']:.3g}" if c in by else "-" for c in COLUMNS],
                         f"{100 * f['labels_agree']:.2f} %",
                         f"{worst_prep['max_abs_diff']:.3g} ({worst_prep['name'][6:]})",
                         "pass" if f["passed"] else "FAIL"])
    header = ["weights", "history age", "frame", *[c.split(" ", 1)[1] for c in COLUMNS], "labels",
              "worst prepared input", "bar"]
    return markdown_table(rows, header)


if __name__ == "__main__":
    sys.exit(main())
