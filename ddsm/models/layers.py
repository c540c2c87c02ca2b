"""Slimmable layers: full-width parameters (the same names as torch's layers), sliced at call time.

At width ``w`` a layer computes with a slice of its full weight (``F.conv2d(x, weight[:out, :in])``), so a narrower
width does fewer multiply-adds; nothing is masked. Channel counts at width ``w`` are
``round(w * C / channel_divisor) * channel_divisor`` (:func:`slim_channels`). A layer that consumes a skip
concatenation ``cat([hidden, skip])`` slices it per part: the first ``hidden_w`` channels of the hidden part and the
first ``skip_w`` channels of the skip part, each at its own offset in the full weight (a prefix slice of the
concatenated weight would mix the parts up).

``slim_in`` / ``slim_out`` say which dimensions shrink with the width (the first conv's input and the last conv's
output stay fixed); ``in_parts`` are the full sizes of the parts of a concatenated input.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["slim_channels", "SlimConv2d", "SlimLinear", "SlimGroupNorm", "SlimEmbedding", "narrow_"]


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


class SlimConv2d(nn.Conv2d):
    """Conv2d that computes with its first ``out`` filters over the active channels of each input part."""

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
    """Linear layer that computes with its first ``out`` rows over the first ``x.shape[-1]`` input features."""

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


def narrow_(module: nn.Module, width: float, divisor: int) -> None:
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
