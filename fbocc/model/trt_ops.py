"""The three plugin ops as autograd Functions: forward runs the reference in `fbocc.ops`, `symbolic` emits
the contract node (op_type and attributes of DESIGN.md, domain "" like FB-BEV's deployment graph).

Export goes through the TorchScript exporter (`torch.onnx.export(..., dynamo=False)`), the one torch
exporter that turns an autograd Function's `symbolic` into a node; `tests/test_export.py` pins that.
"""

from __future__ import annotations

from typing import Any

import torch

_PADDING = {"zeros": 0, "border": 1, "reflection": 2}
_INTERP = {"bilinear": 0, "nearest": 1}


_BACKEND = {"name": "reference"}


def set_backend(name: str) -> None:
    """Run the ops with the PyTorch references ("reference", default) or the plugin kernels ("cuda",
    `fbocc.ops.cuda`, built on first use). Export is unaffected: the graph holds the contract nodes."""
    if name not in ("reference", "cuda"):
        raise ValueError(f"unknown op backend {name!r}: use 'reference' or 'cuda'")
    _BACKEND["name"] = name


def _ops() -> Any:
    if _BACKEND["name"] == "cuda":
        from fbocc.ops import cuda

        return cuda
    import fbocc.ops as ops  # the references (CPU and CUDA tensors alike)

    return ops


class GridSampler3DFunction(torch.autograd.Function):
    """`GridSampler3DTRT`: input [N,C,D,H,W], grid [N,3,Do,Ho,Wo] (x, y, z channel-first, scaled by 10)."""

    @staticmethod
    def forward(ctx: Any, input: torch.Tensor, grid: torch.Tensor, interpolation_mode: int,
                padding_mode: int, align_corners: bool) -> torch.Tensor:
        return _ops().grid_sampler3d(input, grid, interpolation_mode=interpolation_mode,
                                     padding_mode=padding_mode, align_corners=align_corners)

    @staticmethod
    def symbolic(g: Any, input: Any, grid: Any, interpolation_mode: int, padding_mode: int,
                 align_corners: bool) -> Any:
        return g.op("GridSampler3DTRT", input, grid, interpolation_mode_i=int(interpolation_mode),
                    padding_mode_i=int(padding_mode), align_corners_i=int(bool(align_corners)))


class BEVPoolV2Function(torch.autograd.Function):
    """`BEVPoolV2TRT`: depth [B,N,D,H,W], feat [B,N,H,W,C] -> [B,out_depth,out_height,out_width,C]."""

    @staticmethod
    def forward(ctx: Any, depth: torch.Tensor, feat: torch.Tensor, ranks_depth: torch.Tensor,
                ranks_feat: torch.Tensor, ranks_bev: torch.Tensor, interval_starts: torch.Tensor,
                interval_lengths: torch.Tensor, out_height: int, out_width: int, out_depth: int) -> torch.Tensor:
        # Under autocast the depth softmax stays fp32 while features are fp16; the kernel takes one dtype.
        return _ops().bev_pool_v2(depth.to(feat.dtype), feat, ranks_depth, ranks_feat, ranks_bev, interval_starts,
                                  interval_lengths, out_height, out_width, out_depth=out_depth)

    @staticmethod
    def symbolic(g: Any, depth: Any, feat: Any, ranks_depth: Any, ranks_feat: Any, ranks_bev: Any,
                 interval_starts: Any, interval_lengths: Any, out_height: int, out_width: int,
                 out_depth: int) -> Any:
        return g.op("BEVPoolV2TRT", depth, feat, ranks_depth, ranks_feat, ranks_bev, interval_starts,
                    interval_lengths, out_height_i=int(out_height), out_width_i=int(out_width),
                    out_depth_i=int(out_depth))


class MultiScaleDeformableAttnFunction(torch.autograd.Function):
    """`MultiScaleDeformableAttnTRT`: value [N,S,M,D] ... attention_weights [N,Lq,M,L,P] -> [N,Lq,M*D]."""

    @staticmethod
    def forward(ctx: Any, value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
        return _ops().multi_scale_deformable_attn(value, spatial_shapes, level_start_index, sampling_locations,
                                                  attention_weights.to(sampling_locations.dtype))

    @staticmethod
    def symbolic(g: Any, value: Any, spatial_shapes: Any, level_start_index: Any, sampling_locations: Any,
                 attention_weights: Any) -> Any:
        return g.op("MultiScaleDeformableAttnTRT", value, spatial_shapes, level_start_index,
                    sampling_locations, attention_weights)


def grid_sampler3d(input: torch.Tensor, grid: torch.Tensor, interpolation_mode: str = "bilinear",
                   padding_mode: str = "zeros", align_corners: bool = False) -> torch.Tensor:
    """3D grid sampling with the plugin's grid layout ([N,3,Do,Ho,Wo], coordinates x10)."""
    out: torch.Tensor = GridSampler3DFunction.apply(input, grid, _INTERP[interpolation_mode],
                                                    _PADDING[padding_mode], align_corners)
    return out


def bev_pool_v2(depth: torch.Tensor, feat: torch.Tensor, ranks_depth: torch.Tensor, ranks_feat: torch.Tensor,
                ranks_bev: torch.Tensor, interval_starts: torch.Tensor, interval_lengths: torch.Tensor,
                out_height: int, out_width: int, out_depth: int = 8) -> torch.Tensor:
    """Depth-weighted voxel pooling of camera features onto the BEV volume."""
    out: torch.Tensor = BEVPoolV2Function.apply(depth, feat, ranks_depth, ranks_feat, ranks_bev,
                                                interval_starts, interval_lengths, out_height, out_width,
                                                out_depth)
    return out


def multi_scale_deformable_attn(value: torch.Tensor, spatial_shapes: torch.Tensor,
                                level_start_index: torch.Tensor, sampling_locations: torch.Tensor,
                                attention_weights: torch.Tensor) -> torch.Tensor:
    """Multi-scale deformable attention with pre-softmaxed weights."""
    out: torch.Tensor = MultiScaleDeformableAttnFunction.apply(value, spatial_shapes, level_start_index,
                                                               sampling_locations, attention_weights)
    return out
