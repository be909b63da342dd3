"""The three FB-OCC custom ONNX ops as plain data: what a graph must contain for our plugins to load it.

Matches the ONNX files of the public FB-OCC TensorRT deployment (NVlabs/FB-BEV `deployment/`,
johnyang-nv/FB-OCC-TRT `deployment`, built on DerryHub/BEVFormer_tensorrt): op_type in the default
domain "", plugin version "1", plugin namespace "". No torch import: `check-onnx` uses this alone.
"""

from __future__ import annotations

from dataclasses import dataclass

FLOAT_TYPES = ("float32", "float16")
INDEX_TYPES = ("int32", "int64")  # int64 needs TensorRT >= 10 (8.6 has no int64 plugin inputs)


@dataclass(frozen=True)
class TensorSpec:
    """One positional input or output of a node."""

    name: str
    rank: int
    dtypes: tuple[str, ...]
    layout: str  # human-readable dimension names, e.g. "N,C,D,H,W"
    # Typed graphs (fp16): this tensor's dtype must equal input `same_as`'s, or be float32 when `or_float32`
    # (the plugins' supportsFormatCombination: fp32 coordinates beside fp16 features).
    same_as: str | None = None
    or_float32: bool = False


@dataclass(frozen=True)
class AttributeSpec:
    """One node attribute; `default` None means the attribute is required."""

    name: str
    type: str  # ONNX attribute type name: "int" (the only one these ops use)
    default: int | None
    allowed: tuple[int, ...] | None = None


@dataclass(frozen=True)
class OpContract:
    """An ONNX custom op <-> TensorRT plugin pair."""

    op_type: str
    domain: str
    plugin_version: str
    plugin_namespace: str
    inputs: tuple[TensorSpec, ...]
    attributes: tuple[AttributeSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def attribute(self, name: str) -> AttributeSpec | None:
        """The attribute called `name`, or None when the op has none by that name."""
        return next((a for a in self.attributes if a.name == name), None)


GRID_SAMPLER_3D = OpContract(
    op_type="GridSampler3DTRT",
    domain="",
    plugin_version="1",
    plugin_namespace="",
    inputs=(
        TensorSpec("input", 5, FLOAT_TYPES, "N,C,D,H,W"),
        TensorSpec("grid", 5, FLOAT_TYPES, "N,3,Do,Ho,Wo (x,y,z normalized coordinates x 10)", "input", True),
    ),
    attributes=(
        AttributeSpec("interpolation_mode", "int", 0, (0, 1)),  # 0 bilinear, 1 nearest
        AttributeSpec("padding_mode", "int", 0, (0, 1, 2)),  # 0 zeros, 1 border, 2 reflection
        AttributeSpec("align_corners", "int", 0, (0, 1)),
    ),
    outputs=(TensorSpec("output", 5, FLOAT_TYPES, "N,C,Do,Ho,Wo", "input"),),
)

BEV_POOL_V2 = OpContract(
    op_type="BEVPoolV2TRT",
    domain="",
    plugin_version="1",
    plugin_namespace="",
    inputs=(
        TensorSpec("depth", 5, FLOAT_TYPES, "B,N,D,H,W"),
        TensorSpec("feat", 5, FLOAT_TYPES, "B,N,H,W,C", "depth"),
        TensorSpec("ranks_depth", 1, INDEX_TYPES, "Np"),
        TensorSpec("ranks_feat", 1, INDEX_TYPES, "Np", "ranks_depth"),
        TensorSpec("ranks_bev", 1, INDEX_TYPES, "Np", "ranks_depth"),
        TensorSpec("interval_starts", 1, INDEX_TYPES, "Ni", "ranks_depth"),
        TensorSpec("interval_lengths", 1, INDEX_TYPES, "Ni", "ranks_depth"),
    ),
    attributes=(
        AttributeSpec("out_height", "int", None),
        AttributeSpec("out_width", "int", None),
        AttributeSpec("out_depth", "int", 8),  # absent in the public ONNX files: they always mean 8
    ),
    outputs=(TensorSpec("output", 5, FLOAT_TYPES, "B,out_depth,out_height,out_width,C", "depth"),),
)

MULTI_SCALE_DEFORMABLE_ATTN = OpContract(
    op_type="MultiScaleDeformableAttnTRT",
    domain="",
    plugin_version="1",
    plugin_namespace="",
    inputs=(
        TensorSpec("value", 4, FLOAT_TYPES, "N,S,M,D"),
        TensorSpec("spatial_shapes", 2, INDEX_TYPES, "L,2"),
        TensorSpec("level_start_index", 1, INDEX_TYPES, "L", "spatial_shapes"),
        TensorSpec("sampling_locations", 6, FLOAT_TYPES, "N,Lq,M,L,P,2", "value", True),
        TensorSpec("attention_weights", 5, FLOAT_TYPES, "N,Lq,M,L,P", "sampling_locations"),
    ),
    attributes=(),
    outputs=(TensorSpec("output", 3, FLOAT_TYPES, "N,Lq,M*D", "value"),),
)

CUSTOM_OPS: dict[str, OpContract] = {
    op.op_type: op for op in (GRID_SAMPLER_3D, BEV_POOL_V2, MULTI_SCALE_DEFORMABLE_ATTN)
}

# TensorRT's own MSDA plugin (libnvinfer_plugin, TensorRT >= 8.6; registered by initLibNvInferPlugins, which
# trtexec and our create_engine.py call), not one of ours: NVlabs/FB-BEV's deployment graph (its patch of
# BEVFormer_tensorrt's multi_scale_deformable_attn.py) emits `trt::MultiscaleDeformableAttnPlugin_TRT`. The
# ONNX parser looks plugins up by op_type, version "1", namespace ""; the domain "trt" is not consulted.
TENSORRT_MSDA = OpContract(
    op_type="MultiscaleDeformableAttnPlugin_TRT",
    domain="trt",
    plugin_version="1",
    plugin_namespace="",
    inputs=MULTI_SCALE_DEFORMABLE_ATTN.inputs,
    attributes=(),
    outputs=(TensorSpec("output", 4, FLOAT_TYPES, "N,Lq,M,D"),),
)
TENSORRT_OPS: dict[str, OpContract] = {TENSORRT_MSDA.op_type: TENSORRT_MSDA}
