"""The frozen dense teacher of ``train.teacher_weight``: a copy of the model the supernet starts from (``--init-from``)
or of the dense warm-up's moving average at the end of ``train.full_width_steps``. Every width then also regresses
the teacher's prediction, as knowledge distillation from the dense model the supernet was made from: a target with
far less variance than the noise itself, and one that keeps the shared full width from drifting away from what the
dense model had learnt while the narrow widths pull on the same weights.

The teacher is written to ``RUN/teacher/`` when it is made, so a resumed run distills from the same weights."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Optional

import torch

from ..config import ConfigError
from ..utils import PathLike
from .run import save_pretrained_atomically

__all__ = ["TEACHER_DIRNAME", "freeze_teacher", "initial_teacher", "save_teacher", "load_teacher",
           "teacher_prediction"]

TEACHER_DIRNAME = "teacher"


def freeze_teacher(model, device=None):
    """An evaluation-mode copy of ``model`` (a SlimmableUNet) with no gradients, on ``device``."""
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    return teacher.to(device) if device is not None else teacher


def initial_teacher(model, train_config, *, from_init: bool, device=None):
    """The teacher a run starts with: a frozen copy of ``model`` when it came from ``--init-from``
    (``from_init``), else None (the warm-up's average becomes it later). Raises :class:`ConfigError` when
    ``train.teacher_weight > 0`` has no teacher to come from."""
    tc = train_config
    if tc.teacher_weight <= 0:
        return None
    if not from_init and not tc.full_width_steps:
        raise ConfigError(f"train.teacher_weight={tc.teacher_weight} needs a teacher: --init-from DENSE_DIR (that "
                          "model is the teacher) or train.full_width_steps > 0 (the warm-up's average is)")
    return freeze_teacher(model, device) if from_init else None


def save_teacher(teacher, run_root: PathLike) -> Path:
    """Write ``teacher`` to ``run_root/teacher`` atomically (a crash leaves the old folder or none)."""
    path = Path(run_root) / TEACHER_DIRNAME
    save_pretrained_atomically(lambda d: teacher.save_pretrained(d), path)
    return path


def load_teacher(run_root: PathLike, device=None):
    """The teacher a run saved, or None when it has none yet."""
    from ..models import SlimmableUNet

    path = Path(run_root) / TEACHER_DIRNAME
    if not (path / "config.json").is_file():
        return None
    model = SlimmableUNet.from_pretrained(path, local_files_only=True)
    return freeze_teacher(model, device)


@torch.no_grad()
def teacher_prediction(teacher, noisy: torch.Tensor, timesteps: torch.Tensor, class_labels: Optional[torch.Tensor],
                       accelerator=None) -> torch.Tensor:
    """The teacher's full-width prediction on a training batch (float32, no gradient), under the accelerator's
    autocast when there is one."""
    import contextlib

    ctx = accelerator.autocast() if accelerator is not None else contextlib.nullcontext()
    with ctx:
        out = teacher(noisy, timesteps, class_labels=class_labels, width=max(teacher.width_choices)).sample
    return out.float()
