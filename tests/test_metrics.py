"""Occ3D mIoU as FB-BEV's Metric_mIoU defines it: camera mask, 18 classes, "free" out of the mean,
confusion accumulated over the sequence, nanmean over classes that occur."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fbocc.results.metrics import CLASS_NAMES, FREE_CLASS, OccupancyMIoU, confusion, per_class_iou, sequence_miou


def test_class_set_is_occ3d_with_free_last() -> None:
    assert len(CLASS_NAMES) == 18
    assert CLASS_NAMES[0] == "others" and CLASS_NAMES[4] == "car" and CLASS_NAMES[16] == "vegetation"
    assert CLASS_NAMES[FREE_CLASS] == "free" and FREE_CLASS == 17


def test_confusion_rows_are_ground_truth_columns_prediction() -> None:
    gt = np.array([4, 4, 4, 1, 17])
    pred = np.array([4, 1, 17, 1, 17])
    hist = confusion(pred, gt)
    assert hist[4, 4] == 1 and hist[4, 1] == 1 and hist[4, 17] == 1
    assert hist[1, 1] == 1 and hist[17, 17] == 1
    assert hist.sum() == 5


def test_hand_built_case_per_class_iou_and_mean() -> None:
    # car: TP 2, FN 1 (predicted free), FP 1 (a barrier voxel called car) -> 2/4
    # barrier: TP 1, FN 1 -> 1/2; free: present but not scored; every other class absent -> NaN
    gt = np.array([4, 4, 4, 1, 1, 17, 17])
    pred = np.array([4, 4, 17, 1, 4, 17, 17])
    result = sequence_miou([pred], [gt])
    assert result.per_class["car"] == pytest.approx(50.0)
    assert result.per_class["barrier"] == pytest.approx(50.0)
    assert result.per_class["bus"] is None
    assert "free" not in result.per_class
    assert result.miou == pytest.approx(50.0)


def test_free_errors_count_against_the_occupied_class() -> None:
    gt = np.array([4, 4, 17, 17])
    assert sequence_miou([np.array([4, 4, 17, 17])], [gt]).miou == pytest.approx(100.0)
    # calling a car voxel free halves car's IoU; free's own IoU changes but is not in the mean
    assert sequence_miou([np.array([4, 17, 17, 17])], [gt]).miou == pytest.approx(50.0)


def test_camera_mask_and_unobserved_label_drop_voxels() -> None:
    gt = np.array([4, 4, 255, 1])
    pred = np.array([4, 1, 1, 1])
    mask = np.array([True, False, True, True])
    hist = confusion(pred, gt, mask)
    assert hist.sum() == 2  # masked-out voxel and the 255 voxel are gone
    result = sequence_miou([pred], [gt], [mask])
    assert result.per_class["car"] == pytest.approx(100.0)
    assert result.per_class["barrier"] == pytest.approx(100.0)


def test_sequence_accumulates_confusion_not_frame_means() -> None:
    # frame 1: car perfect on 1 voxel; frame 2: car 0/3. Per-frame mean of car IoU would be 0.5;
    # accumulated confusion gives 1/4.
    gts = [np.array([4]), np.array([4, 4, 4])]
    preds = [np.array([4]), np.array([0, 0, 0])]
    result = sequence_miou(preds, gts)
    assert result.per_class["car"] == pytest.approx(25.0)
    assert result.per_class["others"] == pytest.approx(0.0)
    assert result.miou == pytest.approx(12.5)
    assert result.frames == 2


def test_class_scores_are_argmaxed_over_last_axis() -> None:
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 18, size=(4, 4, 2))
    scores = rng.standard_normal((4, 4, 2, 18)).astype(np.float32)
    metric = OccupancyMIoU()
    metric.add(scores, gt)
    assert np.array_equal(metric.hist, confusion(scores.argmax(-1), gt))


def _set_based_miou(preds: list[np.ndarray], gts: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """FB-BEV's definition restated with sets: pool all masked, labelled voxels of the sequence, then
    IoU_c = |P_c & G_c| / |P_c | G_c| for c in 0..16, mean over classes with a non-empty union."""
    p = np.concatenate([pr[m & (g < 18)] for pr, g, m in zip(preds, gts, masks, strict=True)])
    g = np.concatenate([g[m & (g < 18)] for g, m in zip(gts, masks, strict=True)])
    ious = []
    for c in range(17):
        union = np.sum((p == c) | (g == c))
        if union:
            ious.append(np.sum((p == c) & (g == c)) / union)
    return 100.0 * float(np.mean(ious))


def test_matches_set_definition_on_random_occ3d_volumes() -> None:
    rng = np.random.default_rng(7)
    shape = (20, 20, 16)
    gts, preds, masks = [], [], []
    for _ in range(3):
        gt = rng.integers(0, 18, size=shape)
        gt[rng.random(shape) < 0.05] = 255
        gt[..., :3] = np.where(rng.random((20, 20, 3)) < 0.5, 17, gt[..., :3])
        pred = np.where(rng.random(shape) < 0.6, gt, rng.integers(0, 18, size=shape))
        pred[gt == 255] = 3
        gts.append(gt)
        preds.append(pred)
        masks.append(rng.random(shape) < 0.8)
    result = sequence_miou(preds, gts, masks)
    assert result.miou == pytest.approx(_set_based_miou(preds, gts, masks), rel=1e-12)


def test_nothing_scored_gives_nan_not_zero() -> None:
    result = sequence_miou([np.array([17, 17])], [np.array([17, 17])])
    assert math.isnan(result.miou)
    assert result.as_dict()["miou"] is None
    assert np.isnan(per_class_iou(np.zeros((18, 18)))).all()


def test_a_label_outside_the_class_set_counts_against_the_true_class_only() -> None:
    # FB-OCC's head has 19 channels: an argmax of 18 is no Occ3D class. It must neither crash nor leak
    # into another class's bin (a plain bincount would count it as the next row's class 0).
    gt = np.array([4, 4, 0])
    pred = np.array([4, 18, 0])
    result = sequence_miou([pred], [gt])
    assert result.per_class["car"] == pytest.approx(50.0)
    assert result.per_class["others"] == pytest.approx(100.0)
    assert confusion(pred, gt).sum() == 2 and result.voxels == 3


def test_shape_mismatch_is_reported() -> None:
    with pytest.raises(ValueError, match="shape"):
        confusion(np.zeros((2, 2)), np.zeros((2, 3)))
