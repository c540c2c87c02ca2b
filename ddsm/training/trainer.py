"""Sandwich-rule training of the slimmable UNet (DDSM), on one CPU or many GPUs through accelerate.

One optimisation step (DDSM, following the sandwich rule of slimmable networks / BigNAS):

1. draw a batch ``x_0`` (encoded to latents when the config names an autoencoder), timesteps ``t ~ U{0..T-1}``,
   noise ``eps ~ N(0, I)``, and for class-conditional models replace a share ``label_dropout`` of the labels by the
   null class (classifier-free guidance);
2. pick the widths of this step: the largest, the smallest and ``sandwich_widths - 2`` others drawn at random
   (:func:`sandwich_widths`); during the first ``full_width_steps`` steps, the largest width alone (a dense warm-up
   that the narrower widths then inherit, as once-for-all's progressive shrinking starts from the full network);
3. for each width, on the *same* ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (DDPM eq. 4), regress the target
   (``eps`` for epsilon prediction, DDPM eq. 14) and back-propagate; the gradients of all widths add up. With
   in-place distillation the narrower widths also (or, ``distill_only``, instead) regress the largest width's
   detached prediction (:func:`sandwich_losses`);
4. clip the gradient norm, take one AdamW step (linear warm-up), update the EMA of the weights.

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

import contextlib
import dataclasses
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, Dataset, Sampler

from ..config import ConfigError, ExperimentConfig, load_config
from ..utils import PathLike, atomic_write, canonical_config

__all__ = [
    "TrainingDiverged", "step_seed", "step_generator", "sandwich_widths", "sandwich_losses",
    "ExponentialMovingAverage", "ShardedBatchSampler", "RunDirectory", "SlimmableTrainer", "TrainResult",
    "train_slimmable", "make_accelerator", "warmup_lambda",
]

# Random streams: one per purpose, so adding a draw to one never shifts another.
_STREAM_DATA, _STREAM_NOISE, _STREAM_SANDWICH, _STREAM_TORCH, _STREAM_INIT = range(5)


class TrainingDiverged(RuntimeError):
    """A loss (or gradient norm) became NaN or infinite; training stopped before the bad update was applied."""


# ----------------------------------------------------------------------------------------------------------------
# Counter-based randomness
# ----------------------------------------------------------------------------------------------------------------


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
    return lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


# ----------------------------------------------------------------------------------------------------------------
# The sandwich rule
# ----------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------
# EMA, data order, run directory
# ----------------------------------------------------------------------------------------------------------------


class ExponentialMovingAverage:
    """EMA of a model's parameters: ``shadow <- d * shadow + (1 - d) * param`` after every optimiser step, with
    diffusers' warm-up ``d = min(decay, (1 + n) / (10 + n))`` at update ``n`` (so early averages are short).

    A checkpointable object for ``accelerator.register_for_checkpointing``: ``state_dict`` / ``load_state_dict``
    (loading copies into the existing shadow tensors, so they stay on the model's device).
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay={decay}: expected a float in [0, 1)")
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow = {name: p.detach().clone().float() for name, p in model.named_parameters()}

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.num_updates += 1
        d = self.current_decay()
        for name, p in model.named_parameters():
            self.shadow[name].lerp_(p.detach().float(), 1.0 - d)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> torch.nn.Module:
        """Load the averaged weights into ``model`` (same architecture) and return it."""
        for name, p in model.named_parameters():
            p.copy_(self.shadow[name].to(p.dtype))
        return model

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow}

    @torch.no_grad()
    def load_state_dict(self, state: Mapping) -> None:
        missing = sorted(set(self.shadow) ^ set(state["shadow"]))
        if missing:
            raise ValueError(f"EMA state does not match the model: parameters {missing[:5]} differ")
        self.decay, self.num_updates = float(state["decay"]), int(state["num_updates"])
        for name, t in state["shadow"].items():
            self.shadow[name].copy_(t)


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


class _StepCounter:
    """The optimiser step, checkpointed through accelerate's custom-object registry."""

    def __init__(self):
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: Mapping) -> None:
        self.step = int(state["step"])


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
        """Drop log records past ``after_step`` (left by a run that crashed after its last checkpoint)."""
        if not self.log_path.is_file():
            return
        kept = [line for line in self.log_path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= after_step]
        atomic_write(self.log_path, "".join(line + "\n" for line in kept))

    def read_log(self) -> List[dict]:
        if not self.log_path.is_file():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]


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
    accelerate's launch flags / config."""
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available(), gradient_accumulation_steps=gradient_accumulation_steps)


# ----------------------------------------------------------------------------------------------------------------
# Grids (one function, so the sampler is one call)
# ----------------------------------------------------------------------------------------------------------------


def sample_grid_images(model, scheduler_config: Mapping, width: float, num_images: int, num_steps: int,
                       autoencoder=None, macs_table: Optional[dict] = None, batch_size: int = 64) -> torch.Tensor:
    """(N, C, H, W) images in [-1, 1] from ``model`` at ``width`` with DDIM (seeds 0..N-1; class-conditional models
    cycle through the classes, image ``i`` of class ``i mod num_classes``), decoded when latent."""
    from diffusers import DDIMScheduler

    from ..sampling import sample

    classes = model.config.num_classes
    labels = [i % classes for i in range(num_images)] if classes else None
    scheduler = DDIMScheduler.from_config(dict(scheduler_config))
    return sample(model, scheduler, float(width), seeds=range(num_images), num_inference_steps=num_steps,
                  class_labels=labels, batch_size=batch_size, autoencoder=autoencoder, progress=False,
                  macs_table=macs_table).images


def _grid_nrow(model, num_images: int) -> Optional[int]:
    classes = model.config.num_classes
    return classes if classes and num_images >= classes else None


# ----------------------------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    output_dir: Path
    step: int                      # optimiser steps done in total
    steps_this_run: int
    seconds: float                 # wall-clock of the steps of this run (grids and checkpoints included)
    steps_per_second: float        # training steps only
    last_losses: Dict[float, float]
    model_dir: Optional[Path]


class SlimmableTrainer:
    """Builds everything a sandwich-rule run needs from an :class:`~ddsm.config.ExperimentConfig`, validates it,
    and trains (:meth:`train`). Only the main process writes files.

    Args:
        config: the experiment.
        output_dir: the run directory (:class:`RunDirectory`).
        resume: continue from the newest complete checkpoint in ``output_dir`` (none there: start at step 0).
        max_steps: overrides ``train.max_steps`` (e.g. to extend a finished run with ``resume``).
        init_from: a local diffusers ``UNet2DModel`` directory (converted with ``SlimmableUNet.from_dense``) or
            a ``SlimmableUNet`` folder (e.g. a dense run with ``width_choices: [1.0]``) to start from; the model
            section becomes the converted model's config, keeping ``width_choices`` and ``channel_divisor``).
        dataset: a data set to train on instead of the config's ``data`` section (``dataset[i] -> (image, label)``).
        accelerator: an ``accelerate.Accelerator`` (default: :func:`make_accelerator`).
        progress: show a progress bar (main process).
    """

    def __init__(self, config: ExperimentConfig, output_dir: PathLike, *, resume: bool = False,
                 max_steps: Optional[int] = None, init_from: Optional[PathLike] = None,
                 dataset: Optional[Dataset] = None, accelerator=None, progress: bool = True):
        from diffusers import DDPMScheduler

        if max_steps is not None:
            if max_steps <= 0:
                raise ConfigError(f"--max-steps {max_steps}: expected a positive int")
            config = dataclasses.replace(config, train=dataclasses.replace(config.train, max_steps=int(max_steps)))
        self.run = RunDirectory(output_dir)
        self.progress = progress
        tc = config.train
        self.accelerator = accelerator or make_accelerator(tc.gradient_accumulation_steps)
        if self.accelerator.gradient_accumulation_steps != tc.gradient_accumulation_steps:
            raise ConfigError(f"the accelerator accumulates {self.accelerator.gradient_accumulation_steps} "
                              f"micro-batches but train.gradient_accumulation_steps={tc.gradient_accumulation_steps}")

        # Model: from the config, or converted from a dense UNet2DModel. The resolved config records the model's
        # full config (defaults filled in; for --init-from, the converted model's). The latent shape is checked
        # before the model is built, so a pixel-sized model section fails on that first.
        torch.manual_seed(step_seed(tc.seed, _STREAM_INIT))
        if init_from is not None:
            model = _load_dense(init_from, config.model)
            config = dataclasses.replace(config, model=canonical_config(model.config))
        self.autoencoder = _load_autoencoder_for(config) if config.autoencoder else None
        if init_from is None:
            model = config.build_model()
        self.config = config = dataclasses.replace(config, model=canonical_config(model.config))
        self.dataset = dataset if dataset is not None else dataset_for_training(config, self.autoencoder)
        _check_data_fits_model(self.dataset, model, self.autoencoder)
        self.conditional = bool(model.config.num_classes)

        self._check_run_directory(resume)
        self.noise_scheduler = DDPMScheduler(**config.diffusion.scheduler_config())
        self.widths = tuple(sorted(model.width_choices, reverse=True))

        # Optimiser, warm-up, EMA, step counter: prepared / registered so that save_state captures them all.
        optimizer = torch.optim.AdamW(model.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_lambda(tc.warmup_steps))
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.ema = ExponentialMovingAverage(self.unwrapped, tc.ema_decay)
        self.counter = _StepCounter()
        # The lr schedule is registered, not prepared: accelerate would step it once per process per step.
        self.accelerator.register_for_checkpointing(self.counter, self.ema, self.lr_scheduler)
        if self.autoencoder is not None:
            self.autoencoder.to(self.accelerator.device)

        self.resumed_from = self.run.latest_checkpoint() if resume else None
        if self.resumed_from is not None:
            self.accelerator.load_state(str(self.resumed_from))
        self._ema_model, self._macs = None, None

    # -- set-up helpers -----------------------------------------------------------------------------------------

    @property
    def unwrapped(self):
        return self.accelerator.unwrap_model(self.model)

    @property
    def step(self) -> int:
        return self.counter.step

    def _check_run_directory(self, resume: bool) -> None:
        run = self.run
        if not resume and run.list_checkpoints():
            raise FileExistsError(f"{run.root} already holds checkpoints ({run.list_checkpoints()[-1][1].name}); "
                                  "pass --resume to continue that run, or choose another --output-dir")
        if resume and run.config_path.is_file():
            saved = load_config(run.config_path)
            for section in ("model", "diffusion", "autoencoder"):
                old, new = getattr(saved, section), getattr(self.config, section)
                if _plain(old) != _plain(new):
                    raise ConfigError(f"--resume: the {section} section differs from the run's {run.config_path} "
                                      f"(saved {_plain(old)}, now {_plain(new)}); a run cannot change it")

    def describe(self) -> str:
        acc, tc = self.accelerator, self.config.train
        n_params = sum(p.numel() for p in self.unwrapped.parameters())
        world = acc.num_processes
        space = "latent" if self.autoencoder is not None else "pixel"
        lines = [
            f"ddsm: sandwich-rule training of a {n_params / 1e6:.2f} M-parameter slimmable UNet "
            f"(widths {list(self.widths)}, {min(tc.sandwich_widths, len(self.widths))} per step"
            + (f" after {tc.full_width_steps} full-width steps" if tc.full_width_steps else "") + ", "
            f"{space} space)",
            f"  {world} process(es) ({acc.distributed_type.value}, device {acc.device}, "
            f"mixed precision {acc.mixed_precision}); batch {tc.batch_size} per process x {world} x "
            f"{tc.gradient_accumulation_steps} accumulation = {tc.batch_size * world * tc.gradient_accumulation_steps}",
            f"  data: {len(self.dataset)} images of {tuple(self.dataset[0][0].shape)}; steps {self.step} -> "
            f"{tc.max_steps}" + (f" (resumed from {self.resumed_from})" if self.resumed_from else ""),
            f"  output: {self.run.root}",
        ]
        return "\n".join(lines)

    # -- one step -----------------------------------------------------------------------------------------------

    def _micro_step(self, k: int, images: torch.Tensor, labels: torch.Tensor) -> Dict[float, Dict[str, torch.Tensor]]:
        """Forward and backward of the sandwich on micro-batch ``k`` (gradients accumulate)."""
        acc, tc, cfg = self.accelerator, self.config.train, self.unwrapped.config
        gen = step_generator(tc.seed, _STREAM_NOISE, k, acc.process_index)
        x0 = images.to(acc.device)
        if self.autoencoder is not None:
            with torch.no_grad():
                posterior = self.autoencoder.encode(x0).latent_dist
                x0 = posterior.sample(generator=gen) * self.autoencoder.config.scaling_factor
        B = x0.shape[0]
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (B,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen).to(acc.device)
        t = t.to(acc.device)
        class_labels = None
        if self.conditional:
            drop = torch.rand(B, generator=gen) < tc.label_dropout
            class_labels = torch.where(drop, torch.full_like(labels, cfg.num_classes), labels).to(acc.device)
        noisy = self.noise_scheduler.add_noise(x0, noise, t)                              # DDPM eq. 4
        target = {"epsilon": noise, "sample": x0}.get(self.noise_scheduler.config.prediction_type)
        if target is None:
            target = self.noise_scheduler.get_velocity(x0, noise, t)
        per_step = 1 if k // tc.gradient_accumulation_steps < tc.full_width_steps else tc.sandwich_widths
        widths = sandwich_widths(self.widths, per_step, step_generator(tc.seed, _STREAM_SANDWICH, k))
        torch.manual_seed(step_seed(tc.seed, _STREAM_TORCH, k, acc.process_index))  # dropout inside the model
        return sandwich_losses(self.model, widths, noisy, t, target, class_labels,
                               distill_weight=tc.distill_weight, distill_only=tc.distill_only,
                               backward=acc.backward, no_sync=lambda: acc.no_sync(self.model))

    def _check_finite(self, step_loss: torch.Tensor, grad_norm: Optional[torch.Tensor],
                      per_width: Dict[float, float]) -> None:
        """Stop, on every process at once, before a non-finite loss or gradient reaches the weights."""
        device = step_loss.device
        norm = grad_norm.detach().float().reshape(()).to(device) if grad_norm is not None else torch.zeros((),
                                                                                                         device=device)
        flags = self.accelerator.reduce(torch.stack([step_loss.detach().float().reshape(()), norm]), reduction="sum")
        if torch.isfinite(flags).all():
            return
        last = self.run.latest_checkpoint()
        what = "loss" if not torch.isfinite(flags[0]) else "gradient norm"
        losses = ", ".join(f"{w:g}: {v:.4g}" for w, v in per_width.items())
        raise TrainingDiverged(
            f"training stopped at step {self.step + 1}: the {what} is not finite (losses per width {losses}); "
            f"the weights were not updated. Last good checkpoint: "
            f"{last if last is not None else 'none (no checkpoint was written yet)'}. Lower train.learning_rate "
            "or raise train.warmup_steps, then continue with --resume")

    # -- the loop -----------------------------------------------------------------------------------------------

    def train(self) -> TrainResult:
        """Train up to ``train.max_steps``; checkpoint every ``checkpoint_every`` steps and at the end; write the
        EMA model, the scheduler and the resolved config. Raises :class:`TrainingDiverged` on a non-finite loss."""
        from tqdm.auto import tqdm

        acc, tc, run = self.accelerator, self.config.train, self.run
        accum = tc.gradient_accumulation_steps
        if acc.is_main_process:
            run.root.mkdir(parents=True, exist_ok=True)
            run.remove_stale_temporaries()
            run.truncate_log(self.step)
            self.config.save(run.config_path)
        acc.print(self.describe())
        acc.wait_for_everyone()

        sampler = ShardedBatchSampler(len(self.dataset), tc.batch_size, num_processes=acc.num_processes,
                                      process_index=acc.process_index, seed=tc.seed, start=self.step * accum)
        loader = DataLoader(self.dataset, batch_sampler=sampler, num_workers=tc.num_workers,
                            pin_memory=acc.device.type == "cuda", persistent_workers=tc.num_workers > 0)
        batches = iter(loader)
        bar = tqdm(total=tc.max_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                   disable=not (self.progress and acc.is_local_main_process))
        window = _LossWindow(self.widths, acc.device)
        start_step, t_start, train_seconds = self.step, time.perf_counter(), 0.0
        last: Dict[float, float] = {}
        self.model.train()
        while self.step < tc.max_steps:
            t0 = time.perf_counter()
            step_loss = torch.zeros((), device=acc.device)
            grad_norm = None
            for micro in range(accum):
                images, labels = next(batches)
                with acc.accumulate(self.model):
                    terms = self._micro_step(self.step * accum + micro, images, labels)
                    window.add(terms)
                    last = {w: float(v["loss"]) for w, v in terms.items()}
                    step_loss = step_loss + sum(v["loss"] for v in terms.values())
                    if acc.sync_gradients:
                        if tc.grad_clip > 0:
                            grad_norm = acc.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
                        self._check_finite(step_loss, grad_norm if acc.mixed_precision != "fp16" else None, last)
                        self.optimizer.step()
                        self.lr_scheduler.step()
                        self.optimizer.zero_grad(set_to_none=True)
            if not acc.sync_gradients:
                raise RuntimeError("gradient accumulation out of step with accelerate's counter")
            self.ema.update(self.unwrapped)
            self.counter.step += 1
            seconds = time.perf_counter() - t0
            train_seconds += seconds
            window.steps, window.seconds = window.steps + 1, window.seconds + seconds
            step = self.step
            bar.update(1)
            if step % tc.log_every == 0 or step == tc.max_steps:
                record = {"step": step, **window.reduce(acc), "lr": self.lr_scheduler.get_last_lr()[0],
                          "grad_norm": None if grad_norm is None else float(grad_norm),
                          "it_per_s": round(window.steps / max(window.seconds, 1e-9), 3)}
                window.reset()
                if acc.is_main_process:
                    run.append_log(record)
                shown = {"loss": self.widths[0], "smallest": self.widths[-1]}  # the warm-up trains the largest only
                bar.set_postfix({name: f"{record[_key('loss', w)]:.4f}" for name, w in shown.items()
                                 if _key("loss", w) in record})
            if step % tc.checkpoint_every == 0 or step == tc.max_steps:
                run.save_checkpoint(acc, step, tc.keep_checkpoints)
            if tc.sample_images and (step % tc.sample_every == 0 or step == tc.max_steps):
                self.save_grids(step)
        bar.close()
        seconds = time.perf_counter() - t_start
        steps = self.step - start_step
        if steps == 0 and self.resumed_from is not None and acc.is_main_process:
            acc.print(f"{run.root} is already at step {self.step} = train.max_steps; writing the outputs only")
        model_dir = self.save_outputs()
        acc.print(f"done: step {self.step}, {steps} steps in {seconds:.1f} s "
                  f"({steps / max(train_seconds, 1e-9):.2f} training steps/s); model in {model_dir}")
        return TrainResult(output_dir=run.root, step=self.step, steps_this_run=steps, seconds=seconds,
                           steps_per_second=steps / max(train_seconds, 1e-9), last_losses=last, model_dir=model_dir)

    # -- outputs ------------------------------------------------------------------------------------------------

    def ema_model(self):
        """A standalone copy of the supernet holding the EMA weights (eval mode; main process)."""
        if self._ema_model is None:  # built from the config: a deepcopy would drag along accelerate's wrappers
            net = self.unwrapped
            self._ema_model = type(net).from_config(net.config).to(self.accelerator.device)
        self.ema.copy_to(self._ema_model)
        return self._ema_model.eval()

    def save_grids(self, step: int) -> List[Path]:
        """One PNG grid per width of the EMA model (main process; the others wait)."""
        from ..images import save_grid

        acc, tc = self.accelerator, self.config.train
        paths = []
        if acc.is_main_process:
            model = self.ema_model()
            size = self.autoencoder.config.sample_size if self.autoencoder is not None else model.config.sample_size
            if self._macs is None:
                self._macs = _macs_table_or_zeros(model)
            for w in self.widths:
                images = sample_grid_images(model, self.noise_scheduler.config, w, tc.sample_images,
                                            tc.sample_steps, self.autoencoder, self._macs,
                                            batch_size=self.config.sampling.batch_size)
                path = self.run.samples / f"step-{step:08d}_w{w:.2f}.png"
                paths.append(save_grid(images, path, nrow=_grid_nrow(model, tc.sample_images),
                                       scale=min(4, max(1, 64 // size))))
        acc.wait_for_everyone()
        return paths

    def save_outputs(self) -> Optional[Path]:
        """``model/`` (EMA weights), ``scheduler/``, ``config.yaml`` and, for latent runs, ``autoencoder/``."""
        acc = self.accelerator
        model_dir = self.run.root / "model"
        if acc.is_main_process:
            model = self.ema_model()
            save_pretrained_atomically(lambda d: model.save_pretrained(d), model_dir)
            save_pretrained_atomically(lambda d: self.noise_scheduler.save_pretrained(d), self.run.root / "scheduler")
            if self.autoencoder is not None:
                vae = self.autoencoder
                save_pretrained_atomically(lambda d: vae.save_pretrained(d), self.run.root / "autoencoder")
            self.config.save(self.run.config_path)
        acc.wait_for_everyone()
        return model_dir


def _key(term: str, width: float) -> str:
    """Log record key of a loss term at a width: ``loss/1.0``, ``mse/0.25``, ``distill/0.5``."""
    return f"{term}/{float(width)}"


class _LossWindow:
    """Sums of the per-width loss terms since the last log record (and the steps and training seconds they took),
    averaged over micro-batches and processes when logged."""

    KEYS = ("loss", "mse", "distill")

    def __init__(self, widths: Sequence[float], device):
        self.widths = list(widths)
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(len(self.KEYS), len(self.widths), device=self.device)
        self.counts = torch.zeros(len(self.KEYS), len(self.widths), device=self.device)
        self.steps, self.seconds = 0, 0.0

    def add(self, terms: Dict[float, Dict[str, torch.Tensor]]) -> None:
        for w, values in terms.items():
            j = self.widths.index(w)
            for i, key in enumerate(self.KEYS):
                if key in values:
                    self.sums[i, j] += values[key]
                    self.counts[i, j] += 1

    def reduce(self, accelerator) -> dict:
        both = accelerator.reduce(torch.stack([self.sums, self.counts]), reduction="sum")
        sums, counts = both[0].cpu(), both[1].cpu()
        return {_key(key, w): float(sums[i, j] / counts[i, j])
                for i, key in enumerate(self.KEYS) for j, w in enumerate(self.widths) if counts[i, j] > 0}


# ----------------------------------------------------------------------------------------------------------------
# Loading and validation
# ----------------------------------------------------------------------------------------------------------------


def _plain(v):
    if dataclasses.is_dataclass(v):
        v = dataclasses.asdict(v)
    return yaml.safe_load(yaml.safe_dump(_to_builtin(v)))


def _to_builtin(v):
    if isinstance(v, Mapping):
        return {str(k): _to_builtin(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_to_builtin(x) for x in v]
    return v


def _load_dense(path: PathLike, model_section: Mapping):
    """A supernet to start from: a diffusers ``UNet2DModel`` folder (converted with ``SlimmableUNet.from_dense``)
    or a ``SlimmableUNet`` folder (e.g. a dense model trained here with ``width_choices: [1.0]``), whose full-width
    weights are kept and re-sliced at the config's ``width_choices`` / ``channel_divisor``."""
    from diffusers import UNet2DModel

    from ..models import SlimmableUNet

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"--init-from {str(path)!r} is not a model directory (no config.json there); "
                                "expected a folder written by UNet2DModel.save_pretrained or SlimmableUNet")
    kwargs = {k: model_section[k] for k in ("width_choices", "channel_divisor") if k in model_section}
    if json.loads((path / "config.json").read_text()).get("_class_name") == SlimmableUNet.__name__:
        return SlimmableUNet.from_pretrained(path, local_files_only=True, **kwargs)  # kwargs override its config
    dense = UNet2DModel.from_pretrained(path, local_files_only=True)
    return SlimmableUNet.from_dense(dense, **kwargs)


def _load_autoencoder_for(config: ExperimentConfig):
    from .autoencoder import check_latent_model, load_autoencoder

    vae = load_autoencoder(config.autoencoder)
    check_latent_model(config.model, vae, config.data.image_size)
    return vae


def dataset_for_training(config: ExperimentConfig, autoencoder=None):
    """The config's training data at the size and channels the model (or its autoencoder) takes."""
    from ..data import dataset_from_config

    data = {k: v for k, v in dataclasses.asdict(config.data).items() if v is not None}
    if autoencoder is not None:
        data.setdefault("image_size", autoencoder.config.sample_size)
        data.setdefault("channels", autoencoder.config.in_channels)
    else:
        data.setdefault("image_size", config.model.get("sample_size", 32))
        data.setdefault("channels", config.model.get("in_channels", 3))
    return dataset_from_config(data)


def _check_data_fits_model(dataset, model, autoencoder) -> None:
    image = dataset[0][0]
    cfg = model.config
    if autoencoder is None and tuple(image.shape) != (cfg.in_channels, cfg.sample_size, cfg.sample_size):
        raise ConfigError(f"the data give images of shape {tuple(image.shape)} but the model takes "
                          f"({cfg.in_channels}, {cfg.sample_size}, {cfg.sample_size}) (model in_channels, "
                          "sample_size); set data.image_size / data.channels or the model section to agree")
    if autoencoder is not None:
        want = (autoencoder.config.in_channels,)
        if image.shape[0] != want[0]:
            raise ConfigError(f"the data give {image.shape[0]}-channel images but the autoencoder takes "
                              f"{want[0]} (in_channels)")
    num = getattr(dataset, "num_classes", None)
    if cfg.num_classes and num and num > cfg.num_classes:
        raise ConfigError(f"the data have {num} classes but the model's num_classes={cfg.num_classes}")


def _macs_table_or_zeros(model) -> dict:
    """MACs per width for the sampler's report. Grids do not need them, so a failure to count (or to write the
    cache) must not stop a long training run: it is reported and zeros are used."""
    try:
        import warnings

        from ..models import macs_table

        with warnings.catch_warnings():  # fvcore's import-time torch.jit deprecation noise
            warnings.simplefilter("ignore")
            return macs_table(model)
    except Exception as e:  # noqa: BLE001 - deliberately broad, see the docstring
        print(f"warning: could not count MACs per width ({type(e).__name__}: {e}); grids are unaffected")
        return {w: 0 for w in model.width_choices}


def train_slimmable(config: ExperimentConfig, output_dir: PathLike, **kwargs) -> TrainResult:
    """Build a :class:`SlimmableTrainer` (same keyword arguments) and train."""
    return SlimmableTrainer(config, output_dir, **kwargs).train()
