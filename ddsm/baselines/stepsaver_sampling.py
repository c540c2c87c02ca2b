"""Sampling with a step count per condition (StepSaver as a sampler): images sharing a count run together, and the
MACs actually spent are counted per image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from .stepsaver import StepSaver, remap_to_steps
from .stepsaver_curves import Condition, StepSaverError, condition_key

__all__ = ["StepSaverSampleResult", "sample_per_condition"]


@dataclass
class StepSaverSampleResult:
    """Images sampled with a step count per condition, in seed order, and what they cost.

    ``steps[i]`` is image ``i``'s step count; ``groups`` maps each step count to the :class:`SampleResult` of its
    images; ``macs_per_image`` is the mean over all images of the UNet MACs actually spent;
    ``full_macs_per_step`` is one step of the full width (``macs_per_image / full_macs_per_step`` = mean full-width
    steps' worth of compute).
    """

    images: torch.Tensor
    seeds: List[int]
    class_labels: Optional[List[int]]
    steps: List[int]
    macs_per_image: float
    full_macs_per_step: float
    seconds: float
    groups: Dict[int, Any]
    computed_steps: np.ndarray  # (N,) network evaluations per image

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / max(1, len(self.seeds))

    @property
    def mean_steps(self) -> float:
        return float(np.mean(self.steps))


def sample_per_condition(model, scheduler_name: str, scheduler_config: Mapping[str, Any],
                         steps_for: Union[StepSaver, Callable[[Condition], int], Mapping[Condition, int]], *,
                         seeds: Sequence[int], class_labels: Optional[Sequence[int]] = None, schedule=None,
                         width: Optional[float] = None, skip_policy=None, guidance_scale: float = 1.0,
                         batch_size: int = 64, autoencoder=None, macs_table: Optional[dict] = None,
                         accelerator=None, progress: bool = False) -> StepSaverSampleResult:
    """Sample every image with its condition's own step count (StepSaver as a sampler).

    Images sharing a step count run together in one :func:`ddsm.sampling.sample` call; they come back in seed
    order and, since each image depends only on its seed and label, equal what sampling them one by one gives.
    Each count runs ``width`` at every step (default: full), or, with ``schedule`` (a
    :class:`~ddsm.schedules.Schedule`), that width schedule remapped onto the count by nearest timestep.
    ``accelerator`` is passed on to :func:`ddsm.sampling.sample` (seeds split across processes, mixed precision).
    """
    from ..models import macs_table as count_table
    from ..sampling import build_scheduler, sample

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise StepSaverError("seeds is empty: nothing to sample")
    if class_labels is not None:
        class_labels = [int(c) for c in class_labels]
        if len(class_labels) != len(seeds):
            raise StepSaverError(f"class_labels has {len(class_labels)} entries for {len(seeds)} seeds")
    steps = _step_counts(steps_for, class_labels if class_labels is not None else [None] * len(seeds))
    table = {float(w): m for w, m in (macs_table or count_table(model)).items()}
    width = float(width) if width is not None else max(model.width_choices)
    forwards = 2 if (guidance_scale != 1.0 and class_labels is not None) else 1

    shape = None
    images: Optional[torch.Tensor] = None
    groups: Dict[int, Any] = {}
    computed = np.zeros(len(seeds), dtype=np.int64)
    spent = 0.0
    seconds = 0.0
    for count in sorted(set(steps)):
        idx = [i for i, s in enumerate(steps) if s == count]
        plan = (remap_to_steps(schedule, count, scheduler_name, scheduler_config) if schedule is not None
                else width)
        result = sample(model, build_scheduler(scheduler_name, dict(scheduler_config)), plan,
                        num_inference_steps=count, seeds=[seeds[i] for i in idx],
                        class_labels=None if class_labels is None else [class_labels[i] for i in idx],
                        guidance_scale=guidance_scale, batch_size=batch_size, skip_policy=skip_policy,
                        autoencoder=autoencoder, macs_table=table, accelerator=accelerator, progress=progress)
        if images is None:
            shape = tuple(result.images.shape[1:])
            images = torch.empty((len(seeds), *shape), dtype=result.images.dtype)
        images[idx] = result.images
        computed[idx] = result.computed.sum(1)
        spent += result.macs_per_image * len(idx)
        seconds += result.seconds
        groups[count] = result
    return StepSaverSampleResult(images=images, seeds=seeds, class_labels=class_labels, steps=steps,
                                 macs_per_image=spent / len(seeds),
                                 full_macs_per_step=float(table[max(model.width_choices)] * forwards),
                                 seconds=seconds, groups=groups, computed_steps=computed)


def _step_counts(steps_for: Union[StepSaver, Callable[[Condition], int], Mapping[Condition, int]],
                 labels: Sequence[Condition]) -> List[int]:
    """Each image's step count: its label's count from a StepSaver, a ``{label: count}`` mapping or a function."""
    if isinstance(steps_for, StepSaver):
        lookup = steps_for.recommend_steps
    elif isinstance(steps_for, Mapping):
        table = {condition_key(c): int(s) for c, s in steps_for.items()}
        lookup = lambda c: table[condition_key(c)]  # noqa: E731
    else:
        lookup = steps_for
    per_label = {c: int(lookup(c)) for c in set(labels)}
    steps = [per_label[c] for c in labels]
    if any(s <= 0 for s in steps):
        raise StepSaverError(f"step counts must be positive, got {sorted(set(steps))}")
    return steps
