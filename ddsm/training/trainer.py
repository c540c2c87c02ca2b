"""Sandwich-rule training of the slimmable UNet (DDSM), on one CPU or many GPUs through accelerate.

One optimisation step (DDSM, following the sandwich rule of slimmable networks / BigNAS):

1. draw a batch ``x_0`` (encoded to latents when the config names an autoencoder), timesteps ``t ~ U{0..T-1}``,
   noise ``eps ~ N(0, I)``, and for class-conditional models replace a share ``label_dropout`` of the labels by the
   null class (classifier-free guidance);
2. pick the widths of this step: the largest, the smallest and ``sandwich_widths - 2`` others drawn at random
   (:func:`sandwich_widths`); during the first ``full_width_steps`` steps, the largest width alone (a dense warm-up
   that the narrower widths then inherit, as once-for-all's progressive shrinking starts from the full network;
   with ``reorder_channels`` its channels are then sorted by importance, :mod:`ddsm.models.reorder`);
3. for each width, on the *same* ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (DDPM eq. 4), regress the target
   (``eps`` for epsilon prediction, DDPM eq. 14) and back-propagate; the gradients of all widths add up. With
   in-place distillation the narrower widths also (or, ``distill_only``, instead) regress the largest width's
   detached prediction (:func:`sandwich_losses`);
4. clip the gradient norm, take one AdamW step (linear warm-up), update the EMA of the weights.

Randomness is counter-based and all state checkpointed (:mod:`ddsm.training.run`): a resumed run is exact.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from torch.utils.data import DataLoader, Dataset

from ..config import ConfigError, ExperimentConfig
from ..models import encode_latents
from ..models.reorder import reorder_
from ..threads import adapt_threads
from ..utils import PathLike, canonical_config
from .inputs import (channel_order_fixed, check_data_fits_model, check_resume_config, dataset_for_training,
                     load_autoencoder_for, load_init_model)
from .monitor import LossWindow, grid_nrow, loss_key, macs_table_or_zeros, sample_grid_images
from .run import (RunDirectory, ShardedBatchSampler, StepCounter, TrainingDiverged, make_accelerator,
                  save_pretrained_atomically, step_generator, step_seed, warmup_lambda, with_max_steps)
from .sandwich import ExponentialMovingAverage, sandwich_losses, sandwich_widths, timestep_weights
from .teacher import freeze_teacher, initial_teacher, load_teacher, save_teacher, teacher_prediction

__all__ = ["SlimmableTrainer", "TrainResult", "train_slimmable"]

# Random streams: one per purpose, so adding a draw to one never shifts another (stream 0 is the data order's).
_STREAM_NOISE, _STREAM_SANDWICH, _STREAM_TORCH, _STREAM_INIT = range(1, 5)


@dataclass
class TrainResult:
    """What :meth:`SlimmableTrainer.train` did and wrote."""

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

        config = with_max_steps(config, "train", max_steps)
        self.run = RunDirectory(output_dir)
        self.progress = progress
        tc = config.train
        self.accelerator = accelerator or make_accelerator(tc.gradient_accumulation_steps)
        if self.accelerator.gradient_accumulation_steps != tc.gradient_accumulation_steps:
            raise ConfigError(f"the accelerator accumulates {self.accelerator.gradient_accumulation_steps} "
                              f"micro-batches but train.gradient_accumulation_steps={tc.gradient_accumulation_steps}")
        model = self._build_model(config, init_from)
        self.teacher = initial_teacher(model, tc, from_init=init_from is not None, device=self.accelerator.device)
        self.dataset = dataset if dataset is not None else dataset_for_training(self.config, self.autoencoder)
        check_data_fits_model(self.dataset, model, self.autoencoder)
        self.conditional = bool(model.config.num_classes)

        self._check_run_directory(resume)
        self.noise_scheduler = DDPMScheduler(**self.config.diffusion.scheduler_config())
        self.widths = tuple(sorted(model.width_choices, reverse=True))
        self._prepare_optimisation(model)
        self.counter.reordered = channel_order_fixed(init_from, tc.reorder_channels, self.accelerator.print)
        if self.autoencoder is not None:
            self.autoencoder.to(self.accelerator.device)

        self.resumed_from = self.run.latest_checkpoint() if resume else None
        if self.resumed_from is not None:
            self.accelerator.load_state(str(self.resumed_from))
        self._ema_model, self._macs = None, None
        saved = load_teacher(self.run.root, self.accelerator.device) if tc.teacher_weight > 0 else None
        self.teacher, self._teacher_saved = (saved if saved is not None else self.teacher), saved is not None

    # -- set-up helpers -----------------------------------------------------------------------------------------

    def _build_model(self, config: ExperimentConfig, init_from: Optional[PathLike]):
        """The supernet, from the config or converted from ``init_from``; sets ``self.autoencoder`` and
        ``self.config``, whose model section becomes the model's full config (defaults filled in; for
        ``init_from``, the converted model's). The latent shape is checked before the model is built, so a
        pixel-sized model section fails on that first."""
        torch.manual_seed(step_seed(config.train.seed, _STREAM_INIT))
        if init_from is not None:
            model = load_init_model(init_from, config.model)
            config = dataclasses.replace(config, model=canonical_config(model.config))
        self.autoencoder = load_autoencoder_for(config) if config.autoencoder else None
        if init_from is None:
            model = config.build_model()
        self.config = dataclasses.replace(config, model=canonical_config(model.config))
        return model

    def _prepare_optimisation(self, model) -> None:
        """Optimiser, warm-up, EMA, step counter: prepared / registered so that save_state captures them all."""
        tc = self.config.train
        optimizer = torch.optim.AdamW(model.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_lambda(tc.warmup_steps))
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.ema = ExponentialMovingAverage(self.unwrapped, tc.ema_decay)
        self.counter = StepCounter()
        # The lr schedule is registered, not prepared: accelerate would step it once per process per step.
        self.accelerator.register_for_checkpointing(self.counter, self.ema, self.lr_scheduler)

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
            check_resume_config(run.config_path, self.config)
        if resume:
            run.check_log()

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
                x0 = encode_latents(self.autoencoder, x0, gen)
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
        T = self.noise_scheduler.config.num_train_timesteps
        weights = {w: timestep_weights(w, self.widths, t, tc.timestep_bias, T) for w in widths}
        teacher = teacher_prediction(self.teacher, noisy, t, class_labels, acc) if self.teacher is not None else None
        torch.manual_seed(step_seed(tc.seed, _STREAM_TORCH, k, acc.process_index))  # dropout inside the model
        return sandwich_losses(self.model, widths, noisy, t, target, class_labels,
                               distill_weight=tc.distill_weight, distill_only=tc.distill_only, teacher=teacher,
                               teacher_weight=tc.teacher_weight,
                               sample_weights={w: v for w, v in weights.items() if v is not None},
                               backward=acc.backward, no_sync=lambda: acc.no_sync(self.model))

    def _keep_teacher(self) -> None:
        """Freeze the teacher once (``train.teacher_weight``): the ``--init-from`` model at the first step, else
        the warm-up's moving average when the sandwich starts; written to ``RUN/teacher`` on the main process."""
        tc, acc = self.config.train, self.accelerator
        if self._teacher_saved or tc.teacher_weight <= 0 or (self.teacher is None and self.step < tc.full_width_steps):
            return
        if self.teacher is None:
            self.teacher = freeze_teacher(self.ema_model(), acc.device)
        if acc.is_main_process:
            save_teacher(self.teacher, self.run.root)
        acc.wait_for_everyone()
        self._teacher_saved = True

    def _check_finite(self, step_loss: torch.Tensor, grad_norm: Optional[torch.Tensor],
                      per_width: Dict[float, float]) -> None:
        """Stop, on every process at once, before a non-finite loss or gradient reaches the weights."""
        zero = torch.zeros((), device=step_loss.device)
        norm = grad_norm.detach().float().reshape(()).to(zero.device) if grad_norm is not None else zero
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
        if acc.is_main_process:
            run.prepare(self.config, self.step)
        acc.print(self.describe())
        acc.wait_for_everyone()
        batches = self._batches()
        bar = tqdm(total=tc.max_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                   disable=not (self.progress and acc.is_local_main_process))
        window = LossWindow(self.widths, acc.device)
        start_step, t_start, train_seconds = self.step, time.perf_counter(), 0.0
        last: Dict[float, float] = {}
        self.model.train()
        while self.step < tc.max_steps:
            adapt_threads()
            if tc.reorder_channels and self.step == tc.full_width_steps and not self.counter.reordered:
                self.counter.reordered = bool(reorder_(self.unwrapped, [self.ema.shadow_params], self.optimizer))
                acc.print(f"step {self.step}: channels reordered by importance for the narrow widths")
            self._keep_teacher()
            t0 = time.perf_counter()
            last, grad_norm = self._optimizer_step(batches, window)
            seconds = time.perf_counter() - t0
            train_seconds += seconds
            window.steps, window.seconds = window.steps + 1, window.seconds + seconds
            bar.update(1)
            self._after_step(window, grad_norm, bar)
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

    def _batches(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """This process's micro-batches from the current step on (:class:`ShardedBatchSampler`)."""
        acc, tc = self.accelerator, self.config.train
        sampler = ShardedBatchSampler(len(self.dataset), tc.batch_size, num_processes=acc.num_processes,
                                      process_index=acc.process_index, seed=tc.seed,
                                      start=self.step * tc.gradient_accumulation_steps)
        loader = DataLoader(self.dataset, batch_sampler=sampler, num_workers=tc.num_workers,
                            pin_memory=acc.device.type == "cuda", persistent_workers=tc.num_workers > 0)
        return iter(loader)

    def _optimizer_step(self, batches: Iterator,
                        window: LossWindow) -> Tuple[Dict[float, float], Optional[torch.Tensor]]:
        """One optimiser step over ``gradient_accumulation_steps`` micro-batches, then the EMA update. Returns the
        last micro-batch's loss per width and the clipped gradient norm (None without clipping)."""
        acc, accum = self.accelerator, self.config.train.gradient_accumulation_steps
        step_loss = torch.zeros((), device=acc.device)
        grad_norm, last = None, {}
        for micro in range(accum):
            images, labels = next(batches)
            with acc.accumulate(self.model):
                terms = self._micro_step(self.step * accum + micro, images, labels)
                window.add(terms)
                last = {w: float(v["loss"]) for w, v in terms.items()}
                step_loss = step_loss + sum(v["loss"] for v in terms.values())
                if acc.sync_gradients:
                    grad_norm = self._apply_gradients(step_loss, last)
        if not acc.sync_gradients:
            raise RuntimeError("gradient accumulation out of step with accelerate's counter")
        self.ema.step(self.unwrapped.parameters())
        self.counter.step += 1
        return last, grad_norm

    def _apply_gradients(self, step_loss: torch.Tensor, last: Dict[float, float]) -> Optional[torch.Tensor]:
        """Clip, check that loss and gradient are finite, take the AdamW and warm-up steps; the gradient norm."""
        acc, tc = self.accelerator, self.config.train
        grad_norm = acc.clip_grad_norm_(self.model.parameters(), tc.grad_clip) if tc.grad_clip > 0 else None
        self._check_finite(step_loss, grad_norm if acc.mixed_precision != "fp16" else None, last)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def _after_step(self, window: LossWindow, grad_norm: Optional[torch.Tensor], bar) -> None:
        """Log, checkpoint and draw grids at their intervals, and all three at the last step."""
        tc, step = self.config.train, self.step
        final = step == tc.max_steps
        if step % tc.log_every == 0 or final:
            self._log(window, grad_norm, bar)
        if step % tc.checkpoint_every == 0 or final:
            self.run.save_checkpoint(self.accelerator, step, tc.keep_checkpoints)
        if tc.sample_images and (step % tc.sample_every == 0 or final):
            self.save_grids(step)

    def _log(self, window: LossWindow, grad_norm: Optional[torch.Tensor], bar) -> None:
        """One log record: the window's mean loss terms per width, lr, gradient norm, it/s, torch's threads."""
        record = {"step": self.step, **window.reduce(self.accelerator), "lr": self.lr_scheduler.get_last_lr()[0],
                  "grad_norm": None if grad_norm is None else float(grad_norm),
                  "it_per_s": round(window.steps / max(window.seconds, 1e-9), 3), "threads": torch.get_num_threads()}
        window.reset()
        if self.accelerator.is_main_process:
            self.run.append_log(record)
        shown = {"loss": self.widths[0], "smallest": self.widths[-1]}  # the warm-up trains the largest only
        bar.set_postfix({name: f"{record[loss_key('loss', w)]:.4f}" for name, w in shown.items()
                         if loss_key("loss", w) in record})

    # -- outputs ------------------------------------------------------------------------------------------------

    def ema_model(self):
        """A standalone copy of the supernet holding the EMA weights (eval mode; main process)."""
        if self._ema_model is None:  # built from the config: a deepcopy would drag along accelerate's wrappers
            net = self.unwrapped
            self._ema_model = type(net).from_config(net.config).to(self.accelerator.device)
        self.ema.copy_to(self._ema_model.parameters())
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
                self._macs = macs_table_or_zeros(model)
            for w in self.widths:
                images = sample_grid_images(model, self.noise_scheduler.config, w, tc.sample_images,
                                            tc.sample_steps, self.autoencoder, self._macs,
                                            batch_size=self.config.sampling.batch_size)
                path = self.run.samples / f"step-{step:08d}_w{w:.2f}.png"
                paths.append(save_grid(images, path, nrow=grid_nrow(model, tc.sample_images),
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
            if (vae := self.autoencoder) is not None:
                save_pretrained_atomically(lambda d: vae.save_pretrained(d), self.run.root / "autoencoder")
            self.config.save(self.run.config_path)
        acc.wait_for_everyone()
        return model_dir


def train_slimmable(config: ExperimentConfig, output_dir: PathLike, **kwargs) -> TrainResult:
    """Build a :class:`SlimmableTrainer` (same keyword arguments) and train."""
    return SlimmableTrainer(config, output_dir, **kwargs).train()
