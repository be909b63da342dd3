"""FB-OCC in plain PyTorch: FB-BEV parameter names, strict checkpoint loading, host preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fbocc.errors import ConfigError
from fbocc.model import ModelConfig, build_model, load_checkpoint, preprocess
from fbocc.model.backward import DA_MSDeformableAttention, DA_SpatialCrossAttention
from fbocc.model.synthetic import synthetic_sequence

KEYS = Path(__file__).parent / "data" / "fbocc_r50_keys.json"


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return build_model(seed=3)


def test_state_dict_matches_the_fbbev_key_and_shape_list(model: torch.nn.Module) -> None:
    expected = {k: shape for k, shape in json.loads(KEYS.read_text())["keys"]}
    own = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(expected) - set(own)) == []
    assert sorted(set(own) - set(expected)) == []
    assert {k: v for k, v in own.items() if expected[k] != v} == {}
    # spot checks straight from the FB-BEV config: 80 depth bins, 16 history frames, 19 classes
    assert own["depth_net.depth_conv.4.weight"] == [80, 512, 1, 1]
    assert own["history_keyframe_cat_conv.0.weight"] == [80, 80 * 17, 1, 1, 1]
    assert own["occupancy_head.occ_pred_conv.3.weight"] == [19, 64, 1, 1, 1]


def test_checkpoint_with_module_and_teacher_prefixes_loads(model: torch.nn.Module, tmp_path: Path) -> None:
    state = {("module." if i % 2 else "teacher.") + k: v for i, (k, v) in enumerate(model.state_dict().items())}
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": state, "meta": {"epoch": 20}}, path)
    fresh = build_model()
    result = load_checkpoint(fresh, path)
    assert result.ok
    assert torch.equal(fresh.depth_net.bn.running_var, model.depth_net.bn.running_var)


def test_checkpoint_with_missing_extra_and_misshaped_keys_names_each(model: torch.nn.Module, tmp_path: Path) -> None:
    state = dict(model.state_dict())
    del state["img_neck.lateral_convs.0.conv.weight"]
    state["pts_bbox_head.cls.weight"] = torch.zeros(3)
    state["occupancy_head.occ_pred_conv.3.weight"] = torch.zeros(17, 64, 1, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ConfigError) as info:
        load_checkpoint(build_model(), path)
    text = info.value.render()
    assert "1 missing, 1 unexpected, 1 mis-shaped" in text
    assert "missing key img_neck.lateral_convs.0.conv.weight" in text
    assert "unexpected key pts_bbox_head.cls.weight" in text
    assert ("shape of occupancy_head.occ_pred_conv.3.weight: checkpoint [17, 64, 1, 1, 1], "
            "model [19, 64, 1, 1, 1]") in text
    assert "fix:" in text


def test_checkpoint_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "odd.pth"
    torch.save({"state_dict": {"a": 1}}, path)
    with pytest.raises(ConfigError, match="no state dict of tensors"):
        load_checkpoint(build_model(), path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_checkpoint(build_model(), tmp_path / "absent.pth")


def test_bev_pool_ranks_are_sorted_runs_inside_the_grid() -> None:
    cfg = ModelConfig()
    frame = synthetic_sequence(cfg, 1)[0]
    r = preprocess.bev_pool_inputs(cfg, frame)
    rb, starts, lengths = r["ranks_bev"].long(), r["interval_starts"].long(), r["interval_lengths"].long()
    assert torch.all(rb[1:] >= rb[:-1])
    assert int(lengths.sum()) == rb.numel() and starts[0] == 0
    assert torch.all(rb[starts[1:]] != rb[starts[1:] - 1])  # each run starts at a new voxel
    assert int(rb.max()) < cfg.bev_z * cfg.bev_h * cfg.bev_w
    d, h, w = cfg.depth_channels, *cfg.feat_size
    assert int(r["ranks_depth"].max()) < cfg.num_cams * d * h * w
    assert int(r["ranks_feat"].max()) < cfg.num_cams * h * w
    # six surround cameras reach most of the 80 m x 80 m grid
    assert 0.3 < starts.numel() / (cfg.bev_z * cfg.bev_h * cfg.bev_w) < 1.0


def test_backward_projection_inputs_list_the_visible_queries_per_camera() -> None:
    cfg = ModelConfig()
    frame = synthetic_sequence(cfg, 1)[0]
    b = preprocess.backward_projection_inputs(cfg, frame)
    mask, idx = b["per_cam_mask_list"], b["indexes"]
    assert mask.shape == (6, 1, cfg.bev_h * cfg.bev_w, cfg.num_z_anchors)
    for cam in range(6):
        visible = mask[cam, 0].any(-1).nonzero()[:, 0]
        assert torch.equal(idx[0, cam, :visible.numel()], visible)
        assert torch.all(idx[0, cam, visible.numel():] == 0)
    assert b["queries_rebatch"].shape == (1, 6, idx.shape[2], cfg.embed_dims)
    assert b["reference_points_cam"].shape == (6, 1, cfg.bev_h * cfg.bev_w, cfg.num_z_anchors, 2)


def test_temporal_grid_is_identity_without_motion_and_shifts_with_it() -> None:
    cfg = ModelConfig()
    eye = preprocess.forward_augs(torch.eye(3))
    grid = preprocess.temporal_grid(cfg, eye, eye, torch.eye(4))
    assert grid.shape == (1, cfg.bev_h, cfg.bev_w, cfg.bev_z, 3)
    assert torch.allclose(grid[0, 0, 0, 0], torch.tensor([-1.0, -1.0, -1.0]))
    assert torch.allclose(grid[0, -1, -1, -1], torch.tensor([1.0, 1.0, 1.0]))
    moved = torch.eye(4)
    moved[0, 3] = 0.8  # one voxel forward in x
    shifted = preprocess.temporal_grid(cfg, eye, eye, moved)
    assert torch.allclose(shifted[..., 0] - grid[..., 0], torch.full_like(grid[..., 0], 2.0 / (cfg.bev_w - 1)))


def test_mlp_input_carries_intrinsics_augmentation_and_extrinsics() -> None:
    cfg = ModelConfig()
    frame = synthetic_sequence(cfg, 1)[0]
    m = preprocess.mlp_input(cfg, frame)
    assert m.shape == (1, 6, 27)
    assert torch.allclose(m[0, :, 0], frame.intrins[:, 0, 0])
    assert torch.allclose(m[0, :, 15:], torch.cat([frame.rots, frame.trans[..., None]], -1).reshape(6, 12))


def _fbbev_cross_attention(sca: DA_SpatialCrossAttention, query, value, query_pos, shapes, start, bev, depth):
    """FB-BEV's DA_SpatialCrossAttentionTRT rebatching, loop for loop (nonzero() gathers, += scatters)."""
    N, _, _, Z, _ = bev["bev_query_depth"].shape
    Bd, Nd, DC, H, W = depth.shape
    q_depth = bev["bev_query_depth"].permute(1, 0, 2, 3, 4)
    pred = depth.view(Bd * Nd, DC, H * W).permute(0, 2, 1)
    slots = torch.zeros_like(query)
    query = query + query_pos
    indexes = bev["indexes"].long()
    qr, rr, dr = (bev[k].clone() for k in ("queries_rebatch", "reference_points_rebatch", "bev_query_depth_rebatch"))
    for i, rp in enumerate(bev["reference_points_cam"]):
        sel = indexes[0, i, indexes[0, i].nonzero()][:, 0]
        n = torch.arange(sel.shape[0])
        qr[0, i, n] = query[0, sel]
        dr[0, i, n] = q_depth[0, i, sel]
        rr[0, i, n] = rp[0, sel]
    kv = value.permute(2, 0, 1, 3).reshape(N, -1, query.shape[-1])
    bins = torch.clip(torch.floor((dr - sca.dbound[0]) / sca.dbound[2]), 0, DC - 1).long()
    one_hot = torch.nn.functional.one_hot(bins.view(*bins.shape[:4]), DC).float()
    L = indexes.shape[2]
    out = sca.deformable_attention(qr.view(N, L, -1), kv, rr.view(N, L, Z, 2), shapes, start,
                                   one_hot.view(N, L, Z, DC), pred).view(1, N, L, -1)
    for i in range(N):
        sel = indexes[0, i, indexes[0, i].nonzero()][:, 0]
        slots[0, sel] += out[0, i, torch.arange(sel.shape[0])]
    count = torch.clamp((bev["per_cam_mask_list"].sum(-1) > 0).permute(1, 2, 0).sum(-1), min=1.0)
    return sca.output_proj(slots / count[..., None])


def test_cross_attention_gathers_like_fbbev_without_data_dependent_shapes() -> None:
    torch.manual_seed(0)
    cams, q, z, c, h, w, dc = 3, 40, 4, 16, 5, 7, 10
    sca = DA_SpatialCrossAttention(c, cams, (2.0, 7.0, 0.5), DA_MSDeformableAttention(c, 2, 1, 8, z)).eval()
    mask = torch.rand(cams, 1, q, z) > 0.6
    mask[:, 0, 0] = True  # query 0 visible everywhere: FB-BEV's nonzero() drops it, so must we
    lists = [mask[i, 0].any(-1).nonzero()[:, 0] for i in range(cams)]
    L = max(len(x) for x in lists)
    indexes = torch.zeros(1, cams, L, dtype=torch.int32)
    for i, x in enumerate(lists):
        indexes[0, i, :len(x)] = x
    bev = {
        "bev_query_depth": torch.rand(cams, 1, q, z, 1) * 6 + 2,
        "reference_points_cam": torch.rand(cams, 1, q, z, 2),
        "per_cam_mask_list": mask, "indexes": indexes, "queries_rebatch": torch.zeros(1, cams, L, c),
        "reference_points_rebatch": torch.zeros(1, cams, L, z, 2),
        "bev_query_depth_rebatch": torch.zeros(1, cams, L, z, 1),
    }
    query, pos = torch.randn(1, q, c), torch.randn(1, q, c)
    value = torch.randn(cams, h * w, 1, c)
    depth = torch.softmax(torch.randn(1, cams, dc, h, w), 2)
    shapes = torch.tensor([[h, w]], dtype=torch.int32)
    start = torch.zeros(1, dtype=torch.int32)
    with torch.no_grad():
        ours = sca(query, value, pos, shapes, start, bev, depth)
        theirs = _fbbev_cross_attention(sca, query, value, pos, shapes, start, bev, depth) + query
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_onnx_trace_leaves_the_model_in_eval_mode(tmp_path: Path) -> None:
    """The exporter restores the traced module's mode recursively; later reference forwards must still
    run BatchNorm on running statistics and Dropout as identity."""
    import warnings

    from fbocc.model.network import TraceRecorder

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Dropout(0.5))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = self.body(x)
            return y, y.sum(-1)

    inner = Net().eval()
    x = torch.randn(3, 4)
    recorder = TraceRecorder(inner)  # type: ignore[arg-type]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(recorder, (x,), str(tmp_path / "m.onnx"), dynamo=False, opset_version=16)
    assert not any(m.training for m in inner.modules())
    traced = recorder.take()  # what the trace computed is what the eval-mode model computes afterwards
    with torch.no_grad():
        torch.testing.assert_close(traced[0], inner(x)[0])
