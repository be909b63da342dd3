"""Voxel side: FB-BEV's `CustomResNet3D` (ResNet-18 style), `FPN3D` and the occupancy head `OccHead`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fbocc.model.image import ConvModule


class BasicBlock3D(nn.Module):
    """FB-BEV resnet3d BasicBlock: 3x3x3 convs with bias, BN3d."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.downsample = downsample
        self.conv1 = nn.Conv3d(in_planes, planes, 3, stride=stride, padding=1, bias=True)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, padding=1, bias=True)
        self.bn2 = nn.BatchNorm3d(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class CustomResNet3D(nn.Module):
    """3D ResNet-18 over the (X, Y, Z) voxel grid, returning every stage."""

    def __init__(self, n_input_channels: int, block_inplanes: tuple[int, ...], block_strides: tuple[int, ...],
                 blocks_per_stage: int = 2):
        super().__init__()
        in_planes = block_inplanes[0]
        self.input_proj = nn.Sequential(
            nn.Conv3d(n_input_channels, in_planes, 1, bias=False), nn.BatchNorm3d(in_planes), nn.ReLU(inplace=True))
        self.layers = nn.ModuleList()
        for planes, stride in zip(block_inplanes, block_strides, strict=True):
            downsample = None
            if stride != 1 or in_planes != planes:
                downsample = nn.Sequential(nn.Conv3d(in_planes, planes, 1, stride=stride, bias=True),
                                           nn.BatchNorm3d(planes))
            blocks = [BasicBlock3D(in_planes, planes, stride, downsample)]
            in_planes = planes
            blocks += [BasicBlock3D(in_planes, planes) for _ in range(1, blocks_per_stage)]
            self.layers.append(nn.Sequential(*blocks))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.input_proj(x)
        outs = []
        for layer in self.layers:
            x = layer(x)
            outs.append(x)
        return outs


def _conv_bn_relu3d(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(ConvModule(nn.Conv3d(cin, cout, kernel, padding=kernel // 2, bias=False),
                                    nn.BatchNorm3d(cout), relu=True))


class FPN3D(nn.Module):
    """3D FPN: lateral 1x1x1 and output 3x3x3 ConvModules, trilinear top-down path."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: int):
        super().__init__()
        self.lateral_convs = nn.ModuleList(_conv_bn_relu3d(c, out_channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(_conv_bn_relu3d(out_channels, out_channels, 3) for _ in in_channels)

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[2:], mode="trilinear", align_corners=False)
        return [conv(x) for conv, x in zip(self.fpn_convs, laterals, strict=True)]


class OccHead(nn.Module):
    """Occupancy head: deconv to full resolution, per-level 3x3x3 convs, soft level weights, class logits."""

    def __init__(self, in_channels: tuple[int, ...], out_channel: int):
        super().__init__()
        mid = in_channels[0] // 2
        self.occ_convs = nn.ModuleList(
            nn.Sequential(nn.Conv3d(c, c // 2, 3, padding=1, bias=False), nn.BatchNorm3d(c // 2),
                          nn.ReLU(inplace=True)) for c in in_channels)
        self.occ_pred_conv = nn.Sequential(
            nn.Conv3d(mid, mid // 2, 1, bias=False), nn.BatchNorm3d(mid // 2), nn.ReLU(inplace=True),
            nn.Conv3d(mid // 2, out_channel, 1, bias=False))
        num_feats = len(in_channels) + 1  # the levels plus the deconvolved level 0
        self.voxel_soft_weights = nn.Sequential(
            nn.Conv3d(mid, mid // 2, 1, bias=False), nn.BatchNorm3d(mid // 2), nn.ReLU(inplace=True),
            nn.Conv3d(mid // 2, num_feats, 1, bias=False))
        self.deblock = nn.Sequential(
            nn.ConvTranspose3d(in_channels[0], in_channels[0] // 2, 2, stride=2, bias=False),
            nn.BatchNorm3d(in_channels[0] // 2), nn.ReLU(inplace=True))

    def forward(self, voxel_feats: list[torch.Tensor]) -> torch.Tensor:
        feats = [self.deblock(voxel_feats[0])] + [conv(x) for conv, x in zip(self.occ_convs, voxel_feats, strict=True)]
        weights = torch.softmax(self.voxel_soft_weights(feats[0]), dim=1)
        size = feats[0].shape[2:]
        fused = feats[0] * weights[:, 0:1]
        for i, x in enumerate(feats[1:], start=1):
            x = F.interpolate(x, size=size, mode="trilinear", align_corners=False)
            fused = fused + x * weights[:, i:i + 1]
        return self.occ_pred_conv(fused)
