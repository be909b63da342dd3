"""Deterministic synthetic frames shaped like nuScenes (6 cameras, 1600x900 sources resized and cropped to
the network input as BEVDet's test pipeline does), for export without a dataset. Labelled "synthetic"."""

from __future__ import annotations

import math

import torch

from fbocc.model.config import ModelConfig
from fbocc.model.preprocess import CameraFrame

# nuScenes camera yaw (degrees, ego frame, x forward, y left) and mounting positions, approximate.
_CAMERAS = (
    ("CAM_FRONT_LEFT", 55.0, (1.52, 0.49, 1.51)),
    ("CAM_FRONT", 0.0, (1.70, 0.02, 1.51)),
    ("CAM_FRONT_RIGHT", -55.0, (1.55, -0.49, 1.52)),
    ("CAM_BACK_LEFT", 110.0, (1.04, 0.48, 1.57)),
    ("CAM_BACK", 180.0, (0.03, 0.01, 1.61)),
    ("CAM_BACK_RIGHT", -110.0, (1.05, -0.48, 1.56)),
)


def _rot_z(deg: float) -> torch.Tensor:
    a = math.radians(deg)
    return torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])


def synthetic_sequence(cfg: ModelConfig, num_frames: int, seed: int = 0, sequence_id: int = 0) -> list[CameraFrame]:
    """`num_frames` consecutive frames of one sequence: the ego drives forward 0.5 m per frame while
    turning slightly; images are smooth random patterns (normalized like BEVDet's mmlabNormalize)."""
    gen = torch.Generator().manual_seed(seed)
    # camera frame (x right, y down, z forward) -> ego frame (x forward, y left, z up)
    cam_to_ego = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    src_h, src_w = cfg.src_size
    H, W = cfg.input_size
    scale = W / src_w  # BEVDet test: resize to the input width, crop the bottom H rows
    crop_top = round(src_h * scale) - H
    rots = torch.stack([_rot_z(yaw) @ cam_to_ego for _, yaw, _ in _CAMERAS])
    trans = torch.tensor([pos for _, _, pos in _CAMERAS])
    focal = torch.tensor([1266.4, 1260.0, 1272.6, 1256.7, 809.2, 1259.5])  # CAM_BACK has the wide lens
    intrins = torch.zeros(len(_CAMERAS), 3, 3)
    intrins[:, 0, 0] = focal
    intrins[:, 1, 1] = focal
    intrins[:, 0, 2] = 816.3
    intrins[:, 1, 2] = 491.5
    intrins[:, 2, 2] = 1.0
    post_rots = torch.eye(3).repeat(len(_CAMERAS), 1, 1)
    post_rots[:, 0, 0] = scale
    post_rots[:, 1, 1] = scale
    post_trans = torch.zeros(len(_CAMERAS), 3)
    post_trans[:, 1] = -crop_top
    mean = torch.tensor(cfg.img_mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.img_std).view(1, 3, 1, 1)
    frames = []
    for t in range(num_frames):
        coarse = torch.rand(len(_CAMERAS), 3, H // 16, W // 16, generator=gen) * 255.0
        imgs = torch.nn.functional.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)
        imgs = imgs + 8.0 * torch.randn(imgs.shape, generator=gen)
        imgs = (imgs.clamp(0, 255) - mean) / std
        yaw = 1.5  # degrees per frame
        motion = torch.eye(4)
        motion[:3, :3] = _rot_z(yaw)
        motion[0, 3] = 0.5
        frames.append(CameraFrame(
            imgs=imgs.float(), rots=rots.clone(), trans=trans.clone(), intrins=intrins.clone(),
            post_rots=post_rots.clone(), post_trans=post_trans.clone(), bda=torch.eye(3),
            curr_to_prev_ego_rt=motion if t > 0 else torch.eye(4), start_of_sequence=(t == 0),
            sequence_id=sequence_id))
    return frames
