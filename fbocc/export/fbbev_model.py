"""FB-OCC's `_trt` model built and run by a user's FB-BEV tree (`fbocc.export.fbbev` imports it): its config,
with our `ModelConfig` expressed as overrides of that config; its own host-side preparation
(`prepare_mlp_inputs`, `prepare_bevpool_inputs`, `prepare_bwdproj_inputs`, `generate_grid`); its own
`forward_trt`, with the intermediate results of each stage recorded (names of fbocc.model.stages.STAGES).

Imports FB-BEV, mmcv and torch: only `export --fbbev`, the parity check and the golden generator load it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fbocc.errors import ConfigError
from fbocc.export.fbbev import TRT_CONFIG, FBBEVTree, activate, cpu_as_cuda
from fbocc.model.config import ModelConfig
from fbocc.model.preprocess import CameraFrame
from fbocc.model.stages import detached, first_level


def _grid(cfg: ModelConfig) -> dict[str, list[float]]:
    return {"x": list(cfg.grid_x), "y": list(cfg.grid_y), "z": list(cfg.grid_z), "depth": list(cfg.depth_bound)}


def config_overrides(cfg: ModelConfig) -> dict[str, Any]:
    """Our ModelConfig as overrides of FB-BEV's `_trt` config, in mmcv's dotted-key form. Identity for the
    full-size preset; what shrinks the network for the committed goldens."""
    grid = _grid(cfg)
    bevformer_grid = {"x": list(cfg.grid_x), "y": list(cfg.grid_y), "z": list(cfg.bevformer_z)}
    voxel = list(cfg.voxel_channels)
    layer = "model.backward_projection.transformer.encoder.transformerlayers"
    data_config = {"cams": [f"CAM_{i}" for i in range(cfg.num_cams)], "Ncams": cfg.num_cams,
                   "input_size": tuple(cfg.input_size), "src_size": tuple(cfg.src_size)}
    return {
        "model.history_cat_num": cfg.history_cat_num,
        "model.single_bev_num_channels": cfg.embed_dims,
        "model.img_backbone.pretrained": None,
        "model.img_neck.out_channels": cfg.img_channels,
        "model.depth_net.in_channels": cfg.img_channels,
        "model.depth_net.context_channels": cfg.embed_dims,
        "model.depth_net.depth_channels": cfg.depth_channels,
        "model.depth_net.mid_channels": cfg.depth_mid_channels,
        "model.depth_net.grid_config": grid,
        "model.forward_projection.grid_config": grid,
        "model.forward_projection.input_size": tuple(cfg.input_size),
        "model.backward_projection.bev_h": cfg.bev_h,
        "model.backward_projection.bev_w": cfg.bev_w,
        "model.backward_projection.in_channels": cfg.embed_dims,
        "model.backward_projection.out_channels": cfg.embed_dims,
        "model.backward_projection.pc_range": list(cfg.pc_range),
        "model.backward_projection.transformer.embed_dims": cfg.embed_dims,
        "model.backward_projection.transformer.encoder.pc_range": list(cfg.pc_range),
        "model.backward_projection.transformer.encoder.grid_config": bevformer_grid,
        "model.backward_projection.transformer.encoder.data_config": data_config,
        f"{layer}.feedforward_channels": cfg.ffn_dim,
        f"{layer}.ffn_cfgs.feedforward_channels": cfg.ffn_dim,
        "model.backward_projection.positional_encoding.num_feats": cfg.pos_dim,
        "model.backward_projection.positional_encoding.row_num_embed": cfg.bev_h,
        "model.backward_projection.positional_encoding.col_num_embed": cfg.bev_w,
        "model.img_bev_encoder_backbone.n_input_channels": cfg.embed_dims,
        "model.img_bev_encoder_backbone.block_inplanes": voxel,
        "model.img_bev_encoder_backbone.block_strides": list(cfg.voxel_strides),
        "model.img_bev_encoder_neck.in_channels": voxel,
        "model.img_bev_encoder_neck.out_channels": cfg.voxel_out_channels,
        "model.occupancy_head.final_occ_size": list(cfg.occ_size),
        "model.occupancy_head.in_channels": [cfg.voxel_out_channels] * len(voxel),
        "model.occupancy_head.out_channel": cfg.num_classes,
        "model.occupancy_head.point_cloud_range": list(cfg.pc_range),
        "grid_size": (1, cfg.embed_dims, cfg.bev_z, cfg.bev_h, cfg.bev_w),
        "data_config.input_size": tuple(cfg.input_size),  # what the deployment scripts read for the images
        "data_config.src_size": tuple(cfg.src_size),
    }


def _attention_overrides(config: Any, cfg: ModelConfig) -> None:
    """attn_cfgs is a list, which mmcv's dotted keys do not reach."""
    attn = config.model.backward_projection.transformer.encoder.transformerlayers.attn_cfgs
    attn[0].update(embed_dims=cfg.embed_dims, num_heads=cfg.self_attn_heads, num_points=cfg.self_attn_points)
    attn[1].update(embed_dims=cfg.embed_dims, dbound=list(cfg.depth_bound), pc_range=list(cfg.pc_range))
    attn[1].deformable_attention.update(embed_dims=cfg.embed_dims, num_heads=cfg.cross_attn_heads,
                                        num_points=cfg.cross_attn_points)


def load_config(tree: FBBEVTree, config_file: Path | None = None, cfg: ModelConfig | None = None) -> Any:
    """The mmcv Config of `config_file` (default: the tree's `_trt` config), with `cfg` applied if given."""
    activate(tree)
    from mmcv import Config

    path = Path(config_file) if config_file is not None else tree.root / TRT_CONFIG
    if not path.is_file():
        raise ConfigError(f"FB-BEV config {path} does not exist", where=str(path),
                          fix=f"pass a config of the tree, e.g. {TRT_CONFIG}")
    config = Config.fromfile(str(path))
    config.model.train_cfg = None
    if cfg is not None:
        config.merge_from_dict(config_overrides(cfg))
        _attention_overrides(config, cfg)
    return config


def build(tree: FBBEVTree, config: Any, *, init_weights: bool = False, seed: int = 0) -> Any:
    """The `_trt` detector in eval mode, `forward = forward_trt` as deployment/pth2onnx.py sets it.
    With `init_weights`, upstream's own initialisation (torch seeded with `seed`)."""
    activate(tree)
    from mmdet3d.models.builder import build_model

    torch.manual_seed(seed)
    with cpu_as_cuda():
        model = build_model(config.model, test_cfg=config.get("test_cfg"))
        if init_weights:
            model.init_weights()
    model.forward = model.forward_trt
    _bind_bev_grid(model, config)
    return model.eval()


def _bind_bev_grid(model: Any, config: Any) -> None:
    """The deployment wrapper of BEVPoolV2 hard-codes a 100 x 100 x 8 volume (`bev_pool_v2(out_height=100,
    out_width=100)`, `(B, 8, H, W, C)` inside); for another grid, call the same kernel wrapper
    (`bev_pool_v2_gpu`) with the config's volume, as FB-BEV's training path does from its grid."""
    _, _, z, h, w = config.grid_size
    if (z, h, w) == (8, 100, 100):
        return
    import importlib

    # the package re-exports the function under the module's name: take the module itself
    module = importlib.import_module("mmdet3d.models.fbbev.custom_ops.bev_pool_v2")

    def bev_pool(depth: Any, feat: Any, ranks_depth: Any, ranks_feat: Any, ranks_bev: Any, starts: Any,
                 lengths: Any) -> Any:
        shape = (depth.shape[0], z, h, w, feat.shape[-1])
        return module.bev_pool_v2_gpu(depth, feat, ranks_depth.long(), ranks_feat.long(), ranks_bev.long(),
                                      shape, starts.long(), lengths.long())

    model.bev_pool_v2 = bev_pool


def cam_params(frame: CameraFrame) -> list[torch.Tensor]:
    """FB-BEV's `img_inputs[1:7]` for one frame: rots, trans, intrins, post_rots, post_trans, bda (batch 1)."""
    return list(frame.cam_params())


class UpstreamSequence:
    """Runs frames through upstream's preparation and `forward_trt` as pth2onnx.py does for its first frame,
    carrying the history outputs into the next frame. `history_age` "deployment" feeds upstream's own
    `output_history_sweep_time` back (every age 0); "training" feeds it aged as FB-OCC's training forward
    does (+1, reset at a sequence start), which upstream's TensorRT forward then prepends 0 to."""

    def __init__(self, model: Any, config: Any, history_age: str = "deployment"):
        if history_age not in ("deployment", "training"):
            raise ValueError(f"history_age {history_age!r}: 'deployment' or 'training'")
        self.model, self.config, self.history_age = model, config, history_age
        self._history: dict[str, torch.Tensor] | None = None
        self._history_augs: torch.Tensor | None = None

    def prepare(self, frame: CameraFrame) -> dict[str, torch.Tensor]:
        """Upstream's 15 non-history inputs plus start_of_sequence and grid, as torch tensors."""
        m = self.model
        params = cam_params(frame)
        with torch.no_grad(), cpu_as_cuda():
            mlp = m.prepare_mlp_inputs(params)
            ranks_bev, ranks_depth, ranks_feat, starts, lengths = m.prepare_bevpool_inputs(params)
            (ref_2d, bev_query_depth, reference_points_cam, per_cam_mask_list, indexes, _index_len,
             queries_rebatch, reference_points_rebatch, bev_query_depth_rebatch) = m.prepare_bwdproj_inputs(params)
            augs = m.generate_forward_augs(params[-1])
            if frame.start_of_sequence or self._history_augs is None:
                self._history_augs = augs.clone()
            grid = m.generate_grid(self._history_augs, augs, frame.curr_to_prev_ego_rt[None],
                                   self.config.grid_size, dtype=augs.dtype, device=augs.device)
            self._history_augs = augs.clone()
        return {
            "imgs": frame.imgs[None].float(), "mlp_input": mlp, "ranks_depth": ranks_depth, "ranks_feat": ranks_feat,
            "ranks_bev": ranks_bev, "interval_starts": starts, "interval_lengths": lengths, "ref_2d": ref_2d,
            "bev_query_depth": bev_query_depth, "reference_points_cam": reference_points_cam,
            "per_cam_mask_list": per_cam_mask_list, "indexes": indexes, "queries_rebatch": queries_rebatch,
            "reference_points_rebatch": reference_points_rebatch,
            "bev_query_depth_rebatch": bev_query_depth_rebatch,
            "start_of_sequence": torch.BoolTensor([bool(frame.start_of_sequence)]), "grid": grid,
        }

    def history_inputs(self, frame: CameraFrame) -> dict[str, torch.Tensor]:
        """The history inputs of `frame`: zeros at the first frame (as pth2onnx.py), else the last outputs."""
        if self._history is None or frame.start_of_sequence:
            _, channels, z, h, w = self.config.grid_size
            shape = [1, self.model.history_cat_num * channels, z, h, w]
            return {"history_bev": torch.zeros(shape),
                    "history_seq_ids": torch.tensor([frame.sequence_id], dtype=torch.int32),
                    "history_sweep_time": torch.zeros(1, self.model.history_cat_num, dtype=torch.int32)}
        hist = dict(self._history)
        if self.history_age == "training":
            hist["history_sweep_time"] = hist["history_sweep_time"] + 1
        return hist

    def run(self, inputs: dict[str, torch.Tensor], names: tuple[str, ...]) -> tuple[list[torch.Tensor],
                                                                                   dict[str, Any]]:
        """forward_trt on the inputs in `names` order; returns (outputs, recorded stages)."""
        with torch.no_grad(), cpu_as_cuda(), record_upstream_stages(self.model) as stages:
            outputs = self.model([inputs[n] for n in names])  # forward_trt(inputs): one list, as pth2onnx.py passes it
        outputs = [o.detach().clone() for o in outputs]
        self._history = {"history_bev": outputs[1], "history_seq_ids": outputs[2],
                         "history_sweep_time": outputs[3].to(torch.int32)}
        return outputs, stages


@contextlib.contextmanager
def record_upstream_stages(model: Any) -> Iterator[dict[str, Any]]:
    """Records each stage's result during upstream's forward (hooks and instance wrappers, removed after)."""
    stages: dict[str, Any] = {}
    handles = []

    def keep(name: str, pick: Any = lambda o: o) -> Any:
        return lambda _m, _i, out: stages.__setitem__(name, detached(pick(out)))

    handles.append(model.img_neck.register_forward_hook(keep("image_features", first_level)))
    handles.append(model.depth_net.register_forward_hook(keep("context", lambda o: o[0])))
    handles.append(model.depth_net.register_forward_hook(keep("depth", lambda o: o[1])))
    handles.append(model.img_bev_encoder_neck.register_forward_hook(keep("voxel_features")))
    saved = {n: model.__dict__.get(n) for n in ("bev_pool_v2", "backward_projection_trt", "fuse_history_trt")}

    def wrap(attr: str, name: str) -> None:
        original = getattr(model, attr)

        @functools.wraps(original)
        def call(*a: Any, **k: Any) -> Any:
            out = original(*a, **k)
            stages[name] = detached(out)
            return out

        setattr(model, attr, call)

    wrap("bev_pool_v2", "bev_pool")
    wrap("backward_projection_trt", "backward_projection")
    wrap("fuse_history_trt", "fused_bev")
    try:
        yield stages
    finally:
        for h in handles:
            h.remove()
        for n, v in saved.items():
            if v is None:
                model.__dict__.pop(n, None)
            else:
                model.__dict__[n] = v
        if isinstance(stages.get("fused_bev"), tuple):
            stages["fused_bev"] = stages["fused_bev"][0]


def numpy_inputs(inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Inputs as pth2onnx.py writes them (.dat): history ids and sweep times as int32, the rest as is."""
    out = {k: v.detach().cpu().numpy().copy() for k, v in inputs.items()}
    for k in ("history_seq_ids", "history_sweep_time"):
        if k in out:
            out[k] = out[k].astype(np.int32)
    return out
