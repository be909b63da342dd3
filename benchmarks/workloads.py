"""Inputs for the three ops at FB-OCC's shapes (and smaller ones), shared by the kernel tests and benchmark.

Features are unit-normal. Index tensors follow the producers' invariants: BEVPool points sorted by voxel
with one interval per occupied voxel (as `voxel_pooling_prepare_v2`), MSDA weights softmaxed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fbocc.ops.reference import GRID_SCALE


@dataclass(frozen=True)
class GridSamplerCase:
    n: int = 1
    c: int = 1280
    d: int = 8
    h: int = 100
    w: int = 100
    out: tuple[int, int, int] = (8, 100, 100)
    align_corners: bool = True


@dataclass(frozen=True)
class BevPoolCase:
    b: int = 1
    cams: int = 6
    depth_bins: int = 80
    h: int = 16
    w: int = 44
    c: int = 80
    out_depth: int = 8
    out_height: int = 100
    out_width: int = 100
    points: int = 200_000


@dataclass(frozen=True)
class MsdaCase:
    n: int
    levels: tuple[tuple[int, int], ...]
    heads: int
    channels: int
    queries: int
    points: int


# FB-OCC's call sites (r50, 256x704 input, 100x100x8 BEV, embed 80 = 8 heads x 10).
FBOCC_GRID_SAMPLER = GridSamplerCase()
FBOCC_BEV_POOL = BevPoolCase()
FBOCC_MSDA = {
    "BEV self-attention": MsdaCase(n=1, levels=((100, 100),), heads=8, channels=10, queries=10_000, points=4),
    "image cross-attention": MsdaCase(n=6, levels=((16, 44),), heads=8, channels=10, queries=4_000, points=8),
    "depth sampling": MsdaCase(n=6, levels=((16, 44),), heads=1, channels=80, queries=16_000, points=1),
}


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def grid_sampler_inputs(
    case: GridSamplerCase, dtype: torch.dtype, device: str | torch.device, seed: int = 0, warp: str = "ego-motion",
    grid_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input [N,C,D,H,W], grid [N,3,Do,Ho,Wo] x10). `warp`: "ego-motion" (FB-OCC's history alignment:
    a small yaw and shift of the voxel grid, align_corners normalization, some points leave the volume) or
    "random" (uniform in [-1.2, 1.2], no locality)."""
    g = _generator(seed)
    volume = torch.randn(case.n, case.c, case.d, case.h, case.w, generator=g).to(device=device, dtype=dtype)
    do, ho, wo = case.out
    if warp == "random":
        grid = (torch.rand(case.n, 3, do, ho, wo, generator=g) * 2.4 - 1.2) * GRID_SCALE
    else:
        zs, ys, xs = torch.meshgrid(torch.arange(do, dtype=torch.float64), torch.arange(ho, dtype=torch.float64),
                                    torch.arange(wo, dtype=torch.float64), indexing="ij")
        yaw = math.radians(3.0)
        cx, cy = (wo - 1) / 2, (ho - 1) / 2
        x = math.cos(yaw) * (xs - cx) - math.sin(yaw) * (ys - cy) + cx + 2.3
        y = math.sin(yaw) * (xs - cx) + math.cos(yaw) * (ys - cy) + cy - 1.7
        z = zs + 0.1
        norm = [x / (case.w - 1), y / (case.h - 1), z / max(case.d - 1, 1)]
        grid = torch.stack([2 * t - 1 for t in norm]).unsqueeze(0).expand(case.n, 3, do, ho, wo) * GRID_SCALE
    return volume, grid.to(device=device, dtype=grid_dtype or dtype).contiguous()


def bev_pool_inputs(
    case: BevPoolCase, dtype: torch.dtype, device: str | torch.device, seed: int = 0,
    index_dtype: torch.dtype = torch.int32, empty_intervals: int = 0,
) -> tuple[torch.Tensor, ...]:
    """(depth, feat, ranks_depth, ranks_feat, ranks_bev, interval_starts, interval_lengths) with `case.points`
    frustum points landing in random voxels; `empty_intervals` zero-length intervals are mixed in."""
    g = _generator(seed)
    depth = torch.randn(case.b, case.cams, case.depth_bins, case.h, case.w, generator=g)
    feat = torch.randn(case.b, case.cams, case.h, case.w, case.c, generator=g)
    frustum = depth.numel()
    points = min(case.points, frustum)
    ranks_depth = torch.randperm(frustum, generator=g)[:points]
    hw = case.h * case.w
    camera_image = ranks_depth // (case.depth_bins * hw)  # (b, cam) pair
    ranks_feat = camera_image * hw + ranks_depth % hw
    batch = camera_image // case.cams
    cells_per_batch = case.out_depth * case.out_height * case.out_width
    ranks_bev = batch * cells_per_batch + torch.randint(0, cells_per_batch, (points,), generator=g)
    order = torch.argsort(ranks_bev, stable=True)
    ranks_depth, ranks_feat, ranks_bev = ranks_depth[order], ranks_feat[order], ranks_bev[order]
    change = torch.ones(points, dtype=torch.bool)
    change[1:] = ranks_bev[1:] != ranks_bev[:-1]
    starts = torch.nonzero(change).flatten()
    lengths = torch.diff(torch.cat([starts, torch.tensor([points])]))
    if empty_intervals:
        where = torch.randint(0, starts.numel() + 1, (empty_intervals,), generator=g).sort().values
        fill = torch.cat([starts, torch.tensor([points])])[where]
        starts = torch.cat([starts, fill])
        lengths = torch.cat([lengths, torch.zeros(empty_intervals, dtype=lengths.dtype)])
        order = torch.argsort(starts * 2 + (lengths > 0).long(), stable=True)  # an empty one before its neighbour
        starts, lengths = starts[order], lengths[order]
    return (depth.to(device=device, dtype=dtype), feat.to(device=device, dtype=dtype),
            *(t.to(device=device, dtype=index_dtype) for t in (ranks_depth, ranks_feat, ranks_bev, starts, lengths)))


def msda_inputs(
    case: MsdaCase, dtype: torch.dtype, device: str | torch.device, seed: int = 0,
    coord_dtype: torch.dtype | None = None, index_dtype: torch.dtype = torch.int32, locality: str = "uniform",
) -> tuple[torch.Tensor, ...]:
    """(value, spatial_shapes, level_start_index, sampling_locations, attention_weights).

    `locality`: "uniform" puts every point anywhere in [-0.05, 1.05] (some fall outside; no locality);
    "local" is deformable attention as FB-OCC runs it: each query has a reference point (queries laid out
    in raster order over the first level, as BEV queries and the per-camera rebatched queries are) and its
    points sit at small learned offsets around it (Gaussian, 2 pixels of each level)."""
    g = _generator(seed)
    sizes = [h * w for h, w in case.levels]
    levels = len(case.levels)
    value = torch.randn(case.n, sum(sizes), case.heads, case.channels, generator=g)
    shapes = torch.tensor(case.levels, dtype=torch.int64).reshape(levels, 2)
    starts = torch.tensor([0, *sizes[:-1]], dtype=torch.int64).cumsum(0)
    shape = (case.n, case.queries, case.heads, levels, case.points, 2)
    if locality == "local":
        h0, w0 = case.levels[0]
        cols = max(1, math.ceil(math.sqrt(case.queries * w0 / h0)))
        rows = max(1, math.ceil(case.queries / cols))
        q = torch.arange(case.queries)
        reference = torch.stack([((q % cols) + 0.5) / cols, ((q // cols) + 0.5) / rows], -1)  # (x, y)
        size_xy = torch.tensor([[w, h] for h, w in case.levels], dtype=torch.float32)  # [L, 2]
        offsets = torch.randn(*shape, generator=g) * 2.0 / size_xy[None, None, None, :, None, :]
        locations = reference[None, :, None, None, None, :] + offsets
    else:
        locations = torch.rand(*shape, generator=g) * 1.1 - 0.05
    logits = torch.randn(case.n, case.queries, case.heads, levels * case.points, generator=g)
    weights = logits.softmax(-1).reshape(case.n, case.queries, case.heads, levels, case.points)
    coord = coord_dtype or dtype
    return (value.to(device=device, dtype=dtype), shapes.to(device=device, dtype=index_dtype),
            starts.to(device=device, dtype=index_dtype), locations.to(device=device, dtype=coord).contiguous(),
            weights.to(device=device, dtype=coord).contiguous())
