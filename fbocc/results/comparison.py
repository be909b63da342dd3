"""A run's outputs against a reference, over a whole sequence: what `fbocc validate` and
`fbocc check-onnx --run` report.

The maths (statistics, tolerances, labels) is deploy.compare's, the same code the target runs; this
module reads the two directories (samples manifests), adds Occ3D mIoU (fbocc.results.metrics, FB-BEV's
definition) and shapes the result:

- max-abs error, relative error and cosine similarity per output tensor against the reference outputs
  `fbocc export` stored in the samples (or another run's outputs: fp16 against fp32);
- occupancy label agreement: the fraction of voxels whose argmax class equals the reference's;
- mIoU against ground-truth labels when the samples carry them (frame `ground_truth`: `semantics` +
  `mask_camera`), otherwise against the reference's own prediction, labelled `"miou_against":
  "pytorch"` so nobody mistakes it for dataset accuracy.

Tolerances: deploy.compare.TOLERANCES (documented there). Integer outputs must match exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deploy.compare import (
    TOLERANCES,
    TensorAgreement,
    Tolerance,
    fbbev_occ3d_labels,
    occupancy_labels,
    occupancy_output,
    reference_stats,
    tolerance_for,
)
from fbocc.errors import ValidationError
from fbocc.export.samples import load_manifest, read_tensor
from fbocc.results.metrics import NUM_CLASSES, OccupancyMIoU

__all__ = ["TOLERANCES", "Comparison", "TensorComparison", "Tolerance", "compare_runs", "fbbev_occ3d_labels",
           "occupancy_labels", "occupancy_output"]


@dataclass
class TensorComparison:
    """One output over the whole sequence."""

    name: str
    max_abs: float
    mean_abs: float
    rel_error: float
    cosine: float  # the lowest per-frame cosine similarity
    exact: bool  # integer outputs: every value identical
    within: bool
    history: bool = False
    compared_on: str = "host"  # "target": a big tensor compared there by deploy.run_sequence, not pulled

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "max_abs": self.max_abs, "mean_abs": self.mean_abs, "rel_error": self.rel_error,
                "cosine": self.cosine, "exact": self.exact, "within_tolerance": self.within,
                "history": self.history, "compared_on": self.compared_on}


@dataclass
class Comparison:
    """Outputs of one run (backend, precision) against a reference (PyTorch, or the fp32 run)."""

    precision: str
    against: str  # "pytorch" or "fp32"
    tensors: list[TensorComparison]
    frames: int
    occupancy_output: str | None = None
    label_agreement: float | None = None
    miou: float | None = None
    miou_reference: float | None = None  # PyTorch's own mIoU vs ground truth (when there is ground truth)
    miou_against: str | None = None  # "ground-truth" or "pytorch"
    per_class_iou: dict[str, float | None] = field(default_factory=dict)
    tolerance: Tolerance | None = None

    @property
    def passed(self) -> bool:
        ok = all(t.within for t in self.tensors)
        if self.tolerance is not None and self.label_agreement is not None:
            ok = ok and self.label_agreement >= self.tolerance.label_agreement_min
        return ok

    def as_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "against": self.against, "frames": self.frames,
                "passed": self.passed, "tensors": [t.as_dict() for t in self.tensors],
                "occupancy_output": self.occupancy_output, "label_agreement": self.label_agreement,
                "miou": self.miou, "miou_reference": self.miou_reference, "miou_against": self.miou_against,
                "per_class_iou": self.per_class_iou,
                "tolerance": None if self.tolerance is None else self.tolerance.as_dict()}


def _frame_arrays(root: Path, frame: dict[str, Any], group: str) -> dict[str, np.ndarray]:
    return {name: read_tensor(root, entry) for name, entry in frame.get(group, {}).items()}


def compare_runs(reference_dir: Path, run_dir: Path, precision: str, *, against: str = "pytorch",
                 reference_group: str = "outputs") -> Comparison:
    """Compare the outputs in `run_dir` (deploy.run_sequence's manifest) with `reference_dir`'s
    `reference_group`: the export's samples directory, or another run's output directory (fp16 vs fp32).

    An output the run left on the target (listed in the frame's `remote_only`) is judged by the
    `reference_stats` the target computed for it.
    """
    ref_manifest = load_manifest(reference_dir)
    run_manifest = load_manifest(run_dir)
    ref_frames = {f["id"]: f for f in ref_manifest["frames"]}
    run_frames = run_manifest["frames"]
    missing = [f["id"] for f in run_frames if f["id"] not in ref_frames]
    if missing or not run_frames:
        raise ValidationError(f"{run_dir}: frames {missing or '(none)'} have no reference in {reference_dir}",
                              fix="validate against the samples this run was made from")
    history_outputs = {p["output"] for p in ref_manifest.get("history", [])}
    tolerance = tolerance_for(precision)
    occ_name = occupancy_output(ref_manifest)
    layout = ref_manifest.get("model", {}).get("occupancy_layout", "BKXYZ")
    agreements: dict[str, TensorAgreement] = {}
    on_target: set[str] = set()
    agree = total = 0
    metric = OccupancyMIoU()
    ref_metric = OccupancyMIoU()
    has_gt = all("ground_truth" in ref_frames[f["id"]] for f in run_frames)
    to_gt = ref_manifest.get("dataset", {}).get("prediction_to_ground_truth")
    for frame in run_frames:
        ref_occ = got_occ = None
        for name, ref_entry in ref_frames[frame["id"]].get(reference_group, {}).items():
            if name in frame.get("outputs", {}):
                have = read_tensor(run_dir, frame["outputs"][name])
                want = read_tensor(reference_dir, ref_entry)
                if have.shape != want.shape:
                    raise ValidationError(f"output {name!r} of frame {frame['id']} has shape {list(have.shape)}, "
                                          f"the reference {list(want.shape)}", fix="re-export and push the samples")
                frame_stats = reference_stats(have, want)
                if name == occ_name:
                    ref_occ, got_occ = want, have
            elif name in frame.get("remote_only", []) and name in frame.get("reference_stats", {}):
                frame_stats = frame["reference_stats"][name]  # compared on the target, not pulled back
                on_target.add(name)
            else:
                raise ValidationError(f"{run_dir}: frame {frame['id']} lacks output {name!r}",
                                      fix="the run and the reference come from different models: re-export and push")
            agreements.setdefault(name, TensorAgreement(name)).add(frame_stats)
        if ref_occ is None or got_occ is None:
            continue
        want_labels = occupancy_labels(ref_occ, layout)
        have_labels = occupancy_labels(got_occ, layout)
        agree += int((want_labels == have_labels).sum())
        total += want_labels.size
        # FB-OCC's head has a void channel 0 and BEVDet's grid orientation: score in Occ3D's classes
        # (as FB-BEV's post_process does) whether the other side is ground truth or PyTorch.
        have_cls, want_cls = have_labels, want_labels
        if got_occ.ndim == 5 and got_occ.shape[1] == NUM_CLASSES + 1 and (to_gt == "fbbev-occ3d" or not has_gt):
            have_cls, want_cls = fbbev_occ3d_labels(got_occ), fbbev_occ3d_labels(ref_occ)
        if not has_gt:
            metric.add(have_cls, want_cls)
            continue
        gt = _frame_arrays(reference_dir, ref_frames[frame["id"]], "ground_truth")
        mask = gt.get("mask_camera")
        mask = None if mask is None else mask.astype(bool)
        if have_cls.shape != gt["semantics"].shape:
            raise ValidationError(f"frame {frame['id']}: prediction labels {list(have_cls.shape)} and ground "
                                  f"truth {list(gt['semantics'].shape)} differ in shape",
                                  fix="re-export the samples with this fbocc version")
        metric.add(have_cls, gt["semantics"], mask)
        ref_metric.add(want_cls, gt["semantics"], mask)
    tensors = [TensorComparison(name, a.max_abs, a.mean_abs, a.rel_error, a.cosine, a.exact, a.within(tolerance),
                                history=name in history_outputs, compared_on="target" if name in on_target else "host")
               for name, a in agreements.items()]
    result = Comparison(precision=precision, against=against, tensors=tensors, frames=len(run_frames),
                        occupancy_output=occ_name if total else None, tolerance=tolerance)
    if total:
        result.label_agreement = agree / total
        miou = metric.result()
        result.miou = None if np.isnan(miou.miou) else round(miou.miou, 4)
        result.per_class_iou = miou.per_class
        result.miou_against = "ground-truth" if has_gt else against
        if has_gt:
            ref_miou = ref_metric.result()
            result.miou_reference = None if np.isnan(ref_miou.miou) else round(ref_miou.miou, 4)
    return result
