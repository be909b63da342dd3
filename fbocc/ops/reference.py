"""PyTorch references of the three FB-OCC custom ops: the ground truth for every kernel test.

Pure torch (CPU and CUDA), written for clarity, not speed. Each function takes exactly the tensors the
ONNX node receives (same order, layout and scaling) and returns what the TensorRT plugin must return.
Computation runs in float32 (float64 stays float64) and the result is cast back to the feature dtype,
so an fp16 kernel is compared against the fp32 answer on the same inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GRID_SCALE = 10.0  # the ONNX grid carries normalized coordinates multiplied by this
INTERPOLATION_MODES = {0: "bilinear", 1: "nearest"}
PADDING_MODES = {0: "zeros", 1: "border", 2: "reflection"}
INDEX_DTYPES = (torch.int32, torch.int64)


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def grid_sampler3d(
    input: torch.Tensor,
    grid: torch.Tensor,
    interpolation_mode: int = 0,
    padding_mode: int = 0,
    align_corners: bool | int = False,
) -> torch.Tensor:
    """`GridSampler3DTRT`: sample a volume at the points of a channel-first grid scaled by 10.

    Args:
        input: features [N, C, D, H, W], float32/float16.
        grid: [N, 3, Do, Ho, Wo], channel-first; channel 0 is x (indexes W), 1 is y (H), 2 is z (D).
            Values are PyTorch's normalized coordinates (-1..1 span the volume) multiplied by 10: the
            model passes `10 * grid.permute(0, 4, 1, 2, 3)` and the op divides by 10 again. May be
            float32 beside float16 features.
        interpolation_mode: 0 bilinear (trilinear in 3-D), 1 nearest (round half to even, as PyTorch).
        padding_mode: 0 zeros, 1 border, 2 reflection (PyTorch's semantics for points outside).
        align_corners: as `torch.nn.functional.grid_sample` (FB-OCC uses True).

    Returns:
        [N, C, Do, Ho, Wo] in the dtype of `input`.
    """
    _require(input.dim() == 5, f"grid_sampler3d: input must be [N,C,D,H,W], got shape {tuple(input.shape)}")
    _require(
        grid.dim() == 5 and grid.shape[1] == 3 and grid.shape[0] == input.shape[0],
        f"grid_sampler3d: grid must be [N,3,Do,Ho,Wo] with N={input.shape[0]}, got shape {tuple(grid.shape)}",
    )
    _require(interpolation_mode in INTERPOLATION_MODES, f"grid_sampler3d: interpolation_mode {interpolation_mode}"
             " is not 0 (bilinear) or 1 (nearest)")
    _require(padding_mode in PADDING_MODES, f"grid_sampler3d: padding_mode {padding_mode} is not 0 (zeros), "
             "1 (border) or 2 (reflection)")
    n, c = input.shape[:2]
    out_shape = (n, c, *grid.shape[2:])
    if input.numel() == 0 or grid.numel() == 0:
        return input.new_zeros(out_shape)
    dtype = _compute_dtype(input, grid)
    grid_ndhw3 = grid.to(dtype).permute(0, 2, 3, 4, 1) / GRID_SCALE
    out = F.grid_sample(
        input.to(dtype),
        grid_ndhw3,
        mode=INTERPOLATION_MODES[interpolation_mode],
        padding_mode=PADDING_MODES[padding_mode],
        align_corners=bool(align_corners),
    )
    return out.to(input.dtype)


def bev_pool_v2(
    depth: torch.Tensor,
    feat: torch.Tensor,
    ranks_depth: torch.Tensor,
    ranks_feat: torch.Tensor,
    ranks_bev: torch.Tensor,
    interval_starts: torch.Tensor,
    interval_lengths: torch.Tensor,
    out_height: int,
    out_width: int,
    out_depth: int = 8,
) -> torch.Tensor:
    """`BEVPoolV2TRT`: lift-splat pooling of camera features into a voxel grid.

    Args:
        depth: [B, N, D, H, W] depth probabilities (float32/float16); `ranks_depth` indexes it flat.
        feat: [B, N, H, W, C] image features (channels last); `ranks_feat` indexes its [B*N*H*W] rows.
        ranks_depth, ranks_feat, ranks_bev: [Np] int32 (int64 accepted) per frustum point; `ranks_bev`
            indexes the flat [B*out_depth*out_height*out_width] voxel cells.
        interval_starts, interval_lengths: [Ni] int32/int64; interval i covers points
            `interval_starts[i] .. interval_starts[i] + interval_lengths[i] - 1`, all of which fall into
            voxel `ranks_bev[interval_starts[i]]` (points sorted by voxel, as `voxel_pooling_prepare_v2`
            makes them). Empty intervals contribute nothing.
        out_height, out_width: ONNX attributes (FB-OCC: 100, 100).
        out_depth: optional attribute, voxel layers (FB-OCC: 8).

    Returns:
        [B, out_depth, out_height, out_width, C] in the dtype of `feat`:
        `out[cell, c] = sum over points p of its intervals: depth.flat[ranks_depth[p]] * feat_rows[ranks_feat[p], c]`,
        zero for cells no interval maps to. Two intervals on the same cell add up.
    """
    _require(depth.dim() == 5, f"bev_pool_v2: depth must be [B,N,D,H,W], got shape {tuple(depth.shape)}")
    _require(feat.dim() == 5, f"bev_pool_v2: feat must be [B,N,H,W,C], got shape {tuple(feat.shape)}")
    for name, t in (("ranks_depth", ranks_depth), ("ranks_feat", ranks_feat), ("ranks_bev", ranks_bev),
                    ("interval_starts", interval_starts), ("interval_lengths", interval_lengths)):
        _require(t.dim() == 1, f"bev_pool_v2: {name} must be 1-D, got shape {tuple(t.shape)}")
        _require(t.dtype in INDEX_DTYPES, f"bev_pool_v2: {name} must be int32 or int64, got {t.dtype}")
    _require(ranks_depth.shape == ranks_feat.shape == ranks_bev.shape,
             "bev_pool_v2: ranks_depth, ranks_feat and ranks_bev must have the same length")
    _require(interval_starts.shape == interval_lengths.shape,
             "bev_pool_v2: interval_starts and interval_lengths must have the same length")
    _require(min(out_height, out_width, out_depth) >= 0, "bev_pool_v2: output sizes must not be negative")
    batch, channels = depth.shape[0], feat.shape[-1]
    cells = batch * out_depth * out_height * out_width
    dtype = _compute_dtype(depth, feat)
    out = torch.zeros((cells, channels), dtype=dtype, device=feat.device)
    lengths = interval_lengths.long()
    keep = lengths > 0
    starts, lengths = interval_starts.long()[keep], lengths[keep]
    if starts.numel() and channels:
        total = int(lengths.sum())
        interval_of_point = torch.repeat_interleave(torch.arange(starts.numel(), device=starts.device), lengths)
        first_of_interval = torch.cumsum(lengths, 0) - lengths
        offset = torch.arange(total, device=starts.device) - first_of_interval[interval_of_point]
        points = starts[interval_of_point] + offset
        weights = depth.reshape(-1).to(dtype)[ranks_depth.long()[points]]
        rows = feat.reshape(-1, channels).to(dtype)[ranks_feat.long()[points]]
        cell = ranks_bev.long()[starts][interval_of_point]
        out.index_add_(0, cell, rows * weights[:, None])
    return out.reshape(batch, out_depth, out_height, out_width, channels).to(feat.dtype)


def multi_scale_deformable_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """`MultiScaleDeformableAttnTRT`: deformable attention sampling (the mmcv `ms_deform_attn` forward).

    Args:
        value: [N, S, M, D] (S = sum of H_l*W_l over levels, M heads, D channels per head).
        spatial_shapes: [L, 2] int32/int64, (H_l, W_l) per level.
        level_start_index: [L] int32/int64, first row of each level in S.
        sampling_locations: [N, Lq, M, L, P, 2], (x, y) normalized to [0, 1] per level
            (pixel = loc * size - 0.5, i.e. align_corners=False); outside points read zeros.
        attention_weights: [N, Lq, M, L, P], already softmaxed (the op does not normalize).

    Returns:
        [N, Lq, M*D] in the dtype of `value`, head-major: `out[n, q, m*D + d]`.
    """
    _require(value.dim() == 4, f"multi_scale_deformable_attn: value must be [N,S,M,D], got {tuple(value.shape)}")
    _require(sampling_locations.dim() == 6 and sampling_locations.shape[-1] == 2,
             "multi_scale_deformable_attn: sampling_locations must be [N,Lq,M,L,P,2], "
             f"got {tuple(sampling_locations.shape)}")
    n, s, m, d = value.shape
    _, lq, m2, levels, points, _ = sampling_locations.shape
    _require(m2 == m and sampling_locations.shape[0] == n,
             "multi_scale_deformable_attn: sampling_locations' N and M must match value's")
    _require(tuple(attention_weights.shape) == (n, lq, m, levels, points),
             f"multi_scale_deformable_attn: attention_weights must be {(n, lq, m, levels, points)}, "
             f"got {tuple(attention_weights.shape)}")
    _require(tuple(spatial_shapes.shape) == (levels, 2) and spatial_shapes.dtype in INDEX_DTYPES,
             f"multi_scale_deformable_attn: spatial_shapes must be int [{levels},2]")
    _require(tuple(level_start_index.shape) == (levels,) and level_start_index.dtype in INDEX_DTYPES,
             f"multi_scale_deformable_attn: level_start_index must be int [{levels}]")
    if min(n, lq, m, d) == 0 or levels * points == 0:
        return value.new_zeros((n, lq, m * d))
    dtype = _compute_dtype(value, sampling_locations, attention_weights)
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    starts = [int(i) for i in level_start_index.tolist()]
    grids = 2.0 * sampling_locations.to(dtype) - 1.0  # grid_sample's [-1, 1] convention
    sampled = []
    for level, ((h, w), start) in enumerate(zip(shapes, starts, strict=True)):
        _require(start + h * w <= s, f"multi_scale_deformable_attn: level {level} rows {start}..{start + h * w}"
                 f" exceed value's S={s}")
        v = value[:, start:start + h * w].to(dtype)  # [N, HW, M, D]
        v = v.permute(0, 2, 3, 1).reshape(n * m, d, h, w)
        g = grids[:, :, :, level].transpose(1, 2).reshape(n * m, lq, points, 2)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    stacked = torch.stack(sampled, dim=-2).reshape(n * m, d, lq, levels * points)  # [N*M, D, Lq, L*P]
    weights = attention_weights.to(dtype).transpose(1, 2).reshape(n * m, 1, lq, levels * points)
    out = (stacked * weights).sum(-1).reshape(n, m * d, lq).transpose(1, 2)
    return out.contiguous().to(value.dtype)
