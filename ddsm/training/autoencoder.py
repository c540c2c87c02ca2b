"""Training the small diffusers ``AutoencoderKL`` of latent diffusion (built, loaded and checked against the UNet
by :mod:`ddsm.models.autoencoder`), and measuring its latent scale.

Training (:class:`AutoencoderTrainer`) minimises ``MSE(decode(z), x) + kl_weight * KL(q(z|x) || N(0, I))`` with
``z ~ q(z|x)`` (the VAE of Rombach et al. 2022 without its perceptual and adversarial terms, which a toy autoencoder
on small images does without). It keeps the habits of the UNet training (:mod:`ddsm.training`): accelerate,
counter-based randomness, atomic checkpoints with exact resume, a JSONL log, reconstruction grids, and the result
written with ``save_pretrained`` to ``OUTPUT_DIR/autoencoder/``.

The latent scaling factor is ``1 / std(z)`` over the training data (``z`` sampled from the posterior), stored in the
autoencoder's config as ``scaling_factor``; the UNet then trains on ``z * scaling_factor`` (unit variance, as the
noise schedule assumes) and samples are decoded from ``z / scaling_factor``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..config import ExperimentConfig
from ..models import autoencoder_image_size, build_autoencoder, check_latent_model, latent_shape
from ..utils import PathLike
from .run import (RunDirectory, ShardedBatchSampler, StepCounter, TrainingDiverged, make_accelerator,
                  save_pretrained_atomically, step_generator, step_seed, warmup_lambda, with_max_steps)

__all__ = ["latent_scaling_factor", "AutoencoderTrainer", "AutoencoderResult", "train_autoencoder"]

_STREAM_SAMPLE, _STREAM_SCALE, _STREAM_INIT = 11, 12, 13


@torch.no_grad()
def latent_scaling_factor(vae, dataset: Dataset, *, batch_size: int = 256, seed: int = 0, max_images: int = 0,
                          device=None) -> float:
    """``1 / std`` of posterior samples ``z ~ q(z|x)`` over the first ``max_images`` images (0: all)."""
    device = device or next(vae.parameters()).device
    n = len(dataset) if not max_images else min(max_images, len(dataset))
    total, total_sq, count = 0.0, 0.0, 0
    for lo in range(0, n, batch_size):
        x = torch.stack([dataset[i][0] for i in range(lo, min(n, lo + batch_size))]).to(device)
        z = vae.encode(x).latent_dist.sample(generator=step_generator(seed, _STREAM_SCALE, lo)).double()
        total, total_sq, count = total + float(z.sum()), total_sq + float((z * z).sum()), count + z.numel()
    mean = total / count
    std = (total_sq / count - mean * mean) ** 0.5
    if not std > 0:
        raise ValueError(f"the latents have standard deviation {std}; cannot scale them")
    return 1.0 / std


class _WithKL(nn.Module):
    """Forward of the training objective's pieces, so DDP sees (and synchronises) every parameter use."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, generator: Optional[torch.Generator] = None):
        posterior = self.vae.encode(x).latent_dist
        recon = self.vae.decode(posterior.sample(generator=generator)).sample              # (B, C, H, W)
        return recon, posterior.kl().mean()


@dataclass
class AutoencoderResult:
    output_dir: Path
    step: int
    steps_this_run: int
    seconds: float
    scaling_factor: float
    autoencoder_dir: Path


class AutoencoderTrainer:
    """Trains the ``vae`` section's ``AutoencoderKL`` on the config's data (see the module docstring).

    Args: as :class:`~ddsm.training.SlimmableTrainer` (``config``, ``output_dir``, ``resume``, ``max_steps``
    overriding ``vae.max_steps``, ``dataset``, ``accelerator``, ``progress``).
    """

    def __init__(self, config: ExperimentConfig, output_dir: PathLike, *, resume: bool = False,
                 max_steps: Optional[int] = None, dataset: Optional[Dataset] = None, accelerator=None,
                 progress: bool = True):
        from ..data import dataset_from_config

        config = with_max_steps(config, "vae", max_steps)
        self.config, vc = config, config.vae
        self.run = RunDirectory(output_dir)
        self.progress = progress
        self.image_size = autoencoder_image_size(config)
        if dataset is None:
            data = {k: v for k, v in dataclasses.asdict(config.data).items() if v is not None}
            data["image_size"] = self.image_size
            dataset = dataset_from_config(data)
        self.dataset = dataset
        channels = int(dataset[0][0].shape[0])
        torch.manual_seed(step_seed(vc.seed, _STREAM_INIT))
        vae = build_autoencoder(vc, self.image_size, channels)
        check_latent_model(config.model, vae)  # fail now, not after training, if the UNet cannot take the latents
        if not resume and self.run.list_checkpoints():
            raise FileExistsError(f"{self.run.root} already holds checkpoints; pass --resume to continue that run, "
                                  "or choose another --output-dir")
        if resume:
            self.run.check_log()

        self.accelerator = accelerator or make_accelerator()
        optimizer = torch.optim.AdamW(vae.parameters(), lr=vc.learning_rate)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_lambda(vc.warmup_steps))
        self.model, self.optimizer = self.accelerator.prepare(_WithKL(vae), optimizer)
        self.counter = StepCounter()
        self.accelerator.register_for_checkpointing(self.counter, self.lr_scheduler)
        self.resumed_from = self.run.latest_checkpoint() if resume else None
        if self.resumed_from is not None:
            self.accelerator.load_state(str(self.resumed_from))

    @property
    def vae(self):
        return self.accelerator.unwrap_model(self.model).vae

    @property
    def step(self) -> int:
        return self.counter.step

    def train(self) -> AutoencoderResult:
        from tqdm.auto import tqdm

        acc, vc, run = self.accelerator, self.config.vae, self.run
        if acc.is_main_process:
            run.prepare(self.config, self.step)
        n_params = sum(p.numel() for p in self.vae.parameters())
        acc.print(f"ddsm: training a {n_params / 1e6:.2f} M-parameter AutoencoderKL on {len(self.dataset)} images "
                  f"of {tuple(self.dataset[0][0].shape)} -> latents {latent_shape(self.vae)}; {acc.num_processes} "
                  f"process(es) on {acc.device}; steps {self.step} -> {vc.max_steps}; output {run.root}")
        sampler = ShardedBatchSampler(len(self.dataset), vc.batch_size, num_processes=acc.num_processes,
                                      process_index=acc.process_index, seed=vc.seed, start=self.step)
        batches = iter(DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.config.train.num_workers))
        bar = tqdm(total=vc.max_steps, initial=self.step, desc="autoencoder", unit="step", dynamic_ncols=True,
                   disable=not (self.progress and acc.is_local_main_process))
        start_step, t_start = self.step, time.perf_counter()
        sums = torch.zeros(3, device=acc.device)  # recon, kl, steps
        self.model.train()
        while self.step < vc.max_steps:
            images, _ = next(batches)
            x = images.to(acc.device)
            recon, kl = self.model(x, generator=step_generator(vc.seed, _STREAM_SAMPLE, self.step,
                                                                 acc.process_index))
            rec = F.mse_loss(recon.float(), x.float())
            loss = rec + vc.kl_weight * kl.float()
            acc.backward(loss)
            grad_norm = acc.clip_grad_norm_(self.model.parameters(), vc.grad_clip) if vc.grad_clip > 0 else None
            flags = acc.reduce(torch.stack([loss.detach().float(), (grad_norm if grad_norm is not None
                                            else torch.zeros((), device=acc.device)).detach().float()]), "sum")
            if not torch.isfinite(flags).all():
                raise TrainingDiverged(f"autoencoder training stopped at step {self.step + 1}: non-finite loss or "
                                       f"gradient (reconstruction {float(rec):.4g}, KL {float(kl):.4g}); last good "
                                       f"checkpoint: {run.latest_checkpoint()}")
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.counter.step += 1
            sums += torch.stack([rec.detach().float(), kl.detach().float(), torch.ones((), device=acc.device)])
            bar.update(1)
            step = self.step
            if step % vc.log_every == 0 or step == vc.max_steps:
                total = acc.reduce(sums, "sum").cpu()
                record = {"step": step, "recon_mse": float(total[0] / total[2]), "kl": float(total[1] / total[2]),
                          "lr": self.lr_scheduler.get_last_lr()[0]}
                sums.zero_()
                if acc.is_main_process:
                    run.append_log(record)
                bar.set_postfix(recon=f"{record['recon_mse']:.4f}", kl=f"{record['kl']:.1f}")
            if step % vc.checkpoint_every == 0 or step == vc.max_steps:
                run.save_checkpoint(acc, step, vc.keep_checkpoints)
                self.save_reconstructions(step)
        bar.close()
        seconds = time.perf_counter() - t_start
        scale, out = self.save_outputs()
        acc.print(f"done: step {self.step} in {seconds:.1f} s; latent scaling_factor {scale:.4f}; autoencoder in "
                  f"{out}")
        if self.config.autoencoder and Path(self.config.autoencoder).resolve() not in (out.resolve(),
                                                                                    out.parent.resolve()):
            acc.print(f"note: the config's `autoencoder: {self.config.autoencoder}` is not this output; point it "
                      f"at {out} to train the UNet in these latents")
        return AutoencoderResult(output_dir=run.root, step=self.step, steps_this_run=self.step - start_step,
                                 seconds=seconds, scaling_factor=scale, autoencoder_dir=out)

    @torch.no_grad()
    def save_reconstructions(self, step: int, n: int = 16) -> Optional[Path]:
        """Originals (top rows) over their reconstructions (posterior means decoded), as one PNG."""
        from ..images import save_grid

        path = None
        if self.accelerator.is_main_process:
            vae = self.vae.eval()
            x = torch.stack([self.dataset[i][0] for i in range(min(n, len(self.dataset)))]).to(self.accelerator.device)
            recon = vae.decode(vae.encode(x).latent_dist.mode()).sample
            path = save_grid(torch.cat([x, recon]).cpu(), self.run.samples / f"recon-step-{step:08d}.png",
                             nrow=min(8, len(x)), scale=max(1, 32 // self.image_size))
            self.vae.train()
        self.accelerator.wait_for_everyone()
        return path

    def save_outputs(self):
        """Measure the latent scale, store it as ``scaling_factor``, write ``autoencoder/`` (save_pretrained)."""
        acc, vc = self.accelerator, self.config.vae
        out = self.run.root / "autoencoder"
        scale = 0.0
        if acc.is_main_process:
            vae = self.vae.eval()
            scale = latent_scaling_factor(vae, self.dataset, batch_size=max(vc.batch_size, 256), seed=vc.seed,
                                          max_images=vc.scale_images)
            vae.register_to_config(scaling_factor=scale)
            save_pretrained_atomically(lambda d: vae.save_pretrained(d), out)
            self.config.save(self.run.config_path)
        acc.wait_for_everyone()
        if acc.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            scale = broadcast_object_list([scale])[0]
        return scale, out


def train_autoencoder(config: ExperimentConfig, output_dir: PathLike, **kwargs) -> AutoencoderResult:
    """Build an :class:`AutoencoderTrainer` (same keyword arguments) and train."""
    return AutoencoderTrainer(config, output_dir, **kwargs).train()
