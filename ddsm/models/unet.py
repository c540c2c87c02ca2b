"""The slimmable UNet: one set of weights, many widths, real sliced compute at each.

The architecture is the DDPM/ADM UNet of diffusers' ``UNet2DModel`` (ResNet blocks with GroupNorm and a time
embedding, attention at chosen resolutions, a mid block), with the same parameter names, so a dense
``UNet2DModel`` loads into it unchanged (:meth:`SlimmableUNet.from_dense`).

Every layer keeps its full-width parameters and, at width ``w``, computes with a slice of them
(``F.conv2d(x, weight[:out, :in])``), so a narrower width does fewer multiply-adds; nothing is masked.
Four rules keep the narrower networks well defined (see DESIGN.md):

* channel counts at width ``w`` are ``round(w * C / channel_divisor) * channel_divisor`` (``C`` at width 1.0);
* GroupNorm keeps its channels per group fixed, so the number of groups shrinks with the width;
* attention keeps its head dimension fixed, so the number of heads shrinks with the width;
* skip concatenations ``cat([hidden, skip])`` are sliced per part: the layer that consumes them takes the first
  ``hidden_w`` channels of the hidden part and the first ``skip_w`` channels of the skip part, each at its own
  offset in the full weight (a prefix slice of the concatenated weight would mix the parts up).

The layers are in :mod:`.layers`, the blocks in :mod:`.blocks`, config validation and dense conversion in
:mod:`.convert`. Shape comments use B = batch, C = channels, H, W = spatial size, T = time-embedding size.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DOutput

from ..utils import config_sha256
from .blocks import DownBlock, MidBlock, TimestepEmbedding, UpBlock
from .convert import config_from_dense, dense_width_choices, validate_config, validate_widths
from .layers import SlimConv2d, SlimEmbedding, SlimGroupNorm, narrow_, slim_channels

__all__ = ["SlimmableUNet", "StaticSubnet", "WidthPlan"]


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
        validate_config(self.config)
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
        validate_widths(self)

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
    def from_dense(cls, unet, width_choices: Optional[Sequence[float]] = None,
                   attention_head_dim: Optional[int] = "from_dense", channel_divisor: int = 8) -> "SlimmableUNet":
        """Build a supernet from a dense diffusers ``UNet2DModel`` (DownBlock2D / AttnDownBlock2D / UpBlock2D /
        AttnUpBlock2D with a UNetMidBlock2D). At width 1.0 its output equals the dense model's.

        ``width_choices`` defaults to those of (0.25, 0.5, 0.75, 1.0) whose channel counts give whole GroupNorm
        groups and attention heads in every layer; given ones that cannot are refused with the feasible ones
        listed. ``attention_head_dim`` defaults to the dense model's (``None`` there means one head of all
        channels). A layout part we cannot reproduce exactly (block type, time embedding, ...) raises a
        ValueError naming it. The supernet holds copies of the dense weights, on their device and in their dtype.
        """
        config = config_from_dense(unet.config, (1.0,), channel_divisor)
        if attention_head_dim != "from_dense":
            config["attention_head_dim"] = attention_head_dim
        config["width_choices"] = dense_width_choices(cls, config, width_choices)
        with torch.device("meta"):  # no random initialisation: every weight comes from the dense model
            model = cls(**config)
        state = {name: tensor.clone() for name, tensor in unet.state_dict().items()}
        if model.class_embedding is not None:  # append the null-class row, zero
            table = state["class_embedding.weight"]
            state["class_embedding.weight"] = torch.cat([table, table.new_zeros(1, table.shape[1])])
        model.load_state_dict(state, strict=True, assign=True)
        return model


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
            narrow_(module, width, cfg.channel_divisor)
        self.plan, self.cfg, self.width = plan, cfg, float(width)

    def forward(self, sample: torch.Tensor, timestep, class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        return _unet_forward(self, sample, timestep, class_labels, self.plan, self.cfg)
