"""Depth-aware backward projection (FB-BEV's `BackwardProjectionTRT` + one BEVFormer encoder layer).

The camera-dependent parts (reference points, per-camera visibility, the per-camera query lists) come in
as graph inputs computed by `fbocc.model.preprocess.backward_projection_inputs`.
"""

from __future__ import annotations

import torch
from torch import nn

from fbocc.model import trt_ops


class CustormLearnedPositionalEncoding(nn.Module):  # FB-BEV's spelling, kept for recognisability
    def __init__(self, num_feats: int, row_num_embed: int, col_num_embed: int):
        super().__init__()
        self.row_embed = nn.Embedding(row_num_embed, num_feats)
        self.col_embed = nn.Embedding(col_num_embed, num_feats)

    def forward(self, bs: int, h: int, w: int) -> torch.Tensor:
        x_embed = self.col_embed.weight[:w]
        y_embed = self.row_embed.weight[:h]
        pos = torch.cat((x_embed.unsqueeze(0).expand(h, w, -1), y_embed.unsqueeze(1).expand(h, w, -1)), dim=-1)
        return pos.permute(2, 0, 1).unsqueeze(0).expand(bs, -1, -1, -1)  # [bs, 2*num_feats, h, w]


class MultiScaleDeformableAttention(nn.Module):
    """mmcv MultiScaleDeformableAttention (batch_first), BEV self-attention over one level."""

    def __init__(self, embed_dims: int, num_heads: int = 8, num_levels: int = 1, num_points: int = 4):
        super().__init__()
        self.num_heads, self.num_levels, self.num_points = num_heads, num_levels, num_points
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(0.0)

    def forward(self, query: torch.Tensor, query_pos: torch.Tensor, reference_points: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor) -> torch.Tensor:
        value = identity = query
        query = query + query_pos
        bs, num_query, _ = query.shape
        num_value = value.shape[1]
        value = self.value_proj(value).view(bs, num_value, self.num_heads, -1)
        offsets = self.sampling_offsets(query).view(bs, num_query, self.num_heads, self.num_levels,
                                                    self.num_points, 2)
        weights = self.attention_weights(query).view(bs, num_query, self.num_heads,
                                                     self.num_levels * self.num_points).softmax(-1)
        weights = weights.view(bs, num_query, self.num_heads, self.num_levels, self.num_points)
        normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(offsets.dtype)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        out = trt_ops.multi_scale_deformable_attn(value, spatial_shapes, level_start_index, locations, weights)
        out = self.output_proj(out.reshape(bs, num_query, -1))
        return self.dropout(out) + identity


class DA_MSDeformableAttention(nn.Module):
    """Depth-aware deformable attention: attention weights scaled by the image depth at each Z anchor."""

    def __init__(self, embed_dims: int, num_heads: int = 8, num_levels: int = 1, num_points: int = 8,
                 num_z_anchors: int = 4):
        super().__init__()
        self.num_heads, self.num_levels, self.num_points = num_heads, num_levels, num_points
        self.num_z_anchors = num_z_anchors
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)

    def forward(self, query: torch.Tensor, value: torch.Tensor, reference_points: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor, bev_query_depth: torch.Tensor,
                pred_img_depth: torch.Tensor) -> torch.Tensor:
        bs, num_query, _ = query.shape
        num_value = value.shape[1]
        value = self.value_proj(value).view(bs, num_value, self.num_heads, -1)
        offsets = self.sampling_offsets(query).view(bs, num_query, self.num_heads, self.num_levels,
                                                    self.num_points, 2)
        weights = self.attention_weights(query).view(bs, num_query, self.num_heads,
                                                     self.num_levels * self.num_points).softmax(-1)
        weights = weights.view(bs, num_query, self.num_heads, self.num_levels, self.num_points)
        z = self.num_z_anchors
        per_anchor = self.num_points // z
        normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(offsets.dtype)
        offsets = (offsets / normalizer[None, None, None, :, None, :]).view(
            bs, num_query, self.num_heads, self.num_levels, per_anchor, z, 2)
        ref = reference_points[:, :, None, None, None, :, :]  # [bs, q, 1, 1, 1, Z, 2]
        locations = (ref + offsets).view(bs, num_query, self.num_heads, self.num_levels, self.num_points, 2)

        # The image depth distribution sampled at each anchor's projection, read at the anchor's depth bin.
        depth_ref = ref.reshape(bs, num_query * z, 1, 1, 1, 2)
        depth_attn = torch.ones_like(depth_ref[..., 0])
        depth_dist = trt_ops.multi_scale_deformable_attn(
            pred_img_depth.unsqueeze(2), spatial_shapes[0:1], level_start_index[0:1], depth_ref, depth_attn)
        depth_weights = (depth_dist.reshape(bs, num_query, z, -1) * bev_query_depth).sum(-1)
        depth_weights = depth_weights.unsqueeze(2).expand(bs, num_query, per_anchor, z).reshape(
            bs, num_query, self.num_points)
        weights = weights * depth_weights[:, :, None, None, :]
        out = trt_ops.multi_scale_deformable_attn(value, spatial_shapes, level_start_index, locations, weights)
        return out.reshape(bs, num_query, -1)


class DA_SpatialCrossAttention(nn.Module):
    """Cross-attention from BEV queries into the cameras that see them, averaged over those cameras."""

    def __init__(self, embed_dims: int, num_cams: int, dbound: tuple[float, float, float],
                 deformable_attention: DA_MSDeformableAttention):
        super().__init__()
        self.embed_dims, self.num_cams, self.dbound = embed_dims, num_cams, dbound
        self.dropout = nn.Dropout(0.0)
        self.deformable_attention = deformable_attention
        self.output_proj = nn.Linear(embed_dims, embed_dims)

    def forward(self, query: torch.Tensor, value: torch.Tensor, query_pos: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor, bev: dict[str, torch.Tensor],
                pred_img_depth: torch.Tensor) -> torch.Tensor:
        inp_residual = query
        query = query + query_pos
        bs, num_query, C = query.shape
        ncam = self.num_cams
        B_, N_, DC, H, W = pred_img_depth.shape
        pred_img_depth = pred_img_depth.reshape(B_ * N_, DC, H * W).permute(0, 2, 1)
        indexes = bev["indexes"].long()  # [bs, ncam, max_len], zero-padded query indices
        max_len = indexes.shape[2]
        # FB-BEV gathers `indexes[j, i, indexes[j, i].nonzero()]`, which drops every 0 entry: padding and
        # query 0 alike. The same selection as a mask keeps the graph free of data-dependent shapes.
        valid = (indexes != 0).to(query.dtype)
        cam = torch.arange(ncam, device=query.device).view(1, ncam, 1)
        batch = torch.arange(bs, device=query.device).view(bs, 1, 1)
        flat_q = (batch * num_query + indexes).reshape(-1)
        flat_cam = ((batch * ncam + cam) * num_query + indexes).reshape(-1)  # rows of [bs, ncam, q] tensors
        rp_cam = bev["reference_points_cam"].permute(1, 0, 2, 3, 4)  # [bs, ncam, q, Z, 2]
        q_depth = bev["bev_query_depth"].permute(1, 0, 2, 3, 4)  # [bs, ncam, q, Z, 1]
        Z = rp_cam.shape[3]
        m = valid[..., None]
        queries_rebatch = bev["queries_rebatch"] + query.reshape(bs * num_query, C)[flat_q].view(
            bs, ncam, max_len, C) * m
        ref_rebatch = bev["reference_points_rebatch"] + rp_cam.reshape(-1, Z, 2)[flat_cam].view(
            bs, ncam, max_len, Z, 2) * m[..., None]
        depth_rebatch = bev["bev_query_depth_rebatch"] + q_depth.reshape(-1, Z, 1)[flat_cam].view(
            bs, ncam, max_len, Z, 1) * m[..., None]

        kv = value.permute(2, 0, 1, 3).reshape(bs * ncam, -1, C)
        depth_bin = torch.clip(torch.floor((depth_rebatch - self.dbound[0]) / self.dbound[2]), 0, DC - 1)
        bins = torch.arange(DC, device=query.device, dtype=depth_bin.dtype)
        one_hot = (depth_bin == bins).to(query.dtype)  # [bs, ncam, L, Z, DC]; equal to F.one_hot here
        queries = self.deformable_attention(
            queries_rebatch.view(bs * ncam, max_len, C), kv, ref_rebatch.view(bs * ncam, max_len, Z, 2),
            spatial_shapes, level_start_index, one_hot.view(bs * ncam, max_len, Z, DC), pred_img_depth,
        ).view(bs, ncam, max_len, C) * m

        # Per camera a read-add-write scatter (ScatterND), like FB-BEV's `slots[j, idx] += ...`; within one
        # camera the only repeated index is the padding 0, whose contributions are masked to zero.
        slots = torch.zeros_like(query).reshape(bs * num_query, C)
        rows = (batch * num_query + indexes).expand(bs, ncam, max_len)
        for i in range(ncam):
            idx = rows[:, i].reshape(-1)
            slots = slots.index_put((idx,), slots[idx] + queries[:, i].reshape(-1, C))
        count = (bev["per_cam_mask_list"].sum(-1) > 0).permute(1, 2, 0).sum(-1)
        count = torch.clamp(count, min=1.0).to(query.dtype)
        slots = slots.view(bs, num_query, C) / count[..., None]
        return self.dropout(self.output_proj(slots)) + inp_residual


class FFN(nn.Module):
    """mmcv FFN: Linear-ReLU-Dropout, Linear, Dropout, with identity shortcut."""

    def __init__(self, embed_dims: int, feedforward_channels: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, feedforward_channels), nn.ReLU(inplace=True), nn.Dropout(0.0)),
            nn.Linear(feedforward_channels, embed_dims), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class BEVFormerEncoderLayer(nn.Module):
    """operation_order: self_attn, norm, cross_attn, norm, ffn, norm."""

    def __init__(self, self_attn: nn.Module, cross_attn: nn.Module, embed_dims: int, ffn_dim: int):
        super().__init__()
        self.attentions = nn.ModuleList([self_attn, cross_attn])
        self.ffns = nn.ModuleList([FFN(embed_dims, ffn_dim)])
        self.norms = nn.ModuleList(nn.LayerNorm(embed_dims) for _ in range(3))


class bevformer_encoder(nn.Module):
    def __init__(self, layers: list[BEVFormerEncoderLayer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)


class BEVFormer(nn.Module):
    def __init__(self, encoder: bevformer_encoder, num_cams: int, embed_dims: int):
        super().__init__()
        self.encoder = encoder
        self.embed_dims = embed_dims
        # Unused when use_cams_embeds=False (as in FB-OCC) but part of the checkpoint.
        self.cams_embeds = nn.Parameter(torch.zeros(num_cams, embed_dims))


class BackwardProjection(nn.Module):
    """BEV queries (learned embedding + pooled forward-projection BEV) refined by one encoder layer."""

    def __init__(self, cfg: object):
        super().__init__()
        from fbocc.model.config import ModelConfig

        assert isinstance(cfg, ModelConfig)
        c = cfg.embed_dims
        self.bev_h, self.bev_w = cfg.bev_h, cfg.bev_w
        self.positional_encoding = CustormLearnedPositionalEncoding(cfg.pos_dim, cfg.bev_h, cfg.bev_w)
        layer = BEVFormerEncoderLayer(
            MultiScaleDeformableAttention(c, cfg.self_attn_heads, 1, cfg.self_attn_points),
            DA_SpatialCrossAttention(c, cfg.num_cams, cfg.depth_bound, DA_MSDeformableAttention(
                c, cfg.cross_attn_heads, 1, cfg.cross_attn_points, cfg.num_z_anchors)),
            c, cfg.ffn_dim)
        self.transformer = BEVFormer(bevformer_encoder([layer]), cfg.num_cams, c)
        self.bev_embedding = nn.Embedding(cfg.bev_h * cfg.bev_w, c)

    def forward(self, feat: torch.Tensor, lss_bev: torch.Tensor, pred_img_depth: torch.Tensor,
                bev: dict[str, torch.Tensor], index_dtype: torch.dtype) -> torch.Tensor:
        bs, _num_cam, c, h, w = feat.shape
        bev_query = self.bev_embedding.weight.unsqueeze(0) + lss_bev.flatten(2).permute(0, 2, 1)  # [bs, HW, C]
        bev_pos = self.positional_encoding(bs, self.bev_h, self.bev_w).flatten(2).permute(0, 2, 1)
        value = feat.flatten(3).permute(1, 3, 0, 2)  # [ncam, h*w, bs, C]
        spatial_shapes = torch.tensor([[h, w]], dtype=index_dtype, device=feat.device)
        level_start_index = torch.zeros(1, dtype=index_dtype, device=feat.device)
        bev_shapes = torch.tensor([[self.bev_h, self.bev_w]], dtype=index_dtype, device=feat.device)
        query = bev_query
        for layer in self.transformer.encoder.layers:
            assert isinstance(layer, BEVFormerEncoderLayer)
            query = layer.attentions[0](query, bev_pos, bev["ref_2d"], bev_shapes, level_start_index)
            query = layer.norms[0](query)
            query = layer.attentions[1](query, value, bev_pos, spatial_shapes, level_start_index, bev,
                                        pred_img_depth)
            query = layer.norms[1](query)
            query = layer.norms[2](layer.ffns[0](query))
        return query.permute(0, 2, 1).reshape(bs, c, self.bev_h, self.bev_w)
