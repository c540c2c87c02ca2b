"""The slimmable UNet: one set of weights, many widths, real sliced compute at each.

The architecture is the DDPM/ADM UNet of diffusers' ``UNet2DModel`` (ResNet blocks with GroupNorm and a time
embedding, attention at chosen resolutions, a mid block), with the same parameter names, so a dense
``UNet2DModel`` loads into it unchanged (:meth:`SlimmableUNet.from_dense`).

Every layer keeps its full-width parameters and, at width ``w``, computes with a slice of them
(``F.conv2d(x, weight[:out, :in])``), so a narrower width does fewer multiply-adds; nothing is masked.
Three rules keep the narrower networks well defined (see DESIGN.md):

* channel counts at width ``w`` are ``round(w * C / channel_divisor) * channel_divisor`` (``C`` at width 1.0);
* GroupNorm keeps its channels per group fixed, so the number of groups shrinks with the width;
* attention keeps its head dimension fixed, so the number of heads shrinks with the width;
* skip concatenations ``cat([hidden, skip])`` are sliced per part: the layer that consumes them takes the first
  ``hidden_w`` channels of the hidden part and the first ``skip_w`` channels of the skip part, each at its own
  offset in the full weight (a prefix slice of the concatenated weight would mix the parts up).

Shape comments use B = batch, C = channels, H, W = spatial size, T = time-embedding size.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DOutput

from ..utils import config_sha256

__all__ = ["SlimmableUNet", "StaticSubnet", "WidthPlan", "slim_channels"]


def slim_channels(full: int, width: float, divisor: int) -> int:
    """Channels of a layer with ``full`` channels at ``width``: rounded to a multiple of ``divisor``, at least
    ``divisor``, at most ``full``; exactly ``full`` at width 1.0."""
    if width >= 1.0:
        return full
    return min(full, max(divisor, int(width * full / divisor + 0.5) * divisor))


def _slice_parts(t: torch.Tensor, dim: int, full_parts: Tuple[int, ...], parts: Tuple[int, ...]) -> torch.Tensor:
    """Take the first ``parts[k]`` entries of each part ``k`` of ``t`` along ``dim``, where part ``k`` occupies
    ``full_parts[k]`` entries. One part is a plain prefix slice (a view); several are sliced and concatenated."""
    if parts == full_parts:
        return t
    if len(parts) != len(full_parts):
        raise ValueError(f"input has {len(parts)} concatenated parts {parts}, layer expects {len(full_parts)}")
    if len(parts) == 1:
        return t.narrow(dim, 0, parts[0])
    pieces, offset = [], 0
    for full, active in zip(full_parts, parts):
        pieces.append(t.narrow(dim, offset, active))
        offset += full
    return torch.cat(pieces, dim)


# ----------------------------------------------------------------------------------------------------------------
# Slimmable layers: full-width parameters (same names as torch's), sliced at call time.
# ``slim_in`` / ``slim_out`` say which dimensions shrink with the width (the first conv's input and the last conv's
# output stay fixed); ``in_parts`` are the full sizes of the parts of a concatenated input.
# ----------------------------------------------------------------------------------------------------------------


class SlimConv2d(nn.Conv2d):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 in_parts: Optional[Sequence[int]] = None, slim_in: bool = True, slim_out: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.in_parts = tuple(in_parts) if in_parts else (in_channels,)
        assert sum(self.in_parts) == in_channels
        self.slim_in, self.slim_out = slim_in, slim_out

    def forward(self, x: torch.Tensor, out: Optional[int] = None,
                in_parts: Optional[Tuple[int, ...]] = None) -> torch.Tensor:
        out = self.out_channels if out is None else out
        weight = _slice_parts(self.weight[:out], 1, self.in_parts, in_parts or (x.shape[1],))
        return F.conv2d(x, weight, self.bias[:out], self.stride, self.padding)


class SlimLinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, slim_in: bool = True, slim_out: bool = True):
        super().__init__(in_features, out_features)
        self.in_parts = (in_features,)
        self.slim_in, self.slim_out = slim_in, slim_out

    def forward(self, x: torch.Tensor, out: Optional[int] = None) -> torch.Tensor:
        out = self.out_features if out is None else out
        return F.linear(x, self.weight[:out, : x.shape[-1]], self.bias[:out])


class SlimGroupNorm(nn.GroupNorm):
    """GroupNorm whose channels per group stay fixed: ``C_active / channels_per_group`` groups at any width."""

    def __init__(self, num_groups: int, num_channels: int, eps: float, in_parts: Optional[Sequence[int]] = None):
        super().__init__(num_groups, num_channels, eps=eps)
        self.channels_per_group = num_channels // num_groups
        self.in_parts = tuple(in_parts) if in_parts else (num_channels,)

    def forward(self, x: torch.Tensor, in_parts: Optional[Tuple[int, ...]] = None) -> torch.Tensor:
        parts = in_parts or (x.shape[1],)
        weight = _slice_parts(self.weight, 0, self.in_parts, parts)
        bias = _slice_parts(self.bias, 0, self.in_parts, parts)
        return F.group_norm(x, x.shape[1] // self.channels_per_group, weight, bias, self.eps)


class SlimEmbedding(nn.Embedding):
    """Class embedding table (rows fixed: one per class, plus a last 'null' row for classifier-free guidance)."""

    def forward(self, labels: torch.Tensor, dim: Optional[int] = None) -> torch.Tensor:
        return F.embedding(labels, self.weight[:, : (self.embedding_dim if dim is None else dim)])


def _narrow_(module: nn.Module, width: float, divisor: int) -> None:
    """Cut a slimmable layer's parameters down to their slices at ``width``, in place (for static sub-networks)."""
    f = lambda c: slim_channels(c, width, divisor)  # noqa: E731
    with torch.no_grad():
        if isinstance(module, (SlimConv2d, SlimLinear)):
            w = module.weight
            out = f(w.shape[0]) if module.slim_out else w.shape[0]
            parts = tuple(f(p) for p in module.in_parts) if module.slim_in else module.in_parts
            w = _slice_parts(w[:out], 1, module.in_parts, parts)
            module.weight = nn.Parameter(w.clone())
            module.bias = nn.Parameter(module.bias[:out].clone())
            module.in_parts = parts
            if isinstance(module, SlimConv2d):
                module.in_channels, module.out_channels = sum(parts), out
            else:
                module.in_features, module.out_features = sum(parts), out
        elif isinstance(module, SlimGroupNorm):
            parts = tuple(f(p) for p in module.in_parts)
            module.weight = nn.Parameter(_slice_parts(module.weight, 0, module.in_parts, parts).clone())
            module.bias = nn.Parameter(_slice_parts(module.bias, 0, module.in_parts, parts).clone())
            module.in_parts, module.num_channels = parts, sum(parts)
            module.num_groups = module.num_channels // module.channels_per_group
        elif isinstance(module, SlimEmbedding):
            dim = f(module.embedding_dim)
            module.weight = nn.Parameter(module.weight[:, :dim].clone())
            module.embedding_dim = dim


# ----------------------------------------------------------------------------------------------------------------
# Blocks (parameter names follow diffusers' ResnetBlock2D / Attention / Downsample2D / Upsample2D).
# ----------------------------------------------------------------------------------------------------------------


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


class Downsample(nn.Module):
    def __init__(self, channels: int, padding: int):
        super().__init__()
        self.padding = padding
        self.conv = SlimConv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == 0:  # DDPM's asymmetric padding, as diffusers' Downsample2D
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x, x.shape[1])


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = SlimConv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"), x.shape[1])


class DownBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_layers: int, attention: bool, add_downsample: bool,
                 common: dict, head_dim: Optional[int], downsample_padding: int):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels, **common) for i in range(num_layers))
        self.attentions = nn.ModuleList(
            AttentionBlock(out_channels, head_dim, common["groups"], common["cpg"], common["eps"])
            for _ in range(num_layers)) if attention else None
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
    def __init__(self, prev_channels: int, skip_channels: Sequence[int], out_channels: int, attention: bool,
                 add_upsample: bool, common: dict, head_dim: Optional[int]):
        super().__init__()
        resnets = []
        for i, skip in enumerate(skip_channels):
            hidden = prev_channels if i == 0 else out_channels
            resnets.append(ResnetBlock(hidden + skip, out_channels, in_parts=(hidden, skip), **common))
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(
            AttentionBlock(out_channels, head_dim, common["groups"], common["cpg"], common["eps"])
            for _ in skip_channels) if attention else None
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
    def __init__(self, channels: int, attention: bool, common: dict, head_dim: Optional[int], scale: float):
        super().__init__()
        common = dict(common, output_scale_factor=scale)
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, **common) for _ in range(2)])
        self.attentions = nn.ModuleList(
            [AttentionBlock(channels, head_dim, common["groups"], common["cpg"], common["eps"], scale)]
        ) if attention else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor, out: int) -> torch.Tensor:
        x = self.resnets[0](x, temb, out)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x, temb, out)


class TimestepEmbedding(nn.Module):
    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = SlimLinear(in_dim, dim, slim_in=False)  # the sinusoidal input keeps its full size
        self.linear_2 = SlimLinear(dim, dim)

    def forward(self, x: torch.Tensor, out: int) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x, out)), out)


# ----------------------------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WidthPlan:
    """Channel counts of every level and the time embedding at one width."""

    width: float
    channels: Tuple[int, ...]  # per resolution level, as block_out_channels
    temb: int


def _unet_forward(net: nn.Module, sample: torch.Tensor, timestep, class_labels: Optional[torch.Tensor],
                  plan: WidthPlan, cfg) -> torch.Tensor:
    """The UNet's forward pass at one width. Shared by the supernet and its static sub-networks."""
    B = sample.shape[0]
    t = timestep if torch.is_tensor(timestep) else torch.tensor([timestep], device=sample.device)
    t = t.reshape(-1).to(sample.device)
    t = t * torch.ones(B, dtype=t.dtype, device=t.device)                              # (B,)
    t_emb = get_timestep_embedding(t, cfg.block_out_channels[0], flip_sin_to_cos=cfg.flip_sin_to_cos,
                                   downscale_freq_shift=cfg.freq_shift).to(sample.dtype)
    emb = net.time_embedding(t_emb, plan.temb)                                         # (B, T)
    if net.class_embedding is not None:
        if class_labels is None:  # unconditional: the null class
            class_labels = torch.full((B,), cfg.num_classes, dtype=torch.long, device=sample.device)
        emb = emb + net.class_embedding(class_labels.to(sample.device).long(), plan.temb).to(emb.dtype)
    elif class_labels is not None:
        raise ValueError("class_labels were given but the model has no class conditioning (num_classes is None)")

    x = net.conv_in(sample, plan.channels[0])                                          # (B, C0, H, W)
    skips = [x]
    for level, block in enumerate(net.down_blocks):
        x, states = block(x, emb, plan.channels[level])
        skips.extend(states)
    x = net.mid_block(x, emb, plan.channels[-1])
    for i, block in enumerate(net.up_blocks):
        x = block(x, skips, emb, plan.channels[len(plan.channels) - 1 - i])
    x = F.silu(net.conv_norm_out(x))
    return net.conv_out(x)                                                            # (B, out_channels, H, W)


class SlimmableUNet(ModelMixin, ConfigMixin):
    r"""A weight-shared slimmable DDPM/ADM UNet (diffusers ``UNet2DModel`` layout) that runs at any of its
    ``width_choices`` with sliced, really cheaper compute.

    Args:
        sample_size: Height and width of the (square) input.
        in_channels: Channels of the input sample (fixed at every width).
        out_channels: Channels of the output (fixed at every width).
        block_out_channels: Channels of each resolution level at width 1.0; each level but the last halves the size.
        layers_per_block: ResNet blocks per level on the way down (one more on the way up, as diffusers).
        attention_resolutions: Feature-map sizes (e.g. ``(16,)``) at which the ResNet blocks are followed by
            self-attention.
        mid_block_attention: Whether the mid block has attention.
        attention_head_dim: Head dimension, fixed at every width (heads = channels / head_dim). ``None`` means one
            head spanning all channels at every width (diffusers' DDPM attention), for converted dense models.
        dropout: Dropout inside the ResNet blocks.
        norm_num_groups: GroupNorm groups at width 1.0; each norm keeps its channels per group fixed across widths.
        norm_channels_per_group: If set, every GroupNorm uses this many channels per group instead.
        norm_eps: GroupNorm epsilon.
        num_classes: Number of classes for class conditioning (``None``: unconditional). The embedding holds one
            extra row, index ``num_classes``, the null class used for classifier-free guidance.
        width_choices: Widths the supernet supports (fractions of the channels, 1.0 included).
        channel_divisor: Channel counts at narrower widths are rounded to multiples of this.
        flip_sin_to_cos: Order of the sinusoidal timestep embedding (DDPM: False).
        freq_shift: Frequency shift of the sinusoidal timestep embedding (DDPM: 1).
        downsample_padding: 0 for DDPM's asymmetric padding, 1 for symmetric.
        time_embedding_dim: Size of the time embedding at width 1.0 (default ``4 * block_out_channels[0]``).
        mid_block_scale_factor: Output scale of the mid block's ResNet and attention blocks.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 3,
        out_channels: int = 3,
        block_out_channels: Tuple[int, ...] = (128, 256, 256, 256),
        layers_per_block: int = 2,
        attention_resolutions: Tuple[int, ...] = (16,),
        mid_block_attention: bool = True,
        attention_head_dim: Optional[int] = 32,
        dropout: float = 0.0,
        norm_num_groups: int = 32,
        norm_channels_per_group: Optional[int] = None,
        norm_eps: float = 1e-6,
        num_classes: Optional[int] = None,
        width_choices: Tuple[float, ...] = (0.25, 0.5, 0.75, 1.0),
        channel_divisor: int = 8,
        flip_sin_to_cos: bool = False,
        freq_shift: int = 1,
        downsample_padding: int = 0,
        time_embedding_dim: Optional[int] = None,
        mid_block_scale_factor: float = 1.0,
    ):
        super().__init__()
        _validate_config(self.config)
        chans = list(block_out_channels)
        temb = time_embedding_dim or 4 * chans[0]
        cpg = norm_channels_per_group
        common = dict(temb_channels=temb, groups=norm_num_groups, cpg=cpg, eps=norm_eps, dropout=dropout)

        self.conv_in = SlimConv2d(in_channels, chans[0], 3, padding=1, slim_in=False)
        self.time_embedding = TimestepEmbedding(chans[0], temb)
        self.class_embedding = SlimEmbedding(num_classes + 1, temb) if num_classes else None

        levels = len(chans)
        has_attn = [sample_size // 2**i in set(attention_resolutions) for i in range(levels)]
        self.down_blocks = nn.ModuleList()
        skip_channels = [chans[0]]  # what the down path pushes, in order: conv_in, then every block state
        for i in range(levels):
            c_in = chans[max(i - 1, 0)]
            last = i == levels - 1
            self.down_blocks.append(DownBlock(c_in, chans[i], layers_per_block, has_attn[i], not last, common,
                                              attention_head_dim, downsample_padding))
            skip_channels += [chans[i]] * (layers_per_block + (0 if last else 1))
        self.mid_block = MidBlock(chans[-1], mid_block_attention, common, attention_head_dim, mid_block_scale_factor)
        self.up_blocks = nn.ModuleList()
        prev = chans[-1]
        for i in range(levels):
            level = levels - 1 - i
            skips = [skip_channels.pop() for _ in range(layers_per_block + 1)]
            self.up_blocks.append(UpBlock(prev, skips, chans[level], has_attn[level], level > 0, common,
                                          attention_head_dim))
            prev = chans[level]
        self.conv_norm_out = SlimGroupNorm(chans[0] // cpg if cpg else norm_num_groups, chans[0], norm_eps)
        self.conv_out = SlimConv2d(chans[0], out_channels, 3, padding=1, slim_out=False)
        self._plans: Dict[float, WidthPlan] = {}
        _validate_widths(self)

    # -- widths ---------------------------------------------------------------------------------------------------

    @property
    def width_choices(self) -> Tuple[float, ...]:
        return tuple(float(w) for w in self.config.width_choices)

    @property
    def config_sha256(self) -> str:
        """Fingerprint of this model's config; schedule files carry it to refuse mismatched models."""
        return config_sha256(self.config)

    def plan(self, width: float) -> WidthPlan:
        """Channel counts at ``width`` (one of ``width_choices``)."""
        width = float(width)
        if width not in self._plans:
            if width not in self.width_choices:
                raise ValueError(f"width {width!r} is not one of the model's width_choices {list(self.width_choices)}")
            d = self.config.channel_divisor
            temb = self.config.time_embedding_dim or 4 * self.config.block_out_channels[0]
            self._plans[width] = WidthPlan(
                width, tuple(slim_channels(c, width, d) for c in self.config.block_out_channels),
                slim_channels(temb, width, d))
        return self._plans[width]

    # -- forward --------------------------------------------------------------------------------------------------

    def forward(self, sample: torch.Tensor, timestep: Union[torch.Tensor, float, int],
                class_labels: Optional[torch.Tensor] = None, width: float = 1.0,
                return_dict: bool = True) -> Union[UNet2DOutput, Tuple[torch.Tensor]]:
        """Predict the noise of ``sample`` (B, in_channels, H, W) at ``timestep`` (scalar or (B,)) with the
        sub-network of ``width``. ``class_labels`` (B,) for class-conditional models (None: unconditional)."""
        out = _unet_forward(self, sample, timestep, class_labels, self.plan(width), self.config)
        return UNet2DOutput(sample=out) if return_dict else (out,)

    def subnet(self, width: float) -> "StaticSubnet":
        """A static, dense copy of the sub-network at ``width``: a plain module holding only the sliced weights,
        whose output equals ``self(..., width=width)``. Time it, count it, compile or export it."""
        return StaticSubnet(self, width)

    # -- conversion -----------------------------------------------------------------------------------------------

    @classmethod
    def from_dense(cls, unet, width_choices: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
                   attention_head_dim: Optional[int] = "from_dense", channel_divisor: int = 8) -> "SlimmableUNet":
        """Build a supernet from a dense diffusers ``UNet2DModel`` (DownBlock2D / AttnDownBlock2D / UpBlock2D /
        AttnUpBlock2D with a UNetMidBlock2D). At width 1.0 its output equals the dense model's.

        ``attention_head_dim`` defaults to the dense model's (``None`` there means one head of all channels).
        """
        config = _config_from_dense(unet.config, width_choices, channel_divisor)
        if attention_head_dim != "from_dense":
            config["attention_head_dim"] = attention_head_dim
        model = cls(**config)
        state = dict(unet.state_dict())
        if model.class_embedding is not None:  # append the null-class row, zero
            table = state["class_embedding.weight"]
            state["class_embedding.weight"] = torch.cat([table, table.new_zeros(1, table.shape[1])])
        model.load_state_dict(state, strict=True)
        return model if unet.dtype == torch.float32 else model.to(unet.dtype)


class StaticSubnet(nn.Module):
    """The sub-network of a :class:`SlimmableUNet` at one width, as a plain dense module (weights copied and cut
    to size: at this width every slice is the whole tensor, so no slicing work is left)."""

    def __init__(self, supernet: SlimmableUNet, width: float):
        super().__init__()
        plan = supernet.plan(width)
        cfg = supernet.config
        for name in ("conv_in", "time_embedding", "class_embedding", "down_blocks", "mid_block", "up_blocks",
                     "conv_norm_out", "conv_out"):
            setattr(self, name, copy.deepcopy(getattr(supernet, name)))
        for module in self.modules():
            _narrow_(module, width, cfg.channel_divisor)
        self.plan, self.cfg, self.width = plan, cfg, float(width)

    def forward(self, sample: torch.Tensor, timestep, class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        return _unet_forward(self, sample, timestep, class_labels, self.plan, self.cfg)


# ----------------------------------------------------------------------------------------------------------------
# Validation and conversion helpers
# ----------------------------------------------------------------------------------------------------------------


def _fail(field: str, value, expected: str) -> None:
    raise ValueError(f"SlimmableUNet config: {field}={value!r} is invalid: expected {expected}")


def _validate_config(c) -> None:
    chans = list(c.block_out_channels)
    if not chans or any(not isinstance(x, int) or x <= 0 for x in chans):
        _fail("block_out_channels", c.block_out_channels, "a non-empty list of positive ints")
    for field in ("sample_size", "in_channels", "out_channels", "layers_per_block", "channel_divisor"):
        v = getattr(c, field)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            _fail(field, v, "a positive int")
    if c.sample_size % 2 ** (len(chans) - 1):
        _fail("sample_size", c.sample_size, f"divisible by 2**{len(chans) - 1} for {len(chans)} levels")
    sizes = [c.sample_size // 2**i for i in range(len(chans))]
    for r in c.attention_resolutions:
        if r not in sizes:
            _fail("attention_resolutions", list(c.attention_resolutions), f"sizes among the levels' {sizes}")
    if not 0.0 <= c.dropout < 1.0:
        _fail("dropout", c.dropout, "a float in [0, 1)")
    if c.num_classes is not None and (not isinstance(c.num_classes, int) or c.num_classes <= 0):
        _fail("num_classes", c.num_classes, "None or a positive int")
    if c.attention_head_dim is not None and (not isinstance(c.attention_head_dim, int) or c.attention_head_dim <= 0):
        _fail("attention_head_dim", c.attention_head_dim, "None or a positive int")
    widths = list(c.width_choices)
    if not widths or any(isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w <= 1 for w in widths):
        _fail("width_choices", widths, "a non-empty list of floats in (0, 1]")
    if len(set(float(w) for w in widths)) != len(widths):
        _fail("width_choices", widths, "distinct widths")
    if max(widths) != 1.0:
        _fail("width_choices", widths, "the full width 1.0 among them")
    cpg = c.norm_channels_per_group
    temb = c.time_embedding_dim or 4 * chans[0]
    groups_field, group_size = ("norm_channels_per_group", cpg) if cpg else ("norm_num_groups", c.norm_num_groups)
    if not isinstance(group_size, int) or group_size <= 0 or any(ch % group_size for ch in chans):
        _fail(groups_field, group_size, f"a positive divisor of every block_out_channels {chans}")
    head = c.attention_head_dim
    attn_chans = [chans[i] for i in range(len(chans)) if sizes[i] in set(c.attention_resolutions)]
    attn_chans += [chans[-1]] if c.mid_block_attention else []
    if head and any(ch % head for ch in attn_chans):
        _fail("attention_head_dim", head, f"a divisor of the attention layers' channels {attn_chans}")
    if temb <= 0:
        _fail("time_embedding_dim", c.time_embedding_dim, "a positive int")


def _validate_widths(model: SlimmableUNet) -> None:
    """Every width must give whole GroupNorm groups and attention heads in every layer, and distinct networks."""
    c = model.config
    seen: Dict[WidthPlan, float] = {}
    for w in model.width_choices:
        f = lambda ch: slim_channels(ch, w, c.channel_divisor)  # noqa: E731
        for name, m in model.named_modules():
            if isinstance(m, SlimGroupNorm):
                if m.num_channels % m.num_groups:
                    _fail("norm_num_groups", c.norm_num_groups,
                          f"a divisor of the {m.num_channels} channels of {name}")
                active = sum(f(p) for p in m.in_parts)
                if active % m.channels_per_group:
                    raise ValueError(
                        f"SlimmableUNet config: width_choices entry {w} cannot be realised: {name} has "
                        f"{active} channels at that width (parts {[f(p) for p in m.in_parts]}, channel_divisor="
                        f"{c.channel_divisor}), not a multiple of its {m.channels_per_group} channels per group")
            elif isinstance(m, AttentionBlock) and m.head_dim:
                ch = f(m.to_q.out_features)
                if ch % m.head_dim:
                    raise ValueError(
                        f"SlimmableUNet config: width_choices entry {w} cannot be realised: {name} has {ch} "
                        f"channels at that width, not a multiple of attention_head_dim={m.head_dim}")
        plan = model.plan(w)
        key = WidthPlan(0.0, plan.channels, plan.temb)
        if key in seen:
            raise ValueError(f"SlimmableUNet config: width_choices entries {seen[key]} and {w} give the same "
                             f"channels {plan.channels} after rounding to channel_divisor={c.channel_divisor}")
        seen[key] = w


_DENSE_DEFAULTS = dict(center_input_sample=False, time_embedding_type="positional", downsample_type="conv",
                       upsample_type="conv", act_fn="silu", resnet_time_scale_shift="default", class_embed_type=None)


def _config_from_dense(dc, width_choices: Sequence[float], channel_divisor: int) -> dict:
    """Our config for a dense diffusers UNet2DModel's config; raises on layouts we cannot reproduce exactly."""
    for key, expected in _DENSE_DEFAULTS.items():
        if dc.get(key, expected) != expected:
            raise ValueError(f"from_dense: UNet2DModel {key}={dc[key]!r} is not supported (expected {expected!r})")
    down, up = list(dc["down_block_types"]), list(dc["up_block_types"])
    allowed_down, allowed_up = {"DownBlock2D", "AttnDownBlock2D"}, {"UpBlock2D", "AttnUpBlock2D"}
    if set(down) - allowed_down or set(up) - allowed_up:
        raise ValueError(f"from_dense: block types {down} / {up} are not supported "
                         f"(expected {sorted(allowed_down)} / {sorted(allowed_up)})")
    attn = [t.startswith("Attn") for t in down]
    if attn != [t.startswith("Attn") for t in reversed(up)]:
        raise ValueError(f"from_dense: attention must sit at the same levels down and up; got {down} and {up}")
    if dc.get("mid_block_type", "UNetMidBlock2D") != "UNetMidBlock2D":
        raise ValueError(f"from_dense: mid_block_type={dc['mid_block_type']!r} is not supported "
                         "(expected 'UNetMidBlock2D')")
    attn_groups = dc.get("attn_norm_num_groups")
    if attn_groups not in (None, dc["norm_num_groups"]):
        raise ValueError(f"from_dense: attn_norm_num_groups={attn_groups} differs from norm_num_groups="
                         f"{dc['norm_num_groups']}; not supported")
    size = dc["sample_size"]
    if not isinstance(size, int):
        raise ValueError(f"from_dense: sample_size={size!r} must be one int (square samples)")
    return dict(
        sample_size=size, in_channels=dc["in_channels"], out_channels=dc["out_channels"],
        block_out_channels=tuple(dc["block_out_channels"]), layers_per_block=dc["layers_per_block"],
        attention_resolutions=tuple(size // 2**i for i, a in enumerate(attn) if a),
        mid_block_attention=dc.get("add_attention", True), attention_head_dim=dc.get("attention_head_dim"),
        dropout=dc.get("dropout", 0.0), norm_num_groups=dc["norm_num_groups"], norm_eps=dc["norm_eps"],
        num_classes=dc.get("num_class_embeds"), width_choices=tuple(width_choices), channel_divisor=channel_divisor,
        flip_sin_to_cos=dc["flip_sin_to_cos"], freq_shift=dc["freq_shift"],
        downsample_padding=dc["downsample_padding"], time_embedding_dim=dc.get("time_embedding_dim"),
        mid_block_scale_factor=float(dc.get("mid_block_scale_factor", 1.0)),
    )
