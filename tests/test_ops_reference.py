"""The PyTorch references of the custom ops give the hand-computed answers (they are every kernel's truth)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from fbocc.ops import bev_pool_v2, grid_sampler3d, multi_scale_deformable_attn  # noqa: E402
from fbocc.ops.contract import CUSTOM_OPS  # noqa: E402


def _grid(points: list[tuple[float, float, float]]) -> torch.Tensor:
    """[1, 3, 1, 1, P] channel-first grid, already scaled by 10 like the ONNX node's input."""
    return (10.0 * torch.tensor(points, dtype=torch.float32)).T.reshape(1, 3, 1, 1, len(points))


# --- GridSampler3DTRT -------------------------------------------------------------------------------------

def test_grid_sampler3d_reads_corners_at_plus_minus_ten_with_align_corners() -> None:
    volume = torch.arange(8, dtype=torch.float32).reshape(1, 1, 2, 2, 2)  # value = 4z + 2y + x
    out = grid_sampler3d(volume, _grid([(-1, -1, -1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1), (1, 1, 1)]),
                         align_corners=True)
    assert out.shape == (1, 1, 1, 1, 5)
    assert out.flatten().tolist() == [0.0, 1.0, 2.0, 4.0, 7.0]


def test_grid_sampler3d_trilinear_centre_is_the_mean_of_eight_corners() -> None:
    volume = torch.arange(8, dtype=torch.float32).reshape(1, 1, 2, 2, 2)
    out = grid_sampler3d(volume, _grid([(0, 0, 0)]), align_corners=True)
    assert out.item() == pytest.approx(3.5)


def test_grid_sampler3d_without_align_corners_maps_ten_to_the_outer_edge() -> None:
    # align_corners=False: +-10 is the outer edge of the corner voxel, so x=+10 lies half outside.
    volume = torch.ones(1, 1, 2, 2, 2)
    out = grid_sampler3d(volume, _grid([(1, 0, 0), (0.5, 0.5, 0.5)]), align_corners=False)
    assert out.flatten().tolist() == pytest.approx([0.5, 1.0])


@pytest.mark.parametrize(("padding_mode", "expected"), [(0, 0.0), (1, 1.0), (2, 0.0)])
def test_grid_sampler3d_outside_points_follow_pytorch_padding(padding_mode: int, expected: float) -> None:
    volume = torch.tensor([0.0, 1.0]).reshape(1, 1, 1, 1, 2)  # x=0 -> 0, x=1 -> 1
    # x = 3 (normalized) is far right: zeros -> 0, border -> last value, reflection (align) -> 3 -> -1 -> 0.
    out = grid_sampler3d(volume, _grid([(3, 0, 0)]), padding_mode=padding_mode, align_corners=True)
    assert out.item() == pytest.approx(expected)


def test_grid_sampler3d_nearest_picks_the_closest_voxel_and_keeps_channels() -> None:
    volume = torch.stack([torch.arange(8.0), -torch.arange(8.0)]).reshape(1, 2, 2, 2, 2)
    out = grid_sampler3d(volume, _grid([(0.8, -0.8, 0.9)]), interpolation_mode=1, align_corners=True)
    assert out.flatten().tolist() == [5.0, -5.0]  # x=1, y=0, z=1


def test_grid_sampler3d_fp16_features_with_fp32_grid_return_fp16() -> None:
    out = grid_sampler3d(torch.ones(1, 3, 2, 2, 2, dtype=torch.float16), _grid([(0, 0, 0)]), align_corners=True)
    assert out.dtype == torch.float16 and out.shape == (1, 3, 1, 1, 1)


def test_grid_sampler3d_zero_size_grid_gives_empty_output() -> None:
    out = grid_sampler3d(torch.ones(1, 4, 2, 2, 2), torch.zeros(1, 3, 0, 5, 5))
    assert out.shape == (1, 4, 0, 5, 5)


def test_grid_sampler3d_rejects_a_channel_last_grid() -> None:
    with pytest.raises(ValueError, match=r"grid must be \[N,3,Do,Ho,Wo\]"):
        grid_sampler3d(torch.ones(1, 1, 2, 2, 2), torch.zeros(1, 1, 1, 4, 3))


# --- BEVPoolV2TRT -----------------------------------------------------------------------------------------

def _bev_case(index_dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    depth = torch.tensor([0.5, 0.25, 1.0, 2.0]).reshape(1, 1, 4, 1, 1)  # B,N,D,H,W with D=4
    feat = torch.tensor([[1.0, 10.0], [3.0, 30.0]]).reshape(1, 1, 2, 1, 2)  # B,N,H=2,W,C=2 (rows 0, 1)
    ranks_depth = torch.tensor([0, 1, 2, 3], dtype=index_dtype)
    ranks_feat = torch.tensor([0, 1, 0, 1], dtype=index_dtype)
    ranks_bev = torch.tensor([1, 1, 5, 5], dtype=index_dtype)
    starts = torch.tensor([0, 2, 4], dtype=index_dtype)  # the third interval is empty
    lengths = torch.tensor([2, 2, 0], dtype=index_dtype)
    return depth, feat, ranks_depth, ranks_feat, ranks_bev, starts, lengths


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_bev_pool_v2_sums_depth_weighted_features_per_interval(index_dtype: torch.dtype) -> None:
    out = bev_pool_v2(*_bev_case(index_dtype), out_height=2, out_width=3, out_depth=1)
    assert out.shape == (1, 1, 2, 3, 2)
    cells = out.reshape(6, 2)
    # cell 1: 0.5*[1,10] + 0.25*[3,30] ; cell 5: 1.0*[1,10] + 2.0*[3,30] ; every other cell zero
    assert cells[1].tolist() == pytest.approx([1.25, 12.5])
    assert cells[5].tolist() == pytest.approx([7.0, 70.0])
    assert cells[[0, 2, 3, 4]].abs().sum().item() == 0.0


def test_bev_pool_v2_default_out_depth_is_eight() -> None:
    out = bev_pool_v2(*_bev_case(torch.int32), out_height=1, out_width=1)
    assert out.shape == (1, 8, 1, 1, 2)


def test_bev_pool_v2_no_intervals_gives_all_zero_output() -> None:
    depth, feat, rd, rf, rb, _, _ = _bev_case(torch.int32)
    empty = torch.zeros(0, dtype=torch.int32)
    out = bev_pool_v2(depth, feat, rd, rf, rb, empty, empty, out_height=2, out_width=3, out_depth=1)
    assert out.shape == (1, 1, 2, 3, 2) and out.abs().sum().item() == 0.0


def test_bev_pool_v2_rejects_float_indices() -> None:
    depth, feat, rd, rf, rb, starts, lengths = _bev_case(torch.int32)
    with pytest.raises(ValueError, match="ranks_bev must be int32 or int64"):
        bev_pool_v2(depth, feat, rd, rf, rb.float(), starts, lengths, 2, 3, 1)


# --- MultiScaleDeformableAttnTRT --------------------------------------------------------------------------

def _msda_value() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # one level 2x2 (H=2, W=2), 2 heads, D=1: head 0 holds 1,2,3,4 ; head 1 holds 10,20,30,40 (row-major)
    value = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]]).reshape(1, 4, 2, 1)
    return value, torch.tensor([[2, 2]], dtype=torch.int32), torch.tensor([0], dtype=torch.int32)


def test_msda_pixel_centres_read_exact_values_and_weights_scale_them() -> None:
    value, shapes, starts = _msda_value()
    # points at the centre of pixel (x=1, y=0) and of pixel (x=0, y=1): loc = (x + 0.5) / W
    locs = torch.tensor([[0.75, 0.25], [0.25, 0.75]]).reshape(1, 1, 1, 1, 2, 2).expand(1, 1, 2, 1, 2, 2)
    weights = torch.tensor([0.5, 2.0]).reshape(1, 1, 1, 1, 2).expand(1, 1, 2, 1, 2)
    out = multi_scale_deformable_attn(value, shapes, starts, locs.contiguous(), weights.contiguous())
    assert out.shape == (1, 1, 2)
    assert out.flatten().tolist() == pytest.approx([0.5 * 2 + 2.0 * 3, 0.5 * 20 + 2.0 * 30])  # head-major


def test_msda_bilinear_between_pixels_and_zero_outside() -> None:
    value, shapes, starts = _msda_value()
    locs = torch.tensor([[0.5, 0.5], [1.5, 0.5]]).reshape(1, 1, 1, 1, 2, 2).expand(1, 1, 2, 1, 2, 2)
    weights = torch.ones(1, 1, 2, 1, 2)
    out = multi_scale_deformable_attn(value, shapes, starts, locs.contiguous(), weights)
    assert out.flatten().tolist() == pytest.approx([2.5, 25.0])  # centre = mean of the 4; x=1.5 is outside


def test_msda_second_level_starts_at_level_start_index() -> None:
    value = torch.tensor([7.0, 1.0, 2.0, 3.0, 4.0]).reshape(1, 5, 1, 1)  # level 0: 1x1 (7), level 1: 2x2
    shapes = torch.tensor([[1, 1], [2, 2]], dtype=torch.int64)
    starts = torch.tensor([0, 1], dtype=torch.int64)
    locs = torch.tensor([[0.5, 0.5], [0.25, 0.75]]).reshape(1, 1, 1, 2, 1, 2)
    weights = torch.tensor([1.0, 10.0]).reshape(1, 1, 1, 2, 1)
    out = multi_scale_deformable_attn(value, shapes, starts, locs, weights)
    assert out.item() == pytest.approx(7.0 + 10.0 * 3.0)


def test_msda_empty_queries_give_empty_output() -> None:
    value, shapes, starts = _msda_value()
    out = multi_scale_deformable_attn(value, shapes, starts, torch.zeros(1, 0, 2, 1, 4, 2), torch.zeros(1, 0, 2, 1, 4))
    assert out.shape == (1, 0, 2)


# --- the ONNX contract ------------------------------------------------------------------------------------

def test_contract_names_the_public_deployment_ops_in_the_default_domain() -> None:
    assert set(CUSTOM_OPS) == {"GridSampler3DTRT", "BEVPoolV2TRT", "MultiScaleDeformableAttnTRT"}
    assert all(op.domain == "" and op.plugin_version == "1" for op in CUSTOM_OPS.values())
    bev = CUSTOM_OPS["BEVPoolV2TRT"]
    assert [i.name for i in bev.inputs][:2] == ["depth", "feat"] and len(bev.inputs) == 7
    out_depth, out_height = bev.attribute("out_depth"), bev.attribute("out_height")
    assert out_depth is not None and out_depth.default == 8
    assert out_height is not None and out_height.default is None
