"""Host-side preprocessing: everything FB-OCC's TensorRT graph takes as inputs besides the images.

Each function follows the FB-BEV function named in its docstring (same math, same dtypes), written for a
single sample (batch 1) as the deployment runs it. Inputs are the nuScenes-style calibration of one
frame (`CameraFrame`); outputs are torch tensors on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fbocc.model.config import ModelConfig


@dataclass
class CameraFrame:
    """One time step: normalized images and the calibration BEVDet's `img_inputs` carries."""

    imgs: torch.Tensor  # [N, 3, H, W] float32, normalized
    rots: torch.Tensor  # [N, 3, 3] camera -> ego rotation
    trans: torch.Tensor  # [N, 3] camera -> ego translation
    intrins: torch.Tensor  # [N, 3, 3]
    post_rots: torch.Tensor  # [N, 3, 3] image-augmentation rotation (resize/crop)
    post_trans: torch.Tensor  # [N, 3]
    bda: torch.Tensor  # [3, 3] BEV augmentation (identity at test time)
    curr_to_prev_ego_rt: torch.Tensor  # [4, 4] current ego frame -> previous ego frame
    start_of_sequence: bool
    sequence_id: int

    def cam_params(self) -> tuple[torch.Tensor, ...]:
        """(rots, trans, intrins, post_rots, post_trans, bda) with the batch dimension, as FB-BEV passes them."""
        return (self.rots[None], self.trans[None], self.intrins[None], self.post_rots[None],
                self.post_trans[None], self.bda[None])


def mlp_input(cfg: ModelConfig, frame: CameraFrame) -> torch.Tensor:
    """`CM_DepthNet.get_mlp_input`: 27 camera parameters per camera, [1, N, 27]."""
    rot, tran, intrin, post_rot, post_tran, bda = frame.cam_params()
    B, N = rot.shape[:2]
    bda = bda.view(B, 1, 3, 3).expand(B, N, 3, 3)
    feats = torch.stack([
        intrin[:, :, 0, 0], intrin[:, :, 1, 1], intrin[:, :, 0, 2], intrin[:, :, 1, 2],
        post_rot[:, :, 0, 0], post_rot[:, :, 0, 1], post_tran[:, :, 0],
        post_rot[:, :, 1, 0], post_rot[:, :, 1, 1], post_tran[:, :, 1],
        bda[:, :, 0, 0], bda[:, :, 0, 1], bda[:, :, 1, 0], bda[:, :, 1, 1], bda[:, :, 2, 2],
    ], dim=-1)
    sensor2ego = torch.cat([rot, tran.reshape(B, N, 3, 1)], dim=-1).reshape(B, N, -1)
    return torch.cat([feats, sensor2ego], dim=-1).float()


def frustum(cfg: ModelConfig) -> torch.Tensor:
    """`LSSViewTransformerFunction3D.create_frustum`: [D, Hf, Wf, 3] image (u, v, depth) points."""
    H_in, W_in = cfg.input_size
    H_f, W_f = cfg.feat_size
    d = torch.arange(*cfg.depth_bound, dtype=torch.float).view(-1, 1, 1).expand(-1, H_f, W_f)
    D = d.shape[0]
    x = torch.linspace(0, W_in - 1, W_f, dtype=torch.float).view(1, 1, W_f).expand(D, H_f, W_f)
    y = torch.linspace(0, H_in - 1, H_f, dtype=torch.float).view(1, H_f, 1).expand(D, H_f, W_f)
    return torch.stack((x, y, d), -1)


def lidar_coor(cfg: ModelConfig, frame: CameraFrame) -> torch.Tensor:
    """`get_lidar_coor`: frustum points in ego coordinates, [1, N, D, Hf, Wf, 3]."""
    rots, trans, cam2imgs, post_rots, post_trans, bda = frame.cam_params()
    B, N, _ = trans.shape
    points = frustum(cfg).to(rots) - post_trans.view(B, N, 1, 1, 1, 3)
    points = torch.inverse(post_rots).view(B, N, 1, 1, 1, 3, 3).matmul(points.unsqueeze(-1))
    points = torch.cat((points[..., :2, :] * points[..., 2:3, :], points[..., 2:3, :]), 5)
    combine = rots.matmul(torch.inverse(cam2imgs))
    points = combine.view(B, N, 1, 1, 1, 3, 3).matmul(points).squeeze(-1)
    points = points + trans.view(B, N, 1, 1, 1, 3)
    return bda.view(B, 1, 1, 1, 1, 3, 3).matmul(points.unsqueeze(-1)).squeeze(-1)


def bev_pool_inputs(cfg: ModelConfig, frame: CameraFrame) -> dict[str, torch.Tensor]:
    """`voxel_pooling_prepare_v2`: ranks_bev/depth/feat of the frustum points inside the grid, sorted by
    voxel, and the start and length of each voxel's run."""
    coor = lidar_coor(cfg, frame)
    B, N, D, H, W, _ = coor.shape
    num_points = B * N * D * H * W
    ranks_depth = torch.arange(0, num_points, dtype=torch.int)
    ranks_feat = torch.arange(0, num_points // D, dtype=torch.int).reshape(B, N, 1, H, W)
    ranks_feat = ranks_feat.expand(B, N, D, H, W).flatten()
    lower = torch.tensor([cfg.grid_x[0], cfg.grid_y[0], cfg.grid_z[0]])
    interval = torch.tensor([cfg.grid_x[2], cfg.grid_y[2], cfg.grid_z[2]])
    size = torch.tensor([(r[1] - r[0]) / r[2] for r in (cfg.grid_x, cfg.grid_y, cfg.grid_z)])
    vox = ((coor - lower.to(coor)) / interval.to(coor)).long().view(num_points, 3)
    batch_idx = torch.arange(0, B).reshape(B, 1).expand(B, num_points // B).reshape(num_points, 1).to(vox)
    vox = torch.cat((vox, batch_idx), 1)
    kept = ((vox[:, 0] >= 0) & (vox[:, 0] < size[0]) & (vox[:, 1] >= 0) & (vox[:, 1] < size[1])
            & (vox[:, 2] >= 0) & (vox[:, 2] < size[2]))
    vox, ranks_depth, ranks_feat = vox[kept], ranks_depth[kept], ranks_feat[kept]
    if vox.shape[0] == 0:
        raise ValueError("no frustum point falls inside the BEV grid: check the camera calibration")
    sx, sy, sz = (int(v) for v in size)
    ranks_bev = vox[:, 3] * (sz * sy * sx) + vox[:, 2] * (sy * sx) + vox[:, 1] * sx + vox[:, 0]
    order = ranks_bev.argsort(stable=True)
    ranks_bev, ranks_depth, ranks_feat = ranks_bev[order], ranks_depth[order], ranks_feat[order]
    keep = torch.ones(ranks_bev.shape[0], dtype=torch.bool)
    keep[1:] = ranks_bev[1:] != ranks_bev[:-1]
    interval_starts = torch.where(keep)[0].int()
    interval_lengths = torch.zeros_like(interval_starts)
    interval_lengths[:-1] = interval_starts[1:] - interval_starts[:-1]
    interval_lengths[-1] = ranks_bev.shape[0] - interval_starts[-1]
    return {"ranks_depth": ranks_depth.int(), "ranks_feat": ranks_feat.int(), "ranks_bev": ranks_bev.int(),
            "interval_starts": interval_starts.int(), "interval_lengths": interval_lengths.int()}


def reference_points_3d(cfg: ModelConfig) -> torch.Tensor:
    """`bevformer_encoder.get_reference_points(dim='3d')`: pillar anchor centres, [Y, X, Z, 3] metres."""
    xb, yb, zb = cfg.grid_x, cfg.grid_y, cfg.bevformer_z
    X = torch.arange(*xb, dtype=torch.float) + xb[-1] / 2
    Y = torch.arange(*yb, dtype=torch.float) + yb[-1] / 2
    Z = torch.arange(*zb, dtype=torch.float) + zb[-1] / 2
    Yg, Xg, Zg = torch.meshgrid([Y, X, Z], indexing="ij")
    return torch.stack([Xg, Yg, Zg], dim=-1)


def reference_points_2d(cfg: ModelConfig) -> torch.Tensor:
    """`get_reference_points(dim='2d')`: normalized BEV cell centres, [1, H*W, 1, 2]."""
    H, W = cfg.bev_h, cfg.bev_w
    ref_y, ref_x = torch.meshgrid(torch.linspace(0.5, H - 0.5, H), torch.linspace(0.5, W - 0.5, W), indexing="ij")
    ref_2d = torch.stack((ref_x.reshape(-1)[None] / W, ref_y.reshape(-1)[None] / H), -1)
    return ref_2d.unsqueeze(2)


def point_sampling(cfg: ModelConfig, frame: CameraFrame) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`bevformer_encoder.point_sampling`: anchors projected into each image.

    Returns reference_points_cam [N, 1, H*W, Z, 2] (normalized u, v), the visibility mask [N, 1, H*W, Z]
    and the anchors' camera depth [N, 1, H*W, Z, 1].
    """
    rots, trans, intrins, post_rots, post_trans, bda = frame.cam_params()
    B, N, _ = trans.shape
    eps = 1e-5
    ogfH, ogfW = cfg.input_size
    ref = reference_points_3d(cfg)[None, None].repeat(B, N, 1, 1, 1, 1)
    ref = torch.inverse(bda).view(B, 1, 1, 1, 1, 3, 3).matmul(ref.unsqueeze(-1)).squeeze(-1)
    ref = ref - trans.view(B, N, 1, 1, 1, 3)
    combine = rots.matmul(torch.inverse(intrins)).inverse()
    cam = combine.view(B, N, 1, 1, 1, 3, 3).matmul(ref.unsqueeze(-1)).squeeze(-1)
    cam = torch.cat([cam[..., 0:2] / torch.maximum(cam[..., 2:3], torch.ones_like(cam[..., 2:3]) * eps),
                     cam[..., 2:3]], 5)
    cam = post_rots.view(B, N, 1, 1, 1, 3, 3).matmul(cam.unsqueeze(-1)).squeeze(-1)
    cam = cam + post_trans.view(B, N, 1, 1, 1, 3)
    cam = torch.stack([cam[..., 0] / ogfW, cam[..., 1] / ogfH, cam[..., 2]], dim=-1)
    mask = ((cam[..., 2:3] > eps) & (cam[..., 0:1] > eps) & (cam[..., 0:1] < (1.0 - eps))
            & (cam[..., 1:2] > eps) & (cam[..., 1:2] < (1.0 - eps)))
    B, N, H, W, D, _ = cam.shape
    cam = cam.permute(1, 0, 2, 3, 4, 5).reshape(N, B, H * W, D, 3)
    mask = mask.permute(1, 0, 2, 3, 4, 5).reshape(N, B, H * W, D)
    return cam[..., :2].contiguous(), mask.contiguous(), cam[..., 2:3].contiguous()


def backward_projection_inputs(cfg: ModelConfig, frame: CameraFrame) -> dict[str, torch.Tensor]:
    """`FBOCCTRT.prepare_bwdproj_inputs` + `get_rebatch_tensors_N_indices`: per camera the visible BEV
    queries (zero-padded to the longest list) and zero rebatch buffers whose length the graph reads."""
    reference_points_cam, mask, depth = point_sampling(cfg, frame)
    lists = []
    for i in range(mask.shape[0]):
        idx = mask[i, 0].sum(-1).nonzero()[:, 0]
        lists.append(idx)
    max_len = max(1, max(len(x) for x in lists))
    indexes = torch.zeros(1, len(lists), max_len, dtype=torch.int64)
    for i, idx in enumerate(lists):
        indexes[0, i, :len(idx)] = idx
    z = reference_points_cam.shape[3]
    n = len(lists)
    return {
        "ref_2d": reference_points_2d(cfg),
        "bev_query_depth": depth,
        "reference_points_cam": reference_points_cam,
        "per_cam_mask_list": mask,
        "indexes": indexes,
        "queries_rebatch": torch.zeros(1, n, max_len, cfg.embed_dims),
        "reference_points_rebatch": torch.zeros(1, n, max_len, z, 2),
        "bev_query_depth_rebatch": torch.zeros(1, n, max_len, z, 1),
    }


def forward_augs(bda: torch.Tensor) -> torch.Tensor:
    """`generate_forward_transformation_matrix`: the 3x3 BEV augmentation as a 4x4, [1, 4, 4]."""
    out = torch.eye(4)[None].clone()
    out[0, :3, :3] = bda
    return out


def temporal_grid(cfg: ModelConfig, history_forward_augs: torch.Tensor, current_forward_augs: torch.Tensor,
                  curr_to_prev_ego_rt: torch.Tensor) -> torch.Tensor:
    """`FBOCC.generate_grid`: where each current voxel lies in the previous frame's volume, normalized to
    [-1, 1] (x, y, z), [1, H, W, Z, 3]."""
    n, z, h, w = 1, cfg.bev_z, cfg.bev_h, cfg.bev_w
    xs = torch.linspace(0, w - 1, w).view(1, w, 1).expand(h, w, z)
    ys = torch.linspace(0, h - 1, h).view(h, 1, 1).expand(h, w, z)
    zs = torch.linspace(0, z - 1, z).view(1, 1, z).expand(h, w, z)
    grid = torch.stack((xs, ys, zs, torch.ones_like(xs)), -1).view(1, h, w, z, 4).expand(n, h, w, z, 4)
    grid = grid.reshape(n, h, w, z, 4, 1)
    rows = (cfg.grid_x, cfg.grid_y, cfg.grid_z)
    feat2bev = torch.zeros((4, 4))
    for i, (lo, _hi, step) in enumerate(rows):
        feat2bev[i, i] = step
        feat2bev[i, 3] = (lo + step / 2.0) - step / 2.0  # bx - dx/2, as FB-BEV writes it
    feat2bev[3, 3] = 1
    feat2bev = feat2bev.view(1, 4, 4)
    rt_flow = (torch.inverse(feat2bev) @ history_forward_augs @ curr_to_prev_ego_rt.view(1, 4, 4)
               @ torch.inverse(current_forward_augs) @ feat2bev)
    grid = rt_flow.view(n, 1, 1, 1, 4, 4) @ grid
    normalize = torch.tensor([w - 1.0, h - 1.0, z - 1.0])
    return grid[:, :, :, :, :3, 0] / normalize.view(1, 1, 1, 1, 3) * 2.0 - 1.0


class SequencePreprocessor:
    """Turns frames in sequence order into graph inputs; keeps the host-side temporal state (the previous
    frame's BEV augmentation) that the grid needs. The network's own history travels through the graph."""

    def __init__(self, cfg: ModelConfig, index_dtype: str = "int32"):
        self.cfg = cfg
        self.index_dtype = np.dtype(index_dtype)
        self._history_forward_augs: torch.Tensor | None = None

    def initial_history(self, sequence_id: int) -> dict[str, np.ndarray]:
        """History inputs for the first frame (ignored by the graph when start_of_sequence is set)."""
        cfg = self.cfg
        return {
            "history_bev": np.zeros((1, cfg.history_channels, cfg.bev_z, cfg.bev_h, cfg.bev_w), np.float32),
            "history_seq_ids": np.array([sequence_id], dtype=np.int32),
            "history_sweep_time": np.zeros((1, cfg.history_cat_num), dtype=np.int32),
        }

    def inputs(self, frame: CameraFrame) -> dict[str, np.ndarray]:
        """Every non-history graph input of one frame, as numpy arrays in their export dtypes."""
        cfg = self.cfg
        augs = forward_augs(frame.bda)
        if frame.start_of_sequence or self._history_forward_augs is None:
            self._history_forward_augs = augs.clone()
        grid = temporal_grid(cfg, self._history_forward_augs, augs, frame.curr_to_prev_ego_rt)
        self._history_forward_augs = augs.clone()
        out: dict[str, torch.Tensor] = {"imgs": frame.imgs[None].float(), "mlp_input": mlp_input(cfg, frame)}
        out.update(bev_pool_inputs(cfg, frame))
        out.update(backward_projection_inputs(cfg, frame))
        out["start_of_sequence"] = torch.tensor([bool(frame.start_of_sequence)])
        out["grid"] = grid.float()
        arrays = {k: v.numpy() for k, v in out.items()}
        for name in ("ranks_depth", "ranks_feat", "ranks_bev", "interval_starts", "interval_lengths", "indexes"):
            arrays[name] = arrays[name].astype(self.index_dtype)
        for name in ("imgs", "mlp_input", "ref_2d", "bev_query_depth", "reference_points_cam", "queries_rebatch",
                     "reference_points_rebatch", "bev_query_depth_rebatch", "grid"):
            arrays[name] = arrays[name].astype(np.float32)
        return arrays
