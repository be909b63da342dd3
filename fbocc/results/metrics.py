"""Occ3D occupancy mIoU, defined exactly as FB-BEV's `Metric_mIoU` (mmdet3d/datasets/occ_metrics.py).

The definition, checked against that source:

- 18 classes: 0 "others" ... 16 "vegetation", 17 "free";
- only voxels inside the camera mask count (`use_image_mask=True` in FB-BEV's evaluation), and only
  ground-truth labels in [0, 18) (255 = unobserved is dropped);
- one 18 x 18 confusion matrix (rows ground truth, columns prediction) is accumulated over every frame
  of the sequence, then per-class IoU = TP / (TP + FP + FN) is computed once from the sum;
- mIoU is the nanmean over the 17 non-free classes: "free" stays in the matrix (predicting free where a
  car is counts against the car) but has no IoU of its own in the mean; a class that never occurs in
  either prediction or ground truth is NaN and left out of the mean.
- FB-BEV's optional distance filter (min_d=-1, max_d=100 m) covers the whole 80 m x 80 m grid, so it
  never removes a voxel and is not modelled here.

Plain numpy, so it runs wherever the outputs are: on the host after pulling them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

CLASS_NAMES = (
    "others", "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian",
    "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat", "sidewalk", "terrain",
    "manmade", "vegetation", "free",
)
NUM_CLASSES = len(CLASS_NAMES)
FREE_CLASS = NUM_CLASSES - 1


def confusion_with_misses(pred: Any, gt: Any, mask: Any | None = None,
                          num_classes: int = NUM_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """Confusion matrix [gt, pred] of one frame (voxels where `mask` is true and 0 <= gt < n), and per
    ground-truth class the voxels whose prediction is no class at all (a label >= n, e.g. a 19th head
    channel): those count against their ground-truth class and for no other class."""
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != gt.shape:
            raise ValueError(f"mask shape {mask.shape} differs from ground-truth shape {gt.shape}")
        pred = pred[mask]
        gt = gt[mask]
    gt = gt.reshape(-1).astype(np.int64)
    pred = pred.reshape(-1).astype(np.int64)
    keep = (gt >= 0) & (gt < num_classes)
    gt, pred = gt[keep], pred[keep]
    pred = np.where((pred >= 0) & (pred < num_classes), pred, num_classes)  # column n: "no class"
    width = num_classes + 1
    counts = np.bincount(width * gt + pred, minlength=num_classes * width).reshape(num_classes, width)
    return counts[:, :num_classes].astype(np.int64), counts[:, num_classes].astype(np.int64)


def confusion(pred: Any, gt: Any, mask: Any | None = None, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Confusion matrix [gt, pred] of one frame, counting voxels where `mask` is true and 0 <= gt < n."""
    return confusion_with_misses(pred, gt, mask, num_classes)[0]


def per_class_iou(hist: np.ndarray, missed: np.ndarray | None = None) -> np.ndarray:
    """TP / (TP + FP + FN) per class; NaN where a class appears in neither prediction nor ground truth."""
    hist = np.asarray(hist, dtype=np.float64)
    tp = np.diag(hist)
    union = hist.sum(axis=1) + hist.sum(axis=0) - tp
    if missed is not None:
        union = union + np.asarray(missed, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return tp / union


@dataclass
class OccupancyMIoU:
    """Accumulates one confusion matrix over a sequence; `result()` gives FB-BEV's mIoU (in percent)."""

    num_classes: int = NUM_CLASSES
    hist: np.ndarray = field(default_factory=lambda: np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64))
    frames: int = 0
    missed: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES, dtype=np.int64))

    def __post_init__(self) -> None:
        if self.hist.shape != (self.num_classes, self.num_classes):
            self.hist = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
            self.missed = np.zeros(self.num_classes, dtype=np.int64)

    def add(self, pred: Any, gt: Any, mask_camera: Any | None = None) -> None:
        """Add one frame. `pred` is labels [X,Y,Z] or class scores [X,Y,Z,C] (argmax over the last axis)."""
        pred = np.asarray(pred)
        if pred.ndim == np.asarray(gt).ndim + 1:
            pred = pred.argmax(axis=-1)
        hist, missed = confusion_with_misses(pred, gt, mask_camera, self.num_classes)
        self.hist += hist
        self.missed += missed
        self.frames += 1

    def result(self) -> MIoUResult:
        iou = per_class_iou(self.hist, self.missed)
        scored = iou[: self.num_classes - 1]  # "free" is not a scored class
        with np.errstate(invalid="ignore"):
            miou = float(np.nanmean(scored)) * 100.0 if np.isfinite(scored).any() else float("nan")
        names = CLASS_NAMES if self.num_classes == NUM_CLASSES else tuple(str(i) for i in range(self.num_classes))
        per_class = {names[i]: (None if np.isnan(v) else round(float(v) * 100.0, 4)) for i, v in enumerate(scored)}
        return MIoUResult(miou=miou, per_class=per_class, frames=self.frames,
                          voxels=int(self.hist.sum() + self.missed.sum()))


@dataclass(frozen=True)
class MIoUResult:
    """mIoU in percent over the non-free classes, per-class IoU (percent, None = class absent)."""

    miou: float
    per_class: dict[str, float | None]
    frames: int
    voxels: int

    def as_dict(self) -> dict[str, Any]:
        return {"miou": None if np.isnan(self.miou) else round(self.miou, 4), "per_class": self.per_class,
                "frames": self.frames, "voxels": self.voxels}


def sequence_miou(preds: list[Any], gts: list[Any], masks: list[Any] | None = None) -> MIoUResult:
    """mIoU of a whole sequence (confusion accumulated over frames, as FB-BEV does)."""
    metric = OccupancyMIoU()
    for i, (pred, gt) in enumerate(zip(preds, gts, strict=True)):
        metric.add(pred, gt, None if masks is None else masks[i])
    return metric.result()
