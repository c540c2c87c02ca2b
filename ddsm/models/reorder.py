"""Importance reordering: put a trained supernet's most important channels first, where the narrow widths look.

A width ``w`` computes with the *first* channels of every layer (:mod:`.layers`), so after dense training (a
``full_width_steps`` warm-up, or ``--init-from`` a dense model) the narrow widths start from arbitrary channels.
Permuting channels that no other layer sees is free at width 1.0 and hands the narrow widths the channels that carry
the most weight (US-Nets / OFA sort channels the same way before training smaller widths). Permuted here, each by
the L1 norm of the weights that read it:

* the hidden channels of every ResNet block (conv1's outputs, the time projection, norm2, conv2's inputs), whole
  GroupNorm groups at a time, so every group keeps its members and its statistics;
* the heads of every attention block (q, k, v rows and the output projection's columns), whole heads at a time;
* the hidden units of the time embedding MLP (linear_1's outputs, linear_2's inputs).

The residual streams and skip connections are shared by many layers and stay in place. :func:`channel_orders` says
what to permute (parameter name -> (dim, index)); :func:`reorder_` applies it to a model and, with the same indices,
to the moving averages and optimiser moments that mirror its parameters, so training carries on seamlessly.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .blocks import AttentionBlock, ResnetBlock, TimestepEmbedding

__all__ = ["channel_orders", "reorder_"]

Order = Tuple[int, torch.Tensor]  # (dim, index): param.index_select(dim, index)


def _grouped_order(score: torch.Tensor, size: int) -> torch.Tensor:
    """Channel indices that sort blocks of ``size`` consecutive channels by their summed ``score``, largest first
    (stable: ties keep their order, so the result is the same on every process)."""
    blocks = score.reshape(-1, size).sum(1)
    order = torch.argsort(blocks, descending=True, stable=True)
    return (order[:, None] * size + torch.arange(size)).reshape(-1)


def channel_orders(model: nn.Module) -> Dict[str, List[Order]]:
    """For every parameter to permute, its (dim, index) pairs; computed from ``model``'s current weights."""
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
            elif isinstance(m, AttentionBlock) and m.head_dim:
                score = m.to_out[0].weight.abs().sum(dim=0).float().cpu()
                index = _grouped_order(score, m.head_dim)
                add(prefix, index, [(f"to_{p}.{k}", 0) for p in "qkv" for k in ("weight", "bias")]
                    + [("to_out.0.weight", 1)])
            elif isinstance(m, TimestepEmbedding):
                score = m.linear_2.weight.abs().sum(dim=0).float().cpu()
                index = _grouped_order(score, 1)
                add(prefix, index, [("linear_1.weight", 0), ("linear_1.bias", 0), ("linear_2.weight", 1)])
    return plan


def _permute(t: torch.Tensor, orders: Iterable[Order]) -> None:
    for dim, index in orders:
        t.copy_(t.index_select(dim, index.to(t.device)))


def reorder_(model: nn.Module, mirrors: Sequence[Sequence[torch.Tensor]] = (),
             optimizer: Optional[torch.optim.Optimizer] = None,
             plan: Optional[Dict[str, List[Order]]] = None) -> Dict[str, List[Order]]:
    """Permute ``model``'s channels by importance (:func:`channel_orders`), in place; width 1.0 computes the same
    function. ``mirrors``: tensor lists in the order of ``model.parameters()`` (an EMA's shadow parameters) that get
    the same permutation; ``optimizer``: its per-parameter state tensors shaped like their parameter (Adam's
    moments) are permuted too; ``plan``: apply this plan instead of the model's own. Returns the plan applied."""
    plan = channel_orders(model) if plan is None else plan
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
