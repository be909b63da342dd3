"""How far a run's outputs are from their reference: the one implementation of the comparison maths.

Used by the target-side runner (deploy.run_sequence compares big tensors where they are), by
`fbocc validate` and by `fbocc check-onnx --run` (through fbocc.results.comparison). Pure numpy,
Python 3.8.

Per output tensor, over every frame: max-abs error, relative error (max-abs / max |reference|),
cosine similarity (the lowest per frame); integer outputs must match exactly. Occupancy scores are
also turned into class labels for the label agreement and the mIoU.

Tolerances (a check passes when every output is within them):

| precision | cosine >= | relative error <= | label agreement >= |
| --- | --- | --- | --- |
| fp32 | 0.9999 | 1e-3 | 0.999 |
| fp16 | 0.999 | 2e-2 | 0.99 |

The fp32 bounds hold an engine to PyTorch up to float re-association (different kernels, fused
convolutions); fp16 bounds follow the seed's result (mIoU 38.86 fp16 vs 38.90 fp32: ~0.1 % of labels).
"""

from typing import Any, Dict, Optional

import numpy as np


class Tolerance(object):
    """Bounds one precision must meet against its reference."""

    def __init__(self, cosine_min, rel_error_max, label_agreement_min):
        # type: (float, float, float) -> None
        self.cosine_min = cosine_min
        self.rel_error_max = rel_error_max
        self.label_agreement_min = label_agreement_min

    def as_dict(self):
        # type: () -> Dict[str, float]
        return {"cosine_min": self.cosine_min, "rel_error_max": self.rel_error_max,
                "label_agreement_min": self.label_agreement_min}

    def __eq__(self, other):
        # type: (object) -> bool
        return isinstance(other, Tolerance) and self.as_dict() == other.as_dict()

    def __repr__(self):
        # type: () -> str
        return "Tolerance({cosine_min}, {rel_error_max}, {label_agreement_min})".format(**self.as_dict())


TOLERANCES = {
    "fp32": Tolerance(cosine_min=0.9999, rel_error_max=1e-3, label_agreement_min=0.999),
    "fp16": Tolerance(cosine_min=0.999, rel_error_max=2e-2, label_agreement_min=0.99),
}  # type: Dict[str, Tolerance]


def tolerance_for(precision):
    # type: (str) -> Tolerance
    """The bounds of `precision` (anything below fp32 is held to fp16's)."""
    return TOLERANCES.get(precision, TOLERANCES["fp16"])


def reference_stats(have, want, chunk=1 << 22):
    # type: (Any, Any, int) -> Dict[str, Any]
    """How far one output is from its reference: sums that merge over frames, never a copy of the tensor.

    Computed chunk by chunk in float64, so a 400 MB history tensor is compared on the target without
    pulling it back. Raises ValueError when the sizes differ.
    """
    have = np.asarray(have).reshape(-1)
    want = np.asarray(want).reshape(-1)
    if have.shape != want.shape:
        raise ValueError("output has {} values, its reference {}".format(have.size, want.size))
    stats = {"max_abs": 0.0, "sum_abs": 0.0, "count": int(want.size), "ref_max": 0.0, "dot": 0.0,
             "norm_have": 0.0, "norm_want": 0.0, "exact": True,
             "integer": want.dtype.kind in "iub"}  # type: Dict[str, Any]
    for i in range(0, want.size, chunk):
        x = have[i:i + chunk].astype(np.float64)
        y = want[i:i + chunk].astype(np.float64)
        d = np.abs(x - y)
        if d.size:
            stats["max_abs"] = max(stats["max_abs"], float(d.max()))
            stats["ref_max"] = max(stats["ref_max"], float(np.abs(y).max()))
        stats["sum_abs"] += float(d.sum())
        stats["dot"] += float(np.dot(x, y))
        stats["norm_have"] += float(np.dot(x, x))
        stats["norm_want"] += float(np.dot(y, y))
        stats["exact"] = stats["exact"] and bool(np.array_equal(have[i:i + chunk], want[i:i + chunk]))
    return stats


def cosine_of(stats):
    # type: (Dict[str, Any]) -> float
    """Cosine similarity from `reference_stats` sums (1 when both are zero, 0 when one is)."""
    na, nb = float(stats["norm_have"]), float(stats["norm_want"])
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(stats["dot"]) / (float(np.sqrt(na)) * float(np.sqrt(nb)))


class TensorAgreement(object):
    """One output's agreement over a sequence: `add` each frame's `reference_stats`, then read the verdict."""

    def __init__(self, name):
        # type: (str) -> None
        self.name = name
        self.max_abs = 0.0
        self.sum_abs = 0.0
        self.count = 0
        self.ref_max = 0.0
        self.cosine = 1.0
        self.exact = True
        self.integer = False

    def add(self, stats):
        # type: (Dict[str, Any]) -> None
        self.max_abs = max(self.max_abs, float(stats["max_abs"]))
        self.sum_abs += float(stats["sum_abs"])
        self.count += int(stats["count"])
        self.ref_max = max(self.ref_max, float(stats["ref_max"]))
        self.cosine = min(self.cosine, cosine_of(stats))
        self.exact = self.exact and bool(stats["exact"])
        self.integer = self.integer or bool(stats["integer"])

    @property
    def mean_abs(self):
        # type: () -> float
        return self.sum_abs / max(1, self.count)

    @property
    def rel_error(self):
        # type: () -> float
        if self.ref_max > 0:
            return self.max_abs / self.ref_max
        return 0.0 if self.max_abs == 0 else float("inf")

    def within(self, tolerance):
        # type: (Tolerance) -> bool
        if self.integer:
            return self.exact
        return self.cosine >= tolerance.cosine_min and self.rel_error <= tolerance.rel_error_max


def occupancy_output(manifest):
    # type: (Dict[str, Any]) -> Optional[str]
    """The output holding class scores: the manifest's `model.occupancy_output`, else `pred_occupancy`."""
    named = manifest.get("model", {}).get("occupancy_output")
    if named:
        return str(named)
    names = [o["name"] for o in manifest.get("outputs", [])]
    return "pred_occupancy" if "pred_occupancy" in names else None


def occupancy_labels(scores, layout="BKXYZ"):
    # type: (Any, str) -> Any
    """Class labels [X,Y,Z] from scores [1,K,X,Y,Z] (layout BKXYZ, FB-OCC's head) or [1,X,Y,Z,K] (BXYZK)."""
    if scores.dtype.kind in "iu" and scores.ndim <= 4:
        return scores.reshape(scores.shape[-3:])
    if layout == "BXYZK":
        return scores[0].argmax(axis=-1)
    return scores[0].argmax(axis=0)


def fbbev_occ3d_labels(scores):
    # type: (Any) -> Any
    """Labels [200,200,16] in Occ3D's layout from FB-OCC's raw scores [1,19,200,200,16], as FB-BEV's
    `post_process` makes them: drop the void channel 0 (fix_void), argmax, and rotate the grid from
    BEVDet's layout back to Occ3D's (permute, flip, rot90 -1). Argmax commutes with the softmax and moves."""
    labels = scores[0, 1:].argmax(axis=0)  # [A, B, Z]: Occ3D classes 0..17
    labels = labels.transpose(2, 0, 1)  # [Z, A, B]
    labels = np.flip(labels, axis=1)
    labels = np.rot90(labels, -1, axes=(1, 2))
    return np.ascontiguousarray(labels.transpose(1, 2, 0))
