"""The FB-OCC network as its TensorRT graph runs it: 20 named inputs, 4 named outputs (history in/out)."""

from __future__ import annotations

import torch
from torch import nn

from fbocc.model import trt_ops
from fbocc.model.backward import BackwardProjection
from fbocc.model.bev import FPN3D, CustomResNet3D, OccHead
from fbocc.model.config import ModelConfig
from fbocc.model.image import CM_DepthNet, CustomFPN, ResNet

# Names and order as FB-BEV's deployment/pth2onnx.py, so existing trtexec command lines keep working.
INPUT_NAMES: tuple[str, ...] = (
    "imgs", "mlp_input", "ranks_depth", "ranks_feat", "ranks_bev", "interval_starts", "interval_lengths",
    "ref_2d", "bev_query_depth", "reference_points_cam", "per_cam_mask_list", "indexes", "queries_rebatch",
    "reference_points_rebatch", "bev_query_depth_rebatch", "start_of_sequence", "grid", "history_bev",
    "history_seq_ids", "history_sweep_time",
)
OUTPUT_NAMES: tuple[str, ...] = (
    "pred_occupancy", "output_history_bev", "output_history_seq_ids", "output_history_sweep_time",
)
# Temporal state the caller feeds back: output of frame t -> input of frame t+1.
HISTORY_PAIRS: tuple[tuple[str, str], ...] = (
    ("history_bev", "output_history_bev"), ("history_seq_ids", "output_history_seq_ids"),
    ("history_sweep_time", "output_history_sweep_time"),
)
INDEX_INPUTS: tuple[str, ...] = (
    "ranks_depth", "ranks_feat", "ranks_bev", "interval_starts", "interval_lengths", "indexes",
)
# How history_sweep_time ages (docs/parity.md): "training" as FB-OCC's trained forward (default),
# "deployment" as FB-BEV's TensorRT forward (fuse_history_trt: no +1, no reset, every age stays 0).
HISTORY_AGES: tuple[str, ...] = ("training", "deployment")
BACKWARD_INPUTS: tuple[str, ...] = (
    "ref_2d", "bev_query_depth", "reference_points_cam", "per_cam_mask_list", "indexes", "queries_rebatch",
    "reference_points_rebatch", "bev_query_depth_rebatch",
)


def _bounds(cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows = (cfg.grid_x, cfg.grid_y, cfg.grid_z)
    dx = torch.tensor([r[2] for r in rows])
    bx = torch.tensor([r[0] + r[2] / 2.0 for r in rows])
    nx = torch.tensor([(r[1] - r[0]) / r[2] for r in rows])
    return dx, bx, nx


class LSSViewTransformerFunction3D(nn.Module):
    """Forward projection. Its only state is the voxel grid (FB-BEV keeps dx/bx/nx as frozen Parameters);
    the lifting itself is BEVPoolV2 over host-computed ranks."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dx, bx, nx = _bounds(cfg)
        self.dx = nn.Parameter(dx, requires_grad=False)
        self.bx = nn.Parameter(bx, requires_grad=False)
        self.nx = nn.Parameter(nx, requires_grad=False)


class BEVPool(nn.Module):
    """The `BEVPoolV2TRT` plugin as a stage of its own (no parameters, so checkpoints are unaffected): its nodes
    are named `/bev_pool/...` in the graph, and precision tools can hook and type it like any stage."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.out_shape = (cfg.bev_h, cfg.bev_w, cfg.bev_z)

    def forward(self, depth: torch.Tensor, feat: torch.Tensor, ranks_depth: torch.Tensor, ranks_feat: torch.Tensor,
                ranks_bev: torch.Tensor, interval_starts: torch.Tensor, interval_lengths: torch.Tensor) -> torch.Tensor:
        h, w, z = self.out_shape
        return trt_ops.bev_pool_v2(depth, feat, ranks_depth, ranks_feat, ranks_bev, interval_starts,
                                   interval_lengths, h, w, z)


class HistorySampler(nn.Module):
    """The `GridSampler3DTRT` plugin that aligns the stored history to the current frame, as a stage."""

    def forward(self, history: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return trt_ops.grid_sampler3d(history, grid, "bilinear", "zeros", align_corners=True)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 1), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


class FBOCC(nn.Module):
    """FB-OCC (`FBOCCTRT.forward_trt`); parameter names match FB-BEV checkpoints."""

    def __init__(self, cfg: ModelConfig | None = None, index_dtype: torch.dtype = torch.int32,
                 history_age: str = "training"):
        super().__init__()
        cfg = cfg or ModelConfig()
        if history_age not in HISTORY_AGES:
            raise ValueError(f"history_age {history_age!r}: one of {', '.join(HISTORY_AGES)}")
        self.cfg = cfg
        self.index_dtype = index_dtype
        self.history_age = history_age
        c = cfg.embed_dims
        self.img_backbone = ResNet(50, out_indices=(2, 3))
        self.img_neck = CustomFPN((1024, 2048), cfg.img_channels, out_ids=(0,))
        self.depth_net = CM_DepthNet(cfg.img_channels, c, cfg.depth_channels, cfg.depth_mid_channels)
        self.forward_projection = LSSViewTransformerFunction3D(cfg)
        self.bev_pool = BEVPool(cfg)
        self.backward_projection = BackwardProjection(cfg)
        self.history_sampler = HistorySampler()
        self.history_keyframe_time_conv = _conv_bn_relu(c + 1, c)
        self.history_keyframe_cat_conv = _conv_bn_relu(c * (cfg.history_cat_num + 1), c)
        self.img_bev_encoder_backbone = CustomResNet3D(c, cfg.voxel_channels, cfg.voxel_strides)
        self.img_bev_encoder_neck = FPN3D(cfg.voxel_channels, cfg.voxel_out_channels)
        self.occupancy_head = OccHead((cfg.voxel_out_channels,) * len(cfg.voxel_channels), cfg.num_classes)

    def image_encoder(self, imgs: torch.Tensor) -> torch.Tensor:
        B, N, C, H, W = imgs.shape
        x = self.img_neck(self.img_backbone(imgs.reshape(B * N, C, H, W)))[0]
        return x.view(B, N, x.shape[1], x.shape[2], x.shape[3])

    def fuse_history(self, curr_bev: torch.Tensor, start_of_sequence: torch.Tensor, history_bev: torch.Tensor,
                     history_sweep_time: torch.Tensor, grid: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        c, t = cfg.embed_dims, cfg.history_cat_num
        curr_bev = curr_bev.permute(0, 1, 4, 2, 3)  # [B, C, Z, H, W]
        n, _, z, h, w = curr_bev.shape
        start = start_of_sequence.reshape(-1, 1, 1, 1, 1).to(curr_bev.dtype)
        history = start * curr_bev.repeat(1, t, 1, 1, 1) + (1.0 - start) * history_bev.to(curr_bev.dtype)
        sampled = self.history_sampler(history, 10.0 * grid.to(curr_bev.dtype).permute(0, 4, 3, 1, 2))
        if self.history_age == "training":
            # FB-OCC's fuse_history: every stored frame ages by one step; a new sequence restarts at 0.
            start_i = start_of_sequence.reshape(-1, 1).to(history_sweep_time.dtype)
            sweep = (history_sweep_time + 1) * (1 - start_i)
        else:  # "deployment": FBOCCTRT.fuse_history_trt carries the ages unchanged (all stay 0)
            sweep = history_sweep_time
        sweep = torch.cat([torch.zeros_like(sweep[:, :1]), sweep], dim=1)  # [B, 1 + T]
        feats_cat = torch.cat([curr_bev, sampled], dim=1)
        feats = feats_cat.reshape(n, t + 1, c, z, h, w)
        times = (sweep.to(curr_bev.dtype) * cfg.history_sweep_freq)[:, :, None, None, None, None]
        feats = torch.cat([feats, times.expand(n, t + 1, 1, z, h, w)], dim=2)
        feats = self.history_keyframe_time_conv(feats.reshape(n * (t + 1), c + 1, z, h, w))
        feats = self.history_keyframe_cat_conv(feats.reshape(n, (t + 1) * c, z, h, w))
        return feats.permute(0, 1, 3, 4, 2), feats_cat[:, :-c], sweep[:, :-1]

    def forward(self, imgs: torch.Tensor, mlp_input: torch.Tensor, ranks_depth: torch.Tensor,
                ranks_feat: torch.Tensor, ranks_bev: torch.Tensor, interval_starts: torch.Tensor,
                interval_lengths: torch.Tensor, ref_2d: torch.Tensor, bev_query_depth: torch.Tensor,
                reference_points_cam: torch.Tensor, per_cam_mask_list: torch.Tensor, indexes: torch.Tensor,
                queries_rebatch: torch.Tensor, reference_points_rebatch: torch.Tensor,
                bev_query_depth_rebatch: torch.Tensor, start_of_sequence: torch.Tensor, grid: torch.Tensor,
                history_bev: torch.Tensor, history_seq_ids: torch.Tensor, history_sweep_time: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        feat, depth = self.depth_net(self.image_encoder(imgs), mlp_input)
        bev_feat = self.bev_pool(depth, feat.permute(0, 1, 3, 4, 2), ranks_depth, ranks_feat, ranks_bev,
                                 interval_starts, interval_lengths)
        bev_feat = bev_feat.permute(0, 4, 2, 3, 1)  # [B, C, H, W, Z]
        bev = {
            "ref_2d": ref_2d, "bev_query_depth": bev_query_depth, "reference_points_cam": reference_points_cam,
            "per_cam_mask_list": per_cam_mask_list, "indexes": indexes, "queries_rebatch": queries_rebatch,
            "reference_points_rebatch": reference_points_rebatch, "bev_query_depth_rebatch": bev_query_depth_rebatch,
        }
        refined = self.backward_projection(feat, bev_feat.mean(-1), depth, bev, self.index_dtype)
        bev_feat = refined[..., None] + bev_feat
        bev_feat, out_history_bev, out_sweep = self.fuse_history(bev_feat, start_of_sequence, history_bev,
                                                                 history_sweep_time, grid)
        voxel_feats = self.img_bev_encoder_neck(self.img_bev_encoder_backbone(bev_feat))
        pred_occupancy = self.occupancy_head(voxel_feats)
        return pred_occupancy, out_history_bev, history_seq_ids.clone(), out_sweep


class TraceRecorder(nn.Module):
    """Wraps the model for the ONNX exporter's trace and keeps detached copies of that call's outputs, so the
    trace doubles as the reference forward of the traced sample."""

    def __init__(self, model: FBOCC):
        super().__init__()
        self.model = model
        self._outputs: list[torch.Tensor] = []
        # The exporter restores the top module's mode afterwards, recursively: a wrapper left in training
        # mode (nn.Module's default) would switch BatchNorm and Dropout of every later forward to training.
        self.eval()

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        result = self.model(*args)
        self._outputs = [t.detach().clone() for t in result]
        return result

    def take(self) -> list[torch.Tensor]:
        """The outputs of the last call (once)."""
        if not self._outputs:
            raise RuntimeError("the model was not run since the last take()")
        out, self._outputs = self._outputs, []
        return out


def build_model(cfg: ModelConfig | None = None, *, index_dtype: torch.dtype = torch.int32,
                seed: int | None = None, history_age: str = "training") -> FBOCC:
    """The network in eval mode; with `seed`, deterministic random weights (BN statistics included)."""
    if seed is not None:
        torch.manual_seed(seed)
    model = FBOCC(cfg, index_dtype=index_dtype, history_age=history_age)
    if seed is not None:
        _randomize(model, seed)
    return model.eval()


def _randomize(model: nn.Module, seed: int) -> None:
    """Weights scaled so activations neither explode nor vanish through ~70 layers (fan-in init)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("forward_projection."):
                continue
            if p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / fan_in) ** 0.5)
            elif name.endswith(".weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                assert m.running_var is not None
                m.running_mean.copy_(0.05 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(1.0 + 0.2 * torch.rand(m.running_var.shape, generator=gen))
