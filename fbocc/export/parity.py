"""fbocc's FB-OCC against FB-BEV's own code: both run the same frames with the same weights, and every stage,
output and prepared input is compared. Used by `tools/fbbev_parity.py` (full size, docs/parity.md), by
`tools/fbbev_goldens.py` (the committed goldens) and by the tests.

Comparison rules (issue 21): tensors within 1e-5 x max|ref|; occupancy labels (argmax over classes) 100%;
BEV-pool ranks as the plugin needs them: the same (bev, depth, feat) triples, each voxel's run in any order
(upstream's argsort is unstable, ours stable); `indexes` in either integer dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

RELATIVE_BAR = 1e-5
RANK_INPUTS = ("ranks_depth", "ranks_feat", "ranks_bev", "interval_starts", "interval_lengths")


@dataclass
class TensorDiff:
    """One compared tensor."""

    name: str
    max_abs_diff: float
    max_abs_ref: float
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= RELATIVE_BAR * self.max_abs_ref

    def row(self) -> list[str]:
        return [self.name, f"{self.max_abs_diff:.3g}", f"{self.max_abs_ref:.3g}",
                "pass" if self.passed else "FAIL", self.note]


@dataclass
class FrameParity:
    """Every comparison of one frame."""

    frame: int
    diffs: list[TensorDiff] = field(default_factory=list)
    labels_agree: float = 1.0
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(d.passed for d in self.diffs) and self.labels_agree == 1.0 and not self.problems


def tensor_diff(name: str, ours: Any, ref: Any, note: str = "") -> TensorDiff:
    """max|ours - ref| and max|ref|, shapes required equal (a shape mismatch is an infinite difference)."""
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(ref, dtype=np.float64)
    if a.shape != b.shape:
        return TensorDiff(name, float("inf"), float(np.abs(b).max()) if b.size else 0.0,
                          f"shape {list(a.shape)} vs {list(b.shape)}")
    if a.size == 0:
        return TensorDiff(name, 0.0, 0.0, note or "empty")
    return TensorDiff(name, float(np.abs(a - b).max()), float(np.abs(b).max()), note)


def flatten_stage(value: Any) -> list[tuple[str, Any]]:
    """A stage result as (suffix, array) pairs: lists/tuples become .0, .1, ..."""
    if isinstance(value, (list, tuple)):
        out: list[tuple[str, Any]] = []
        for i, v in enumerate(value):
            out += [(f".{i}{s}", a) for s, a in flatten_stage(v)]
        return out
    return [("", value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value))]


def label_agreement(ours: Any, ref: Any) -> float:
    """Share of voxels whose argmax class agrees (pred_occupancy [B, classes, X, Y, Z])."""
    a = np.asarray(ours).argmax(axis=1)
    b = np.asarray(ref).argmax(axis=1)
    return float((a == b).mean()) if a.shape == b.shape else 0.0


def rank_triples(arrays: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """The (bev, depth, feat) triples of the BEV-pool inputs, sorted, and what breaks the plugin's contract:
    ranks_bev sorted, each interval one voxel's whole run."""
    rb = np.asarray(arrays["ranks_bev"]).astype(np.int64)
    rd = np.asarray(arrays["ranks_depth"]).astype(np.int64)
    rf = np.asarray(arrays["ranks_feat"]).astype(np.int64)
    starts = np.asarray(arrays["interval_starts"]).astype(np.int64)
    lengths = np.asarray(arrays["interval_lengths"]).astype(np.int64)
    problems = []
    if not (rb.shape == rd.shape == rf.shape):
        problems.append(f"ranks lengths differ: bev {rb.shape}, depth {rd.shape}, feat {rf.shape}")
        return np.zeros((0, 3), np.int64), problems
    if rb.size and np.any(np.diff(rb) < 0):
        problems.append("ranks_bev is not sorted")
    keep = np.ones(rb.shape[0], bool)
    keep[1:] = rb[1:] != rb[:-1]
    want_starts = np.flatnonzero(keep)
    want_lengths = np.diff(np.append(want_starts, rb.shape[0]))
    if not (np.array_equal(starts, want_starts) and np.array_equal(lengths, want_lengths)):
        problems.append("interval_starts/interval_lengths are not the runs of ranks_bev")
    triples = np.stack([rb, rd, rf], axis=1)
    order = np.lexsort((triples[:, 2], triples[:, 1], triples[:, 0]))
    return triples[order], problems


def compare_preparation(ours: dict[str, Any], ref: dict[str, Any]) -> tuple[list[TensorDiff], list[str]]:
    """Our host-side inputs against upstream's: ranks as triples, integer inputs exactly (any dtype), floats
    within the bar."""
    diffs, problems = [], []
    t_ours, p_ours = rank_triples(ours)
    t_ref, p_ref = rank_triples(ref)
    problems += [f"ours: {p}" for p in p_ours] + [f"upstream: {p}" for p in p_ref]
    if t_ours.shape != t_ref.shape or not np.array_equal(t_ours, t_ref):
        problems.append(f"BEV-pool (bev, depth, feat) triples differ ({len(t_ours)} ours, {len(t_ref)} upstream)")
    same_order = all(np.array_equal(np.asarray(ours[k]).astype(np.int64), np.asarray(ref[k]).astype(np.int64))
                     for k in RANK_INPUTS if np.asarray(ours[k]).shape == np.asarray(ref[k]).shape)
    diffs.append(TensorDiff("ranks (as triples)", 0.0 if t_ours.shape == t_ref.shape and
                            np.array_equal(t_ours, t_ref) else float("inf"), float(len(t_ref)),
                            f"{len(t_ref)} triples; run order {'identical' if same_order else 'differs'}"))
    for name in sorted(set(ours) & set(ref)):
        if name in RANK_INPUTS or name.startswith("history_"):
            continue
        a, b = np.asarray(ours[name]), np.asarray(ref[name])
        note = f"{a.dtype} vs {b.dtype}" if a.dtype != b.dtype else ""
        if a.dtype.kind in "biu" and b.dtype.kind in "biu":
            equal = a.shape == b.shape and np.array_equal(a.astype(np.int64), b.astype(np.int64))
            diffs.append(TensorDiff(name, 0.0 if equal else float("inf"),
                                    float(np.abs(b.astype(np.int64)).max()) if b.size else 0.0, note))
        else:
            diffs.append(tensor_diff(name, a, b, note))
    return diffs, problems


def markdown_table(rows: list[list[str]], header: list[str]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def state_digest(state: dict[str, Any]) -> str:
    """sha256 over a state dict's names and tensor bytes (the goldens pin their weights with it)."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
