"""The hyper-parameters of an FB-OCC variant, named as in FB-BEV's config files."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

Bound = tuple[float, float, float]


@dataclass(frozen=True)
class ModelConfig:
    """What `occupancy_configs/fb_occ/fbocc-r50-cbgs_depth_16f_16x4_20e.py` fixes about the network."""

    name: str = "fbocc-r50-cbgs_depth_16f_16x4_20e"
    num_cams: int = 6
    input_size: tuple[int, int] = (256, 704)  # data_config['input_size'] (H, W)
    src_size: tuple[int, int] = (900, 1600)
    downsample: int = 16
    grid_x: Bound = (-40.0, 40.0, 0.8)
    grid_y: Bound = (-40.0, 40.0, 0.8)
    grid_z: Bound = (-1.0, 5.4, 0.8)
    depth_bound: Bound = (2.0, 42.0, 0.5)
    bevformer_z: Bound = (-1.0, 5.4, 1.6)  # grid_config_bevformer['z']: 4 anchors per pillar
    pc_range: tuple[float, ...] = (-40.0, -40.0, -1.0, 40.0, 40.0, 5.4)
    bev_h: int = 100
    bev_w: int = 100
    bev_z: int = 8
    img_channels: int = 256  # _dim_: FPN output
    depth_mid_channels: int = 512
    embed_dims: int = 80  # numC_Trans
    pos_dim: int = 40
    ffn_dim: int = 320
    self_attn_heads: int = 8
    self_attn_points: int = 4
    cross_attn_heads: int = 8
    cross_attn_points: int = 8
    history_cat_num: int = 16
    history_sweep_freq: float = 0.5
    voxel_channels: tuple[int, ...] = (64, 128, 256)
    voxel_strides: tuple[int, ...] = (1, 2, 2)
    voxel_out_channels: int = 256
    num_classes: int = 19
    occ_size: tuple[int, int, int] = (200, 200, 16)
    img_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    img_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def depth_channels(self) -> int:
        lo, hi, step = self.depth_bound
        return round((hi - lo) / step)

    @property
    def feat_size(self) -> tuple[int, int]:
        return self.input_size[0] // self.downsample, self.input_size[1] // self.downsample

    @property
    def num_z_anchors(self) -> int:
        lo, hi, step = self.bevformer_z
        return math.ceil((hi - lo) / step - 1e-6)  # the length of torch.arange(lo, hi, step)

    @property
    def history_channels(self) -> int:
        return self.embed_dims * self.history_cat_num


# "fbocc-tiny": FB-OCC's structure (ResNet-50, depth net, three plugin ops, history, 3D encoder, head) at small
# sizes, for tests that need a whole export in seconds; random weights only (no checkpoint has its shapes).
TINY = ModelConfig(
    name="fbocc-tiny", input_size=(64, 176), grid_x=(-40.0, 40.0, 3.2), grid_y=(-40.0, 40.0, 3.2),
    grid_z=(-1.0, 5.4, 3.2), depth_bound=(2.0, 42.0, 2.0), bev_h=25, bev_w=25, bev_z=2, img_channels=32,
    depth_mid_channels=32, embed_dims=16, pos_dim=8, ffn_dim=32, history_cat_num=2, voxel_channels=(16, 32, 64),
    voxel_out_channels=32, occ_size=(50, 50, 4))
PRESETS: dict[str, ModelConfig] = {"fbocc-r50-16f": ModelConfig(), "fbocc-tiny": TINY}
