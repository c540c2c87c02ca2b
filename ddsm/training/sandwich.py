"""The sandwich rule of slimmable networks (Yu & Huang 2019, BigNAS) as DDSM trains its supernet: which widths one
step trains, their losses on one shared noisy batch, and the moving average of the weights that is saved."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel

__all__ = ["sandwich_widths", "sandwich_losses", "timestep_weights", "ExponentialMovingAverage"]


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


def timestep_weights(width: float, width_choices: Sequence[float], timesteps: torch.Tensor, bias: float,
                     num_train_timesteps: int) -> Optional[torch.Tensor]:
    """Per-sample loss weights that tilt a narrow width's training toward high-noise (``bias > 0``) or low-noise
    (``bias < 0``) timesteps.

    ``1 + b_w (2 t / (T - 1) - 1)`` with ``b_w = bias (w_max - w) / (w_max - w_min)``: the largest width keeps
    uniform weights, the smallest gets weights changing linearly from ``1 - bias`` at ``t = 0`` to ``1 + bias`` at
    ``t = T - 1``. Their mean under uniform timesteps is 1, so the loss scale is unchanged; every timestep keeps a
    weight >= ``1 - |bias|``. Returns None (plain mean) when the width gets no tilt.

    Why: a step-aware schedule runs the narrow widths where they cost the least quality (DDSM's CIFAR-10 schedule:
    width 0.5 at the high-noise start), so their few parameters are best spent there. Which end that is depends on
    the model: on configs/mnist.yaml the narrow widths are relatively worst at high noise, and a positive tilt there
    made the full width worse too (README, "Training recipe").
    """
    if not -1.0 <= bias <= 1.0:
        raise ValueError(f"timestep bias {bias}: expected a float in [-1, 1]")
    w_max, w_min = max(width_choices), min(width_choices)
    if bias == 0.0 or w_max == w_min or width >= w_max:
        return None
    b = bias * (w_max - float(width)) / (w_max - w_min)
    return 1.0 + b * (2.0 * timesteps.float() / max(num_train_timesteps - 1, 1) - 1.0)


def _mse(pred: torch.Tensor, target: torch.Tensor, weights: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean squared error; with per-sample ``weights`` (B,), the weighted mean of the per-sample errors."""
    if weights is None:
        return F.mse_loss(pred.float(), target.float())
    per_sample = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    return (weights.to(per_sample) * per_sample).mean()


def sandwich_losses(model, widths: Sequence[float], noisy: torch.Tensor, timesteps: torch.Tensor,
                    target: torch.Tensor, class_labels: Optional[torch.Tensor] = None, *,
                    distill_weight: float = 0.0, distill_only: bool = False,
                    teacher: Optional[torch.Tensor] = None, teacher_weight: float = 0.0,
                    sample_weights: Optional[Mapping[float, torch.Tensor]] = None,
                    backward: Optional[Callable[[torch.Tensor], None]] = None,
                    no_sync: Optional[Callable[[], ContextManager]] = None) -> Dict[float, Dict[str, torch.Tensor]]:
    """Run every width of one sandwich on the same noisy batch; back-propagate each width's loss right away.

    Each width runs forward and backward before the next starts, so only one width's activations are alive at a
    time; the gradients add up in ``.grad``. Under DDP, every width but the last runs inside ``no_sync()``, so the
    summed gradient is all-reduced once.

    A width's objective: ``mse`` to the ground truth (dropped for the narrower widths with ``distill_only``)
    ``+ distill_weight * distill`` (narrower widths: the largest width's detached prediction, in-place
    distillation as in US-Nets / once-for-all) ``+ teacher_weight * teacher`` (every width: a frozen dense model's
    prediction, knowledge distillation from the model the supernet was made from).

    Args:
        model: the supernet (possibly wrapped by DDP), called as ``model(x, t, class_labels=..., width=w)``.
        widths: largest first (:func:`sandwich_widths`); the first width's detached prediction is the
            distillation target of the others.
        noisy: ``x_t`` (B, C, H, W). timesteps: (B,). target: what the model regresses (B, C, H, W).
        class_labels: (B,) or None.
        distill_weight: weight of ``MSE(pred_w, pred_largest.detach())`` for the narrower widths (0: off).
        distill_only: the narrower widths learn only from the largest width (no ground-truth term).
        teacher: a frozen model's prediction on the same batch (B, C, H, W), or None.
        teacher_weight: weight of ``MSE(pred_w, teacher)`` for every width (0 or ``teacher=None``: off).
        sample_weights: ``{width: (B,) weights}`` of every term of that width (:func:`timestep_weights`); widths
            not in it take the plain mean.
        backward: called with each width's loss (e.g. ``accelerator.backward``); None: no backward (evaluation).
        no_sync: a context factory (e.g. ``lambda: accelerator.no_sync(model)``) for all widths but the last.

    Returns:
        ``{width: {"loss": ..., "mse": ..., "distill": ..., "teacher": ...}}``, detached float32 scalars: ``loss``
        is the objective that was back-propagated, ``mse`` the plain (unweighted) error to the ground-truth target,
        ``distill`` and ``teacher`` the errors to the two distillation targets (where they are used).
    """
    widths = [float(w) for w in widths]
    if widths != sorted(widths, reverse=True):
        raise ValueError(f"sandwich_losses: widths {widths} must be in decreasing order (the largest first)")
    if teacher is not None and teacher.shape != target.shape:
        raise ValueError(f"sandwich_losses: teacher prediction of shape {tuple(teacher.shape)}, expected the "
                         f"target's {tuple(target.shape)}")
    use_teacher = teacher is not None and teacher_weight > 0
    out: Dict[float, Dict[str, torch.Tensor]] = {}
    largest = None
    for i, w in enumerate(widths):
        last = i == len(widths) - 1
        weights = (sample_weights or {}).get(w)
        with (no_sync() if no_sync is not None and not last else contextlib.nullcontext()):
            pred = model(noisy, timesteps, class_labels=class_labels, width=w).sample       # (B, C, H, W)
            mse = F.mse_loss(pred.float(), target.float())
            terms = {"mse": mse.detach()}
            loss = _mse(pred, target, weights) if weights is not None else mse
            if i == 0:
                largest = pred.detach().float()
            elif distill_weight > 0:
                distill = _mse(pred, largest, weights)
                loss = distill_weight * distill + (0.0 if distill_only else loss)
                terms["distill"] = distill.detach()
            if use_teacher:
                from_teacher = _mse(pred, teacher, weights)
                loss = loss + teacher_weight * from_teacher
                terms["teacher"] = from_teacher.detach()
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
