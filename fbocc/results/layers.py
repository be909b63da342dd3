"""Where the time goes: TensorRT per-layer profile entries mapped to FB-OCC's stages.

TensorRT names a layer after the ONNX node(s) it runs; fused layers join the names with " + ". Our export
names nodes by module path (`/img_backbone/layer1/layer1.0/conv1/Conv`, `/depth_net/...`), so the first
module of the first node says the stage. Reformat copies TensorRT inserts, and names matching no module: "other".
The temporal fusion (`history_*`, GridSampler3DTRT) is counted in the BEV encoder, which it feeds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

STAGES = ("backbone", "depth", "view transform", "BEV encoder", "head", "other")
PLUGIN_OPS = ("BEVPoolV2TRT", "GridSampler3DTRT", "MultiScaleDeformableAttnTRT")
# module name (a path element of an ONNX node name) -> stage: fbocc/model/network.py FBOCC's children as
# `fbocc export` names them (`/model/<child>/...`), plus upstream FB-BEV's spellings
_MODULE_STAGE = {
    "img_backbone": "backbone", "img_neck": "backbone",
    "depth_net": "depth",
    "forward_projection": "view transform", "backward_projection": "view transform", "bev_pool": "view transform",
    "img_view_transformer": "view transform",
    "history_keyframe_time_conv": "BEV encoder", "history_keyframe_cat_conv": "BEV encoder",
    "history_sampler": "BEV encoder",
    "img_bev_encoder_backbone": "BEV encoder", "img_bev_encoder_neck": "BEV encoder",
    "occupancy_head": "head", "occ_head": "head",
}
_OP_STAGE = {"BEVPoolV2TRT": "view transform", "MultiScaleDeformableAttnTRT": "view transform",
             "GridSampler3DTRT": "BEV encoder"}


def plugin_op(name: str) -> str | None:
    """Which of our plugin ops a layer runs, if any (the op type is part of the exported node name)."""
    return next((op for op in PLUGIN_OPS if op in name), None)


def stage_of(name: str) -> str:
    """The FB-OCC stage of a profile layer name (one of STAGES)."""
    first = name.split(" + ")[0].strip()
    if first.startswith("Reformatting CopyNode"):  # layout copies TensorRT inserts between layers
        return "other"
    for part in re.split(r"[/.]", first):
        if part in _MODULE_STAGE:
            # a depth net nested under the view transformer is still the depth stage
            if part == "img_view_transformer" and "depth_net" in first:
                return "depth"
            return _MODULE_STAGE[part]
    op = plugin_op(first)
    return _OP_STAGE[op] if op else "other"


@dataclass(frozen=True)
class StagedLayer:
    """One profile layer with its stage and plugin op."""

    name: str
    average_ms: float
    stage: str
    plugin: str | None


def staged(layers: Iterable[dict[str, Any]]) -> list[StagedLayer]:
    """Result-document layers (`{name, average_ms, ...}`; unavailable entries skipped), slowest first."""
    out = [StagedLayer(str(layer["name"]), float(layer.get("average_ms") or 0.0), stage_of(str(layer["name"])),
                       plugin_op(str(layer["name"]))) for layer in layers if "name" in layer]
    return sorted(out, key=lambda s: s.average_ms, reverse=True)


def stage_totals(layers: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Milliseconds per stage (every stage present, in STAGES order)."""
    totals = dict.fromkeys(STAGES, 0.0)
    for layer in staged(layers):
        totals[layer.stage] += layer.average_ms
    return totals
