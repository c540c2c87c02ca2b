"""The UNet's blocks, built from slimmable layers; parameter names follow diffusers' ResnetBlock2D / Attention /
Downsample2D / Upsample2D / TimestepEmbedding, so a dense ``UNet2DModel``'s state dict loads unchanged.

GroupNorm keeps its channels per group fixed, so the number of groups shrinks with the width; attention keeps its
head dimension fixed, so the number of heads shrinks with the width. Shape comments use B = batch, C = channels,
H, W = spatial size.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .layers import SlimConv2d, SlimGroupNorm, SlimLinear

__all__ = ["ResnetBlock", "AttentionBlock", "Downsample", "Upsample", "DownBlock", "UpBlock", "MidBlock",
           "TimestepEmbedding"]


class ResnetBlock(nn.Module):
    """GroupNorm -> SiLU -> conv -> + time embedding -> GroupNorm -> SiLU -> dropout -> conv, plus a shortcut."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, groups: int, cpg: Optional[int],
                 eps: float, dropout: float, in_parts: Optional[Sequence[int]] = None, output_scale_factor: float = 1.0):
        super().__init__()
        g_in = in_channels // cpg if cpg else groups
        g_out = out_channels // cpg if cpg else groups
        self.norm1 = SlimGroupNorm(g_in, in_channels, eps, in_parts)
        self.conv1 = SlimConv2d(in_channels, out_channels, 3, padding=1, in_parts=in_parts)
        self.time_emb_proj = SlimLinear(temb_channels, out_channels)
        self.norm2 = SlimGroupNorm(g_out, out_channels, eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = SlimConv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = (SlimConv2d(in_channels, out_channels, 1, in_parts=in_parts)
                              if in_channels != out_channels else None)
        self.output_scale_factor = output_scale_factor

    def forward(self, x: torch.Tensor, temb: torch.Tensor, out: int,
                in_parts: Optional[Tuple[int, ...]] = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x, in_parts)), out, in_parts)              # (B, out, H, W)
        h = h + self.time_emb_proj(F.silu(temb), out)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))), out)
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x, out, in_parts)
        return (shortcut + h) / self.output_scale_factor


class AttentionBlock(nn.Module):
    """Self-attention over the H*W positions with a fixed head dimension (None: one head spanning all channels,
    as diffusers' single-head DDPM attention)."""

    def __init__(self, channels: int, head_dim: Optional[int], groups: int, cpg: Optional[int], eps: float,
                 rescale_output_factor: float = 1.0):
        super().__init__()
        self.head_dim = head_dim
        self.group_norm = SlimGroupNorm(channels // cpg if cpg else groups, channels, eps)
        self.to_q = SlimLinear(channels, channels)
        self.to_k = SlimLinear(channels, channels)
        self.to_v = SlimLinear(channels, channels)
        self.to_out = nn.ModuleList([SlimLinear(channels, channels), nn.Dropout(0.0)])
        self.rescale_output_factor = rescale_output_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        heads = C // self.head_dim if self.head_dim else 1
        h = self.group_norm(x).view(B, C, H * W).transpose(1, 2)                     # (B, HW, C)
        q, k, v = (proj(h, C).view(B, H * W, heads, C // heads).transpose(1, 2)      # (B, heads, HW, C/heads)
                   for proj in (self.to_q, self.to_k, self.to_v))
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, H * W, C)
        h = self.to_out[0](h, C).transpose(1, 2).reshape(B, C, H, W)
        return (h + x) / self.rescale_output_factor


def _attentions(channels: int, count: int, common: dict, head_dim: Optional[int], scale: float = 1.0) -> nn.ModuleList:
    """``count`` attention blocks over ``channels``, normalised as the ResNet blocks of ``common``."""
    return nn.ModuleList(
        AttentionBlock(channels, head_dim, common["groups"], common["cpg"], common["eps"], scale) for _ in range(count))


class Downsample(nn.Module):
    """Stride-2 3x3 conv; ``padding=0`` pads right and bottom by one first (DDPM's asymmetric padding)."""

    def __init__(self, channels: int, padding: int):
        super().__init__()
        self.padding = padding
        self.conv = SlimConv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == 0:  # DDPM's asymmetric padding, as diffusers' Downsample2D
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x, x.shape[1])


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = SlimConv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"), x.shape[1])


class DownBlock(nn.Module):
    """One level of the down path: ResNet blocks (each followed by attention if ``attention``), then an optional
    downsampler. Returns the output and every intermediate state, which the up path takes as skips."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, attention: bool, add_downsample: bool,
                 common: dict, head_dim: Optional[int], downsample_padding: int):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels, **common) for i in range(num_layers))
        self.attentions = _attentions(out_channels, num_layers, common, head_dim) if attention else None
        self.downsamplers = nn.ModuleList([Downsample(out_channels, downsample_padding)]) if add_downsample else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor, out: int) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        states = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb, out)
            if self.attentions is not None:
                x = self.attentions[i](x)
            states.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            states.append(x)
        return x, states


class UpBlock(nn.Module):
    """One level of the up path: per skip, a ResNet block on ``cat([hidden, skip])`` (each followed by attention if
    ``attention``), then an optional upsampler."""

    def __init__(self, prev_channels: int, skip_channels: Sequence[int], out_channels: int, attention: bool,
                 add_upsample: bool, common: dict, head_dim: Optional[int]):
        super().__init__()
        resnets = []
        for i, skip in enumerate(skip_channels):
            hidden = prev_channels if i == 0 else out_channels
            resnets.append(ResnetBlock(hidden + skip, out_channels, in_parts=(hidden, skip), **common))
        self.resnets = nn.ModuleList(resnets)
        self.attentions = _attentions(out_channels, len(skip_channels), common, head_dim) if attention else None
        self.upsamplers = nn.ModuleList([Upsample(out_channels)]) if add_upsample else None

    def forward(self, x: torch.Tensor, skips: List[torch.Tensor], temb: torch.Tensor, out: int) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            skip = skips.pop()
            parts = (x.shape[1], skip.shape[1])
            x = resnet(torch.cat([x, skip], dim=1), temb, out, parts)               # skip concat, sliced per part
            if self.attentions is not None:
                x = self.attentions[i](x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class MidBlock(nn.Module):
    """ResNet block, optional attention, ResNet block, all with the output scale ``scale``."""

    def __init__(self, channels: int, attention: bool, common: dict, head_dim: Optional[int], scale: float):
        super().__init__()
        common = dict(common, output_scale_factor=scale)
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, **common) for _ in range(2)])
        self.attentions = _attentions(channels, 1, common, head_dim, scale) if attention else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor, out: int) -> torch.Tensor:
        x = self.resnets[0](x, temb, out)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x, temb, out)


class TimestepEmbedding(nn.Module):
    """Linear -> SiLU -> linear from the full-size sinusoidal embedding to the time embedding at a width."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = SlimLinear(in_dim, dim, slim_in=False)  # the sinusoidal input keeps its full size
        self.linear_2 = SlimLinear(dim, dim)

    def forward(self, x: torch.Tensor, out: int) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x, out)), out)
