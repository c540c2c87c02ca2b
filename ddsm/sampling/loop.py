"""Step-aware sampling: run a width schedule with any diffusers scheduler.

:func:`sample` is the one sampling loop of the toolkit. At step ``k`` it runs the supernet at ``widths[k]``; a
width of 0 runs no network and reuses the previous noise prediction (the scheduler still steps). It composes with

* the diffusers schedulers of :data:`~ddsm.sampling.SCHEDULERS` (DDPM, DDIM, DPM-Solver, UniPC, PNDM, Euler,
  Heun, ...): the loop only uses ``set_timesteps``, ``scale_model_input``, ``init_noise_sigma`` and ``step``, and
  runs one width per entry of ``scheduler.timesteps`` (one model call each, see :mod:`ddsm.sampling.schedulers`);
* AdaptiveDiffusion skipping (:class:`SkipPolicy`), decided per sample from the third-order difference of the
  latent's updates;
* classifier-free guidance (conditional and null-class predictions in one batched forward);
* latent diffusion (sample latents, decode once at the end with a diffusers ``AutoencoderKL`` or ``VQModel``, as
  the stock pipelines do: :func:`~ddsm.models.decode_latents`);
* several processes through accelerate (seeds split across processes, images gathered in seed order).

Randomness: sample ``i`` draws its initial noise and every stochastic step's noise from its own
``torch.Generator`` seeded with ``seeds[i]``, so an image depends only on its seed and label, never on the batch
size or the number of processes.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from .schedulers import set_timestep_count, step_kwargs
from ..models import decode_latents
from ..schedules import Schedule, ScheduleError
from ..threads import adapt_threads

__all__ = ["SkipPolicy", "SampleResult", "sample", "balanced_labels", "resolve_widths"]


@dataclass(frozen=True)
class SkipPolicy:
    """AdaptiveDiffusion's training-free skip criterion (Ye et al., NeurIPS 2024).

    After step ``k`` (which maps ``x_k`` to ``x_{k+1}``), ``D_k = mean |x_{k+1} - x_k|`` per sample. The next
    noise prediction is skipped (the previous one reused) when

        | D_k - 2 D_{k-1} + D_{k-2} | <= 2 * delta * D_{k-1}

    unless the last ``max_consecutive`` (C_max) steps were already skips. The first ``min_computed`` steps are
    always computed (the criterion needs three updates, so never fewer than 3).
    """

    delta: float = 0.01
    max_consecutive: int = 4
    min_computed: int = 3

    def __post_init__(self):
        if not self.delta >= 0:
            raise ValueError(f"SkipPolicy delta={self.delta}: expected a number >= 0")
        if self.max_consecutive < 0:
            raise ValueError(f"SkipPolicy max_consecutive={self.max_consecutive}: expected >= 0")
        if self.min_computed < 3:
            raise ValueError(f"SkipPolicy min_computed={self.min_computed}: expected >= 3 (three updates needed)")


@dataclass
class SampleResult:
    """What one sampling run produced and spent.

    ``images`` are (N, C, H, W) in [-1, 1] on the CPU, in seed order (decoded when latent), in the model's dtype
    (float32 when that is narrower). ``computed[i, k]`` says whether sample ``i`` ran the network at step ``k``.
    MACs count UNet forwards of one sample each (doubled under classifier-free guidance); ``full_macs_per_image`` is
    what the full width at every step would have cost; the autoencoder decode is reported apart, per image.
    """

    images: torch.Tensor
    seeds: List[int]
    widths: List[float]
    timesteps: List[float]
    computed: np.ndarray
    macs_per_image: float
    full_macs_per_image: float
    decode_macs_per_image: int
    seconds: float
    class_labels: Optional[List[int]] = None
    macs_table: dict = field(default_factory=dict)

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / max(1, len(self.seeds))

    @property
    def skipped_steps(self) -> List[List[int]]:
        """Per sample, the step indices at which no network ran."""
        return [list(np.flatnonzero(~row)) for row in self.computed]

    def summary(self) -> dict:
        return dict(num_images=len(self.seeds), macs_per_image=self.macs_per_image,
                    full_macs_per_image=self.full_macs_per_image,
                    macs_ratio=self.macs_per_image / self.full_macs_per_image,
                    decode_macs_per_image=self.decode_macs_per_image, seconds=self.seconds,
                    seconds_per_image=self.seconds_per_image,
                    mean_computed_steps=float(self.computed.sum(1).mean()) if self.computed.size else 0.0,
                    num_steps=len(self.widths))


def balanced_labels(model, n: int) -> Optional[List[int]]:
    """Labels 0..K-1 cycled for ``n`` samples of a class-conditional model (None for an unconditional one)."""
    k = model.config.num_classes
    return [i % k for i in range(n)] if k else None


def resolve_widths(model, scheduler, schedule: Union[Schedule, float, Sequence[float]],
                   num_inference_steps: Optional[int] = None) -> List[float]:
    """Set the scheduler's timesteps for ``schedule`` and return the width of each step.

    ``schedule`` is a :class:`Schedule` (its timesteps must be the scheduler's: remap it otherwise), one width for
    every timestep of ``set_timesteps(num_inference_steps or 50)``, or a list of widths (one per timestep). A
    schedule's length is the scheduler's own timestep count (``len(scheduler.timesteps)``, e.g.
    ``num_inference_steps + 9`` for PNDM): :func:`~ddsm.sampling.set_timestep_count` finds the step count for it.
    """
    if isinstance(schedule, Schedule):
        set_timestep_count(scheduler, len(schedule))
        schedule.check_scheduler(scheduler)
        widths = list(schedule.widths)
    elif isinstance(schedule, (int, float)):
        scheduler.set_timesteps(num_inference_steps or 50)
        widths = [float(schedule)] * len(scheduler.timesteps)
    else:
        widths = [float(w) for w in schedule]
        if num_inference_steps is None:
            set_timestep_count(scheduler, len(widths))
        else:
            scheduler.set_timesteps(num_inference_steps)
        if len(widths) != len(scheduler.timesteps):
            raise ScheduleError(f"widths has {len(widths)} entries but {type(scheduler).__name__} visits "
                                f"{len(scheduler.timesteps)} timesteps for num_inference_steps={num_inference_steps}")
    choices = set(model.width_choices)
    bad = sorted({w for w in widths if w != 0 and w not in choices})
    if bad:
        raise ScheduleError(f"widths {bad} are not in the model's width_choices {sorted(choices)}")
    if widths and widths[0] == 0:
        raise ScheduleError("widths[0] = 0: the first step cannot be skipped (there is no prediction to reuse)")
    return widths


def _predict(model, x: torch.Tensor, t, labels: Optional[torch.Tensor], width: float,
             guidance_scale: float, null_label: Optional[int], autocast) -> torch.Tensor:
    """Noise prediction at one width, with classifier-free guidance batched into one forward. The forward runs under
    ``autocast()`` (mixed precision); the prediction comes back in ``x``'s dtype, for the scheduler."""
    def forward(inputs: torch.Tensor, class_labels: Optional[torch.Tensor]) -> torch.Tensor:
        with autocast():
            return model(inputs, t, class_labels=class_labels, width=width).sample.to(x.dtype)

    if guidance_scale == 1.0 or labels is None:
        return forward(x, labels)
    null = torch.full_like(labels, null_label)
    both = forward(torch.cat([x, x]), torch.cat([labels, null]))
    cond, uncond = both.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


def _sample_batch(model, scheduler, steps, widths, seeds, labels, guidance_scale, skip_policy, autoencoder, shape,
                  device, dtype, progress_bar, autocast):
    scheduler.set_timesteps(steps)  # fresh solver state for every batch (multistep solvers keep history)
    gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
    extra = step_kwargs(scheduler, generator=gens)  # per-sample noise for the schedulers that draw any
    B = len(seeds)
    x = randn_tensor((B, *shape), generator=gens, device=torch.device("cpu"), dtype=dtype).to(device)
    x = x * scheduler.init_noise_sigma
    n_steps = len(widths)
    computed = np.zeros((B, n_steps), dtype=bool)
    eps = None
    deltas = torch.zeros(B, 3, device=device)  # D_{k-2}, D_{k-1}, D_k
    consecutive = torch.zeros(B, dtype=torch.long, device=device)
    skip_next = torch.zeros(B, dtype=torch.bool, device=device)
    null_label = getattr(model.config, "num_classes", None)
    for k, t in enumerate(scheduler.timesteps):
        adapt_threads()
        w = widths[k]
        run = torch.zeros(B, dtype=torch.bool, device=device) if w == 0 else ~skip_next
        if k == 0:
            run[:] = True
        if run.any():
            idx = run.nonzero().squeeze(1)
            x_in = scheduler.scale_model_input(x, t)[idx]
            lab = labels[idx] if labels is not None else None
            new = _predict(model, x_in, t, lab, w, guidance_scale, null_label, autocast)
            eps = new if eps is None else eps.index_copy(0, idx, new)
            computed[idx.cpu().numpy(), k] = True
        x_next = scheduler.step(eps, t, x, **extra).prev_sample
        if skip_policy is not None:  # AdaptiveDiffusion: decide the next step from this update
            d = (x_next - x).abs().flatten(1).mean(1)
            deltas = torch.cat([deltas[:, 1:], d[:, None]], 1)
            consecutive = torch.where(run, torch.zeros_like(consecutive), consecutive + 1)
            third = (deltas[:, 2] - 2 * deltas[:, 1] + deltas[:, 0]).abs()
            skip_next = (third <= 2 * skip_policy.delta * deltas[:, 1]) & (consecutive < skip_policy.max_consecutive)
            if k + 1 < skip_policy.min_computed:
                skip_next[:] = False
        x = x_next
        progress_bar.update(1)
    if autoencoder is not None:
        x = decode_latents(autoencoder, x)
    return x.clamp(-1, 1).to(torch.promote_types(x.dtype, torch.float32)).cpu(), computed


@torch.no_grad()
def sample(model, scheduler, schedule: Union[Schedule, float, Sequence[float]] = 1.0, *,
           seeds: Sequence[int], num_inference_steps: Optional[int] = None,
           class_labels: Optional[Sequence[int]] = None, guidance_scale: float = 1.0, batch_size: int = 64,
           skip_policy: Optional[SkipPolicy] = None, autoencoder=None, accelerator=None, progress: bool = True,
           macs_table: Optional[dict] = None) -> SampleResult:
    """Sample one image per seed with a step-aware width schedule.

    Args:
        model: A :class:`~ddsm.models.SlimmableUNet` (in eval mode).
        scheduler: A diffusers scheduler, one of :data:`~ddsm.sampling.SCHEDULERS`; its timesteps are set here.
        schedule: A :class:`~ddsm.schedules.Schedule`, one width for every step, or a list of widths (one per entry
            of ``scheduler.timesteps``: one per model call, so ``2n - 1`` for Heun's ``n`` steps).
        seeds: One seed per image (image ``i`` depends only on ``seeds[i]`` and its label).
        num_inference_steps: ``set_timesteps`` argument when ``schedule`` is a single width (default 50) or a list
            of widths (default: the one giving a timestep per width); ignored for a :class:`Schedule`.
        class_labels: One label per image for class-conditional models (``None``: the null class).
        guidance_scale: Classifier-free guidance scale (1.0: no guidance, one forward per step).
        batch_size: Images per forward (per process); results do not depend on it.
        skip_policy: AdaptiveDiffusion skipping on top of the schedule (``None``: off).
        autoencoder: A diffusers ``AutoencoderKL`` or ``VQModel`` for latent models: latents are decoded at the
            end with ``decode(latents / scaling_factor)``, a ``VQModel`` quantising them first (as ``LDMPipeline``).
        accelerator: An ``accelerate.Accelerator`` (:func:`ddsm.runtime.make_accelerator`): seeds are split across
            its processes and the images gathered in seed order on every process; the UNet's forwards run under its
            ``autocast()`` (mixed precision), the scheduler in the model's dtype. The model (and autoencoder) must
            already be on its device.
        progress: Show a progress bar of denoising steps.
        macs_table: MACs per width (default: :func:`ddsm.models.macs_table` of the model, cached).
    """
    from ..models import macs_table as count_table

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty: nothing to sample")
    if batch_size <= 0:
        raise ValueError(f"batch_size={batch_size}: expected a positive int")
    cfg = model.config
    if class_labels is not None:
        class_labels = [int(c) for c in class_labels]
        if len(class_labels) != len(seeds):
            raise ValueError(f"class_labels has {len(class_labels)} entries for {len(seeds)} seeds")
        if not cfg.num_classes:
            raise ValueError("class_labels given but the model is unconditional (num_classes is None)")
        if any(not 0 <= c <= cfg.num_classes for c in class_labels):
            raise ValueError(f"class labels must lie in [0, {cfg.num_classes}] ({cfg.num_classes} = null class)")
    if guidance_scale != 1.0 and not cfg.num_classes:
        raise ValueError(f"guidance_scale={guidance_scale} needs a class-conditional model")
    widths = resolve_widths(model, scheduler, schedule, num_inference_steps)
    steps = set_timestep_count(scheduler, len(widths))  # the set_timesteps argument, to reset it for every batch
    timesteps = [float(t) for t in scheduler.timesteps]
    table = {float(w): m for w, m in (macs_table or count_table(model)).items()}

    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size)

    all_idx = np.arange(len(seeds))
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    autocast = accelerator.autocast if accelerator is not None else contextlib.nullcontext
    mine = np.array_split(all_idx, world)[rank]
    start = time.perf_counter()
    images, computed = [], []
    bar = tqdm(total=int(np.ceil(len(mine) / batch_size)) * len(widths), desc="sampling", unit="step",
               disable=not progress or (accelerator is not None and not accelerator.is_local_main_process))
    for lo in range(0, len(mine), batch_size):
        idx = mine[lo: lo + batch_size]
        labels = (torch.tensor([class_labels[i] for i in idx], device=device) if class_labels is not None
                  else None)
        img, comp = _sample_batch(model, scheduler, steps, widths, [seeds[i] for i in idx], labels, guidance_scale,
                                  skip_policy, autoencoder, shape, device, dtype, bar, autocast)
        images.append(img)
        computed.append(comp)
    bar.close()
    images_t = torch.cat(images) if images else torch.empty(0, *shape)
    computed_a = np.concatenate(computed) if computed else np.zeros((0, len(widths)), dtype=bool)
    if world > 1:
        from accelerate.utils import gather_object

        pieces = gather_object([(int(mine[0]) if len(mine) else -1, images_t.numpy(), computed_a)])
        pieces = sorted((p for p in pieces if p[0] >= 0), key=lambda p: p[0])
        images_t = torch.from_numpy(np.concatenate([p[1] for p in pieces]))
        computed_a = np.concatenate([p[2] for p in pieces])
    seconds = time.perf_counter() - start

    per_step = np.array([table[w] if w else 0 for w in widths], dtype=np.float64)
    forwards = 2 if (guidance_scale != 1.0 and class_labels is not None) else 1
    macs_per_image = float((computed_a * per_step[None]).sum(1).mean() * forwards)
    decode = decode_macs(autoencoder, cfg) if autoencoder is not None else 0
    return SampleResult(images=images_t, seeds=seeds, widths=widths, timesteps=timesteps, computed=computed_a,
                        macs_per_image=macs_per_image,
                        full_macs_per_image=float(table[max(model.width_choices)] * len(widths) * forwards),
                        decode_macs_per_image=decode, seconds=seconds,
                        class_labels=class_labels, macs_table=table)


_DECODE_MACS: dict = {}


def decode_macs(autoencoder, unet_config) -> int:
    """MACs of decoding one latent with ``autoencoder`` (fvcore; counted once per autoencoder and shape)."""
    key = (id(autoencoder), unet_config.in_channels, unet_config.sample_size)
    if key not in _DECODE_MACS:
        from ..models import fvcore_macs

        class _Decode(torch.nn.Module):
            def __init__(self, vae):
                super().__init__()
                self.vae = vae

            def forward(self, z):
                return decode_latents(self.vae, z)

        param = next(autoencoder.parameters())
        z = torch.zeros(1, unet_config.in_channels, unet_config.sample_size, unet_config.sample_size,
                        dtype=param.dtype, device=param.device)
        _DECODE_MACS[key] = fvcore_macs(_Decode(autoencoder), (z,))
    return _DECODE_MACS[key]
