"""StepSaver's labels: per condition, the mean SSIM to a many-step reference at each candidate step count, and the
minimum step count read off that curve.

Every condition is sampled at a many-step reference (e.g. 100 DDIM steps) and at each candidate count (5, 8, 10, ...,
50) with the same seeds (:func:`ssim_curves`); its label is the smallest candidate count whose mean SSIM to the
reference is at least a threshold (:func:`min_steps`), under a labelling rule (``rule``):

* ``"stays"`` (default): the smallest count ``c`` such that every candidate ``c' >= c`` meets the threshold too (the
  SSIM "stops changing"); robust to a lucky dip at one small count;
* ``"first"``: the smallest count that meets the threshold.

A condition that never meets the threshold gets the largest candidate (:func:`label_curves`).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ["DEFAULT_CANDIDATES", "RULES", "Condition", "StepSaverError", "min_steps", "condition_key", "ssim_curves",
           "check_candidates", "label_curves"]

DEFAULT_CANDIDATES = (5, 8, 10, 15, 20, 25, 30, 40, 50)
RULES = ("stays", "first")

Condition = Optional[int]  # a class label, or None for an unconditional model


class StepSaverError(ValueError):
    """Bad StepSaver input, or a StepSaver file that does not validate."""


def min_steps(curve: Mapping[int, float], threshold: float, rule: str = "stays") -> Optional[int]:
    """The minimum step count of one condition from its SSIM curve (``{steps: mean SSIM to the reference}``).

    ``rule="stays"``: the smallest count from which every larger candidate also has SSIM >= ``threshold``;
    ``rule="first"``: the smallest count with SSIM >= ``threshold``. ``None`` when no count meets the threshold.
    """
    if rule not in RULES:
        raise StepSaverError(f"rule={rule!r}: expected one of {list(RULES)}")
    if not curve:
        raise StepSaverError("the SSIM curve is empty: no candidate step counts were measured")
    counts = sorted(int(c) for c in curve)
    ok = [curve[c] >= threshold for c in counts]
    if rule == "first":
        return next((c for c, good in zip(counts, ok) if good), None)
    best = None
    for c, good in zip(reversed(counts), reversed(ok)):  # walk down from the largest count while it holds
        if not good:
            break
        best = c
    return best


def condition_key(condition: Any) -> Condition:
    """A condition as a table key: None, or a Python int (numpy / 0-d torch integers accepted)."""
    if condition is None:
        return None
    if getattr(condition, "ndim", None) == 0 and hasattr(condition, "item"):
        condition = condition.item()
    if isinstance(condition, (np.integer,)):
        condition = int(condition)
    if isinstance(condition, bool) or not isinstance(condition, int):
        raise StepSaverError(f"condition {condition!r} ({type(condition).__name__}) is not a class label (int) or "
                             "None")
    return condition


def _check_conditions(model, conditions: Optional[Sequence[Condition]]) -> List[Condition]:
    """``conditions`` as distinct table keys; by default every class of ``model``, or ``[None]`` when it is
    unconditional."""
    if conditions is None:
        k = getattr(model.config, "num_classes", None)
        conditions = list(range(k)) if k else [None]
    conds = [condition_key(c) for c in conditions]
    if not conds:
        raise StepSaverError("conditions is empty")
    if len(set(conds)) != len(conds):
        raise StepSaverError(f"conditions has duplicates: {conds}")
    if None in conds and len(conds) > 1:
        raise StepSaverError("conditions mixes None (unconditional) with class labels")
    return conds


@torch.no_grad()
def ssim_curves(model, scheduler_name: str, scheduler_config: Mapping[str, Any], *, seeds: Sequence[int],
                candidates: Sequence[int] = DEFAULT_CANDIDATES, reference_steps: int = 100,
                conditions: Optional[Sequence[Condition]] = None, width: Optional[float] = None,
                guidance_scale: float = 1.0, batch_size: int = 64, autoencoder=None, accelerator=None,
                progress: bool = True) -> Dict[Condition, Dict[int, float]]:
    """Mean SSIM to the ``reference_steps`` output, per condition and candidate step count, on the same seeds.

    Every condition uses the same ``seeds`` (image ``i`` of a condition depends only on its seed and label), and all
    conditions run in one batched :func:`ddsm.sampling.sample` call per step count. The network runs at ``width``
    (default: the full width) at every step; ``accelerator`` is passed on to :func:`ddsm.sampling.sample`.
    """
    from ..evaluation.metrics import ssim
    from ..sampling import build_scheduler, sample
    from tqdm.auto import tqdm

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise StepSaverError("seeds is empty: StepSaver needs at least one seed per condition")
    candidates = check_candidates(candidates)
    if not isinstance(reference_steps, int) or reference_steps <= 0:
        raise StepSaverError(f"reference_steps={reference_steps!r}: expected a positive int")
    conds = _check_conditions(model, conditions)
    width = float(width) if width is not None else max(model.width_choices)
    n = len(seeds)
    all_seeds = [s for _ in conds for s in seeds]
    labels = None if conds == [None] else [c for c in conds for _ in seeds]

    def run(steps: int) -> torch.Tensor:
        return sample(model, build_scheduler(scheduler_name, dict(scheduler_config)), width,
                      num_inference_steps=steps, seeds=all_seeds, class_labels=labels,
                      guidance_scale=guidance_scale, batch_size=batch_size, autoencoder=autoencoder,
                      accelerator=accelerator, progress=False).images

    todo = [reference_steps] + [c for c in candidates if c != reference_steps]
    curves: Dict[Condition, Dict[int, float]] = {c: {} for c in conds}
    reference = None
    for steps in tqdm(todo, desc="StepSaver labelling", unit="count", disable=not progress, leave=False):
        images = run(steps)
        if reference is None:
            reference = images
        if steps not in candidates:
            continue
        per_image = ssim(images, reference)  # (len(conds) * n,)
        for i, c in enumerate(conds):
            curves[c][steps] = float(per_image[i * n: (i + 1) * n].mean())
    return curves


def check_candidates(candidates: Iterable[int]) -> Tuple[int, ...]:
    """``candidates`` as a sorted tuple of distinct positive ints (StepSaverError otherwise)."""
    try:
        values = [int(c) for c in candidates]
    except (TypeError, ValueError):
        raise StepSaverError(f"candidates={candidates!r}: expected a list of positive ints") from None
    if not values or any(v <= 0 for v in values) or any(int(c) != c for c in candidates):
        raise StepSaverError(f"candidates={list(candidates)!r}: expected a non-empty list of positive ints")
    if len(set(values)) != len(values):
        raise StepSaverError(f"candidates={values}: duplicate step counts")
    return tuple(sorted(values))


def label_curves(curves: Mapping[Condition, Mapping[int, float]], threshold: float, rule: str,
                 candidates: Sequence[int]) -> Dict[Condition, int]:
    """Every condition's minimum step count among ``candidates`` (:func:`min_steps`), or the largest candidate when
    none meets ``threshold``."""
    out = {}
    for c, curve in curves.items():
        measured = {int(s): float(v) for s, v in curve.items() if int(s) in set(candidates)}
        found = min_steps(measured, threshold, rule) if measured else None
        out[c] = found if found is not None else max(candidates)
    return out
