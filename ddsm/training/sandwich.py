"""The sandwich rule of slimmable networks (Yu & Huang 2019, BigNAS) as DDSM trains its supernet: which widths one
step trains, their losses on one shared noisy batch, and the moving average of the weights that is saved."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel

__all__ = ["sandwich_widths", "sandwich_losses", "ExponentialMovingAverage"]


def sandwich_widths(width_choices: Sequence[float], n: int, generator: torch.Generator) -> Tuple[float, ...]:
    """The widths one step trains, largest first: the largest, ``n - 2`` drawn without replacement from the others,
    and the smallest (all widths when there are no more than ``n``).

    Args:
        width_choices: the model's widths (any order).
        n: widths per step (``train.sandwich_widths``), at least 1 (1: the largest only, 2: largest and smallest).
        generator: draws the middle widths; seed it per step for reproducible runs.
    """
    widths = sorted({float(w) for w in width_choices}, reverse=True)
    if n <= 0:
        raise ValueError(f"sandwich_widths: n={n}: expected a positive int")
    if n >= len(widths):
        return tuple(widths)
    if n == 1:
        return (widths[0],)
    middle = widths[1:-1]
    picked = torch.randperm(len(middle), generator=generator)[: n - 2].tolist()
    return (widths[0], *sorted((middle[i] for i in picked), reverse=True), widths[-1])


def sandwich_losses(model, widths: Sequence[float], noisy: torch.Tensor, timesteps: torch.Tensor,
                    target: torch.Tensor, class_labels: Optional[torch.Tensor] = None, *,
                    distill_weight: float = 0.0, distill_only: bool = False,
                    backward: Optional[Callable[[torch.Tensor], None]] = None,
                    no_sync: Optional[Callable[[], ContextManager]] = None) -> Dict[float, Dict[str, torch.Tensor]]:
    """Run every width of one sandwich on the same noisy batch; back-propagate each width's loss right away.

    Each width runs forward and backward before the next starts, so only one width's activations are alive at a
    time; the gradients add up in ``.grad``. Under DDP, every width but the last runs inside ``no_sync()``, so the
    summed gradient is all-reduced once.

    Args:
        model: the supernet (possibly wrapped by DDP), called as ``model(x, t, class_labels=..., width=w)``.
        widths: largest first (:func:`sandwich_widths`); the first width's detached prediction is the
            distillation target of the others.
        noisy: ``x_t`` (B, C, H, W). timesteps: (B,). target: what the model regresses (B, C, H, W).
        class_labels: (B,) or None.
        distill_weight: weight of ``MSE(pred_w, pred_largest.detach())`` for the narrower widths (0: off).
        distill_only: the narrower widths learn only from the largest width (no ground-truth term).
        backward: called with each width's loss (e.g. ``accelerator.backward``); None: no backward (evaluation).
        no_sync: a context factory (e.g. ``lambda: accelerator.no_sync(model)``) for all widths but the last.

    Returns:
        ``{width: {"loss": ..., "mse": ..., "distill": ...}}``, detached float32 scalars: ``loss`` is the objective
        that was back-propagated, ``mse`` the error to the ground-truth target, ``distill`` the error to the largest
        width's prediction (narrower widths with ``distill_weight > 0`` only).
    """
    widths = [float(w) for w in widths]
    if widths != sorted(widths, reverse=True):
        raise ValueError(f"sandwich_losses: widths {widths} must be in decreasing order (the largest first)")
    out: Dict[float, Dict[str, torch.Tensor]] = {}
    teacher = None
    for i, w in enumerate(widths):
        last = i == len(widths) - 1
        with (no_sync() if no_sync is not None and not last else contextlib.nullcontext()):
            pred = model(noisy, timesteps, class_labels=class_labels, width=w).sample       # (B, C, H, W)
            mse = F.mse_loss(pred.float(), target.float())
            terms = {"mse": mse.detach()}
            if i == 0:
                loss = mse
                teacher = pred.detach().float()
            elif distill_weight > 0:
                distill = F.mse_loss(pred.float(), teacher)
                loss = distill_weight * distill + (0.0 if distill_only else mse)
                terms["distill"] = distill.detach()
            else:
                loss = mse
            if backward is not None:
                backward(loss)
        out[w] = {"loss": loss.detach(), **terms}
    return out


class ExponentialMovingAverage(EMAModel):
    """diffusers' ``EMAModel`` of a model's parameters with DDSM's decay: ``shadow <- d * shadow + (1 - d) * param``
    after every optimiser step, ``d = min(decay, (1 + n) / (10 + n))`` at update ``n = 1, 2, ...`` (so early averages
    are short). ``update_after_step=-1`` starts diffusers' count of ``n`` at the first update, as ddsm always has.

    A checkpointable object for ``accelerator.register_for_checkpointing``. Loading copies the averages onto the
    device of the current ones (accelerate loads them to the CPU) and also reads the state that ddsm's own EMA wrote
    before it used diffusers' (``{"decay", "num_updates", "shadow": {name: tensor}}``).
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay={decay}: expected a float in [0, 1)")
        super().__init__(model.parameters(), decay=float(decay), update_after_step=-1)

    def load_state_dict(self, state: Mapping) -> None:
        if "shadow" in state:  # ddsm's own format: the averages by parameter name, in the model's order
            state = {"decay": float(state["decay"]), "optimization_step": int(state["num_updates"]),
                     "shadow_params": list(state["shadow"].values())}
        current = self.shadow_params
        if len(state["shadow_params"]) != len(current):
            raise ValueError(f"EMA state does not match the model: {len(state['shadow_params'])} parameters, the "
                             f"model has {len(current)}")
        super().load_state_dict(dict(state))
        self.shadow_params = [p.to(c.device) for p, c in zip(self.shadow_params, current)]
