"""Importance reordering: put a trained supernet's most important channels first, where the narrow widths look.

A width ``w`` computes with the *first* channels of every layer (:mod:`.layers`), so after dense training (a
``full_width_steps`` warm-up, or ``--init-from`` a dense model) the narrow widths start from arbitrary channels.
Permuting channels that no other layer sees is free at width 1.0 and hands the narrow widths the channels that carry
the most weight (US-Nets / OFA sort channels the same way before training smaller widths). Permuted here, each by
the L1 norm of the weights that read it:

* the hidden channels of every ResNet block (conv1's outputs, the time projection, norm2, conv2's inputs), whole
  GroupNorm groups at a time, so every group keeps its members and its statistics;
* the heads of every attention block (q, k, v rows and the output projection's columns), whole heads at a time;
  in single-head attention its channels one by one: q and k rows together (by the product of their L1 norms), v
  rows with the output projection's columns;
* the hidden units of the time embedding MLP (linear_1's outputs, linear_2's inputs);
* the channel *streams* of the :class:`~ddsm.models.SlimmableUNet` (``streams=True``): every set of channels that
  several layers share, traced through the network (:func:`unet_streams`): an identity shortcut or attention's
  residual keeps its input's stream, a conv that changes the channels starts a new one, a skip concatenation reads
  its source's stream at an offset, and the time embedding is one stream read by every ResNet block. A stream is
  sorted by the L1 norm of all the weights that read it, in whole groups of every GroupNorm that normalises it.

:func:`channel_orders` says what to permute (parameter name -> (dim, index)); :func:`reorder_` applies it to a
model and, with the same indices, to the moving averages and optimiser moments that mirror its parameters, so
training carries on seamlessly.
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .blocks import AttentionBlock, ResnetBlock, TimestepEmbedding

__all__ = ["channel_orders", "unet_streams", "reorder_"]

Order = Tuple[int, torch.Tensor]  # (dim, index): param.index_select(dim, index)


def _grouped_order(score: torch.Tensor, size: int) -> torch.Tensor:
    """Channel indices that sort blocks of ``size`` consecutive channels by their summed ``score``, largest first
    (stable: ties keep their order, so the result is the same on every process)."""
    blocks = score.reshape(-1, size).sum(1)
    order = torch.argsort(blocks, descending=True, stable=True)
    return (order[:, None] * size + torch.arange(size)).reshape(-1)


class _Stream:
    """One set of channels shared by several layers: (parameter name, dim, offset, reads) slots, and the
    (channels per group, offset) of the GroupNorms that normalise it."""

    def __init__(self, size: int):
        self.size, self.slots, self.groups = size, [], set()

    def unit(self) -> Optional[int]:
        """Channels moved together: whole groups of every GroupNorm; None when a GroupNorm's groups straddle the
        stream's edges (a concatenation whose part is not a whole number of groups): then it stays in place."""
        unit = math.lcm(1, *(c for c, _ in self.groups))
        aligned = all(offset % c == 0 for c, offset in self.groups) and self.size % unit == 0
        return unit if aligned else None


class _Streams:
    """The streams traced so far; an identity shortcut or a residual hands its input's stream id on."""

    def __init__(self):
        self.streams: List[_Stream] = []

    def new(self, size: int) -> int:
        self.streams.append(_Stream(size))
        return len(self.streams) - 1

    def size(self, i: int) -> int:
        return self.streams[i].size

    def slot(self, i: int, name: str, dim: int, offset: int = 0, reads: bool = False) -> None:
        self.streams[i].slots.append((name, dim, offset, reads))

    def norm(self, i: int, channels_per_group: int, offset: int = 0) -> None:
        self.streams[i].groups.add((channels_per_group, offset))

    def writes(self, i: int, prefix: str, bias: bool = True) -> None:
        """``prefix``'s weight rows (and bias) produce stream ``i``."""
        self.slot(i, f"{prefix}.weight", 0)
        if bias:
            self.slot(i, f"{prefix}.bias", 0)


def unet_streams(model: nn.Module) -> List[_Stream]:
    """The channel streams of a :class:`~ddsm.models.SlimmableUNet`, traced as its forward pass runs."""
    S = _Streams()
    temb = S.new(model.time_embedding.linear_2.out_features)
    S.writes(temb, "time_embedding.linear_2")
    if model.class_embedding is not None:
        S.slot(temb, "class_embedding.weight", 1)

    def resnet(prefix: str, block: ResnetBlock, parts: Sequence[int]) -> int:
        offset = 0
        for part in parts:
            S.norm(part, block.norm1.channels_per_group, offset)
            for name, dim, reads in (("norm1.weight", 0, False), ("norm1.bias", 0, False), ("conv1.weight", 1, True)) \
                    + ((("conv_shortcut.weight", 1, True),) if block.conv_shortcut is not None else ()):
                S.slot(part, f"{prefix}.{name}", dim, offset, reads)
            offset += S.size(part)
        S.slot(temb, f"{prefix}.time_emb_proj.weight", 1, reads=True)
        if block.conv_shortcut is None:  # identity shortcut: the output is the input's stream
            out = parts[0]
        else:
            out = S.new(block.conv2.out_channels)
            S.writes(out, f"{prefix}.conv_shortcut")
        S.writes(out, f"{prefix}.conv2")
        return out

    def attention(prefix: str, block: AttentionBlock, x: int) -> None:
        S.norm(x, block.group_norm.channels_per_group)
        S.writes(x, f"{prefix}.group_norm")
        for p in "qkv":
            S.slot(x, f"{prefix}.to_{p}.weight", 1, reads=True)
        S.writes(x, f"{prefix}.to_out.0")  # the residual: its output joins the input's stream

    def conv(prefix: str, x: int) -> int:
        S.slot(x, f"{prefix}.weight", 1, reads=True)
        out = S.new(S.size(x))
        S.writes(out, prefix)
        return out

    x = S.new(model.conv_in.out_channels)
    S.writes(x, "conv_in")
    skips = [x]
    for i, block in enumerate(model.down_blocks):
        for j, res in enumerate(block.resnets):
            x = resnet(f"down_blocks.{i}.resnets.{j}", res, [x])
            if block.attentions is not None:
                attention(f"down_blocks.{i}.attentions.{j}", block.attentions[j], x)
            skips.append(x)
        if block.downsamplers is not None:
            x = conv(f"down_blocks.{i}.downsamplers.0.conv", x)
            skips.append(x)
    mid = model.mid_block
    x = resnet("mid_block.resnets.0", mid.resnets[0], [x])
    if mid.attentions is not None:
        attention("mid_block.attentions.0", mid.attentions[0], x)
    x = resnet("mid_block.resnets.1", mid.resnets[1], [x])
    for i, block in enumerate(model.up_blocks):
        for j, res in enumerate(block.resnets):
            x = resnet(f"up_blocks.{i}.resnets.{j}", res, [x, skips.pop()])
            if block.attentions is not None:
                attention(f"up_blocks.{i}.attentions.{j}", block.attentions[j], x)
        if block.upsamplers is not None:
            x = conv(f"up_blocks.{i}.upsamplers.0.conv", x)
    S.norm(x, model.conv_norm_out.channels_per_group)
    S.writes(x, "conv_norm_out")
    S.slot(x, "conv_out.weight", 1, reads=True)
    return S.streams


def _stream_orders(model: nn.Module, plan: Dict[str, List[Order]]) -> None:
    """Add every stream's permutation to ``plan``: by the L1 norm of the weights that read it, whole groups."""
    params = dict(model.named_parameters())
    for stream in unet_streams(model):
        unit = stream.unit()
        if unit is None:
            continue
        score = torch.zeros(stream.size)
        for name, dim, offset, reads in stream.slots:
            if reads:
                w = params[name].detach().narrow(dim, offset, stream.size).abs().float().cpu()
                score += w.transpose(0, dim).reshape(stream.size, -1).sum(1)
        index = _grouped_order(score, unit)
        for name, dim, offset, _ in stream.slots:
            full = params[name].shape[dim]
            if full == stream.size:
                plan.setdefault(name, []).append((dim, index))
            else:  # one part of a concatenated input: the rest stays in place
                whole = torch.arange(full)
                whole[offset:offset + stream.size] = index + offset
                plan.setdefault(name, []).append((dim, whole))


def channel_orders(model: nn.Module, streams: bool = True) -> Dict[str, List[Order]]:
    """For every parameter to permute, its (dim, index) pairs; computed from ``model``'s current weights. With
    ``streams`` (a :class:`~ddsm.models.SlimmableUNet` only), the shared channel streams too."""
    plan: Dict[str, List[Order]] = {}

    def add(prefix: str, index: torch.Tensor, names: Sequence[Tuple[str, int]]) -> None:
        for name, dim in names:
            plan.setdefault(f"{prefix}.{name}" if prefix else name, []).append((dim, index))

    with torch.no_grad():
        for prefix, m in model.named_modules():
            if isinstance(m, ResnetBlock):
                score = m.conv2.weight.abs().sum(dim=(0, 2, 3)).float().cpu()
                index = _grouped_order(score, m.norm2.channels_per_group)
                add(prefix, index, [("conv1.weight", 0), ("conv1.bias", 0), ("time_emb_proj.weight", 0),
                                    ("time_emb_proj.bias", 0), ("norm2.weight", 0), ("norm2.bias", 0),
                                    ("conv2.weight", 1)])
            elif isinstance(m, AttentionBlock):
                score = m.to_out[0].weight.abs().sum(dim=0).float().cpu()
                if m.head_dim:
                    add(prefix, _grouped_order(score, m.head_dim),
                        [(f"to_{p}.{k}", 0) for p in "qkv" for k in ("weight", "bias")] + [("to_out.0.weight", 1)])
                else:  # one head over all channels: q.k sums over them (q, k rows together), v meets to_out
                    qk = (m.to_q.weight.abs().sum(dim=1) * m.to_k.weight.abs().sum(dim=1)).float().cpu()
                    add(prefix, _grouped_order(qk, 1), [(f"to_{p}.{k}", 0) for p in "qk" for k in ("weight", "bias")])
                    add(prefix, _grouped_order(score, 1),
                        [("to_v.weight", 0), ("to_v.bias", 0), ("to_out.0.weight", 1)])
            elif isinstance(m, TimestepEmbedding):
                score = m.linear_2.weight.abs().sum(dim=0).float().cpu()
                index = _grouped_order(score, 1)
                add(prefix, index, [("linear_1.weight", 0), ("linear_1.bias", 0), ("linear_2.weight", 1)])
        if streams:
            _stream_orders(model, plan)
    return plan


def _permute(t: torch.Tensor, orders: Iterable[Order]) -> None:
    for dim, index in orders:
        t.copy_(t.index_select(dim, index.to(t.device)))


def reorder_(model: nn.Module, mirrors: Sequence[Sequence[torch.Tensor]] = (),
             optimizer: Optional[torch.optim.Optimizer] = None,
             plan: Optional[Dict[str, List[Order]]] = None, streams: bool = True) -> Dict[str, List[Order]]:
    """Permute ``model``'s channels by importance (:func:`channel_orders`), in place; width 1.0 computes the same
    function. ``mirrors``: tensor lists in the order of ``model.parameters()`` (an EMA's shadow parameters) that get
    the same permutation; ``optimizer``: its per-parameter state tensors shaped like their parameter (Adam's
    moments) are permuted too; ``plan``: apply this plan instead of the model's own. Returns the plan applied."""
    plan = channel_orders(model, streams) if plan is None else plan
    names = [name for name, _ in model.named_parameters()]
    params = dict(model.named_parameters())
    missing = sorted(set(plan) - set(params))
    if missing:
        raise ValueError(f"reorder_: no parameters named {missing[:3]} in the model")
    for mirror in mirrors:
        if len(mirror) != len(names):
            raise ValueError(f"reorder_: a mirror holds {len(mirror)} tensors, the model {len(names)} parameters")
    with torch.no_grad():
        for i, name in enumerate(names):
            if name not in plan:
                continue
            p = params[name]
            _permute(p.data, plan[name])
            for mirror in mirrors:
                _permute(mirror[i].data, plan[name])
            state = optimizer.state.get(p, {}) if optimizer is not None else {}
            for value in state.values():
                if torch.is_tensor(value) and value.shape == p.shape:
                    _permute(value, plan[name])
    return plan
