"""Run infrastructure shared by the supernet and autoencoder trainers: counter-based randomness, the data order,
the step counter, the learning-rate warm-up, the run directory with its atomic checkpoints, and the accelerator.

Randomness is counter-based: everything random in micro-batch ``k`` (data order, noise, timesteps, label dropout,
the sandwich draw, dropout inside the model) comes from generators seeded with ``(seed, k, process)``
(:func:`step_seed`), so a run resumed from a checkpoint continues exactly as if it had never stopped, whatever ran
in between. The data order is a fresh permutation per epoch, each process taking its own slice of every global batch
(:class:`ShardedBatchSampler`).

A run directory (:class:`RunDirectory`) holds::

    config.yaml                  the resolved experiment config
    log.jsonl                    one JSON record per log interval: losses per width, lr, grad norm, it/s
    checkpoints/step-XXXXXXXX/   accelerate save_state (model, optimizer, RNG states, EMA, lr schedule, step)
    checkpoints/latest           name of the newest complete checkpoint (written after its directory is renamed)
    samples/step-XXXXXXXX_wW.png sample grids per width (EMA weights, seeds 0..n-1, DDIM)
    model/                       the EMA weights (SlimmableUNet.save_pretrained), written at the end
    scheduler/                   the DDPMScheduler of the diffusion section (save_pretrained)
    autoencoder/                 latent runs: a copy of the autoencoder the UNet was trained in

Checkpoints are written to ``checkpoints/.tmp-step-XXXXXXXX`` and renamed when complete, so a crash never leaves a
half-written checkpoint under a real name.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Callable, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Sampler

from ..config import ConfigError
from ..utils import PathLike, atomic_write

__all__ = [
    "TrainingDiverged", "step_seed", "step_generator", "warmup_lambda", "ShardedBatchSampler", "StepCounter",
    "RunDirectory", "read_jsonl", "save_pretrained_atomically", "make_accelerator", "with_max_steps",
]

# The data order's random stream; the trainers number their own streams (noise, sandwich draw, ...) apart from it.
_STREAM_DATA = 0


class TrainingDiverged(RuntimeError):
    """A loss (or gradient norm) became NaN or infinite; training stopped before the bad update was applied."""


def step_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed derived from ``seed`` and integer ``keys`` (stream, step, process, ...) by numpy's
    SeedSequence hashing: distinct keys give independent streams."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *[int(k) for k in keys]]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def step_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`step_seed` (draw on the CPU, then move: same numbers on any
    device)."""
    return torch.Generator(device="cpu").manual_seed(step_seed(seed, *keys))


def warmup_lambda(warmup_steps: int) -> Callable[[int], float]:
    """Linear warm-up from ``1/warmup_steps`` to 1 over ``warmup_steps`` optimiser steps, then constant (DDPM,
    DDSM)."""
    # Not diffusers' get_scheduler("constant_with_warmup"): its factor at step k is k / warmup_steps, so the first
    # step would train at lr 0 and every warm-up step one step behind this schedule (tests/test_training.py).
    return lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


class ShardedBatchSampler(Sampler):
    """An endless stream of this process's batches of indices, a pure function of the batch counter.

    Global batch ``k`` (``batch_size * num_processes`` indices) is slice ``k mod E`` of epoch ``k // E``'s
    permutation (``E`` = full global batches per epoch; the remainder of an epoch is dropped); process ``r`` takes
    its ``r``-th ``batch_size`` of it. Epoch ``e``'s permutation is seeded with ``(seed, e)``, so restarting at
    batch ``start`` reproduces the same order.
    """

    def __init__(self, num_items: int, batch_size: int, *, num_processes: int = 1, process_index: int = 0,
                 seed: int = 0, start: int = 0):
        self.num_items, self.batch_size = int(num_items), int(batch_size)
        self.num_processes, self.process_index = int(num_processes), int(process_index)
        self.seed, self.start = int(seed), int(start)
        self.global_batch = self.batch_size * self.num_processes
        if self.global_batch > self.num_items:
            raise ValueError(f"the data set has {self.num_items} images, fewer than one global batch of "
                             f"{self.global_batch} ({self.batch_size} per process x {self.num_processes} "
                             "processes); lower train.batch_size")
        self.batches_per_epoch = self.num_items // self.global_batch
        self._epoch, self._perm = -1, None

    def indices(self, k: int) -> List[int]:
        epoch, b = divmod(int(k), self.batches_per_epoch)
        if epoch != self._epoch:
            self._perm = torch.randperm(self.num_items, generator=step_generator(self.seed, _STREAM_DATA, epoch))
            self._epoch = epoch
        lo = b * self.global_batch + self.process_index * self.batch_size
        return self._perm[lo: lo + self.batch_size].tolist()

    def __iter__(self) -> Iterator[List[int]]:
        k = self.start
        while True:
            yield self.indices(k)
            k += 1


class StepCounter:
    """The optimiser step, and whether the channels were reordered (``train.reorder_channels``: once per run),
    checkpointed through accelerate's custom-object registry."""

    def __init__(self):
        self.step, self.reordered = 0, False

    def state_dict(self) -> dict:
        return {"step": self.step, "reordered": self.reordered}

    def load_state_dict(self, state: Mapping) -> None:
        self.step, self.reordered = int(state["step"]), bool(state.get("reordered", self.reordered))  # older: no flag


_CHECKPOINT = re.compile(r"^step-(\d+)$")


class RunDirectory:
    """The files of one training run (see the module docstring); only the main process writes."""

    def __init__(self, root: PathLike):
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"
        self.samples = self.root / "samples"
        self.config_path = self.root / "config.yaml"
        self.log_path = self.root / "log.jsonl"

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:08d}"

    def list_checkpoints(self) -> List[Tuple[int, Path]]:
        """Complete checkpoints (renamed into place), oldest first."""
        if not self.checkpoints.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.checkpoints.iterdir()
                 if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
        return sorted(found)

    def latest_checkpoint(self) -> Optional[Path]:
        """The checkpoint named by ``checkpoints/latest``, or else the newest complete one, or None."""
        pointer = self.checkpoints / "latest"
        if pointer.is_file():
            named = self.checkpoints / pointer.read_text().strip()
            if _CHECKPOINT.match(named.name) and named.is_dir():
                return named
        found = self.list_checkpoints()
        return found[-1][1] if found else None

    def save_checkpoint(self, accelerator, step: int, keep: int) -> Path:
        """``accelerator.save_state`` into a temporary directory, renamed into place when complete; then the
        ``latest`` pointer; then the oldest checkpoints beyond ``keep`` are deleted. Call on every process."""
        final = self.checkpoint_path(step)
        tmp = self.checkpoints / f".tmp-{final.name}"
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if final.exists():  # the same step saved again (e.g. resumed at the very end): replace it
                shutil.rmtree(final)
            os.replace(tmp, final)
            atomic_write(self.checkpoints / "latest", final.name + "\n")
            for _, old in self.list_checkpoints()[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final

    def prepare(self, config, step: int) -> None:
        """Start or resume writing the run at ``step`` (main process): create the directory, delete temporaries of
        an interrupted checkpoint, drop log records past ``step``, write the ``config``."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.remove_stale_temporaries()
        self.truncate_log(step)
        config.save(self.config_path)

    def remove_stale_temporaries(self) -> None:
        if self.checkpoints.is_dir():
            for p in self.checkpoints.glob(".tmp-*"):
                shutil.rmtree(p, ignore_errors=True)

    def append_log(self, record: Mapping) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")
            f.flush()

    def truncate_log(self, after_step: int) -> None:
        """Drop log records past ``after_step`` (left by a run that crashed after its last checkpoint), and a torn
        last line (see :func:`read_jsonl`). At step 0 (a fresh start) the whole log goes."""
        if after_step == 0:
            self.log_path.unlink(missing_ok=True)
        if not self.log_path.is_file():
            return
        kept = [r for r in read_jsonl(self.log_path) if not isinstance(r, dict) or r.get("step", 0) <= after_step]
        atomic_write(self.log_path, "".join(json.dumps(r, allow_nan=True) + "\n" for r in kept))

    def read_log(self) -> List[dict]:
        return read_jsonl(self.log_path) if self.log_path.is_file() else []

    def check_log(self) -> None:
        """Raise ``ValueError`` naming file and line when the log has an invalid line before its last (call before
        resuming, so that the error comes before any work; a torn last line passes: resuming drops it)."""
        if self.log_path.is_file():
            read_jsonl(self.log_path, warn=False)


def read_jsonl(path: PathLike, warn: bool = True) -> list:
    """The records of an append-only JSON-lines file (blank lines skipped).

    A last line that is not valid JSON is the torn write of a process killed while appending: it is dropped, with a
    ``RuntimeWarning`` when ``warn``. An invalid line before the last cannot come from that and is a ``ValueError``
    naming file and line.
    """
    lines = [(i, line) for i, line in enumerate(Path(path).read_text().splitlines(), 1) if line.strip()]
    records = []
    for i, line in lines:
        try:
            records.append(json.loads(line))
        except ValueError as e:
            if i != lines[-1][0]:
                raise ValueError(f"{path}, line {i}: not a JSON record ({e}); only the last line of an "
                                 "append-only log can be torn by an interrupted write: repair or remove it") from None
            if warn:
                warnings.warn(f"{path}, line {i}: dropping a torn last record (an interrupted write): "
                              f"{line[:60]!r}", RuntimeWarning, stacklevel=2)
    return records


def save_pretrained_atomically(save: Callable[[Path], None], path: PathLike) -> Path:
    """Call ``save(tmp_dir)`` (e.g. ``model.save_pretrained``), then move the directory into place, replacing an
    older one; a crash leaves either the old directory or the new one, never a half-written one under ``path``."""
    path = Path(path)
    tmp, old = path.with_name(f".{path.name}.tmp"), path.with_name(f".{path.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    save(tmp)
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def make_accelerator(gradient_accumulation_steps: int = 1):
    """An ``accelerate.Accelerator`` for this machine: the CPU when there is no GPU (also with several processes,
    started by ``accelerate launch --multi_gpu --num_processes N`` or ``torchrun``). Mixed precision comes from
    accelerate's launch flags / config (fp16 needs CUDA). See :func:`ddsm.runtime.make_accelerator`."""
    from .. import runtime

    return runtime.make_accelerator(gradient_accumulation_steps=gradient_accumulation_steps)


def with_max_steps(config, section: str, max_steps: Optional[int]):
    """``config`` (an :class:`~ddsm.config.ExperimentConfig`) with ``<section>.max_steps`` set to ``max_steps``
    (``--max-steps``) when that is given."""
    if max_steps is None:
        return config
    if max_steps <= 0:
        raise ConfigError(f"--max-steps {max_steps}: expected a positive int")
    part = dataclasses.replace(getattr(config, section), max_steps=int(max_steps))
    return dataclasses.replace(config, **{section: part})
