"""A diffusers pipeline bundling a slimmable supernet, a scheduler, an optional autoencoder and a schedule.

    from ddsm import DDSMPipeline
    pipe = DDSMPipeline.from_pretrained("runs/demo/pipeline")
    images = pipe(seeds=range(16)).images          # PIL images, sampled with the step-aware schedule
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput

from .loop import SkipPolicy, sample
from ..schedules import Schedule

__all__ = ["DDSMPipeline", "SCHEDULE_FILE"]

SCHEDULE_FILE = "schedule.json"


class DDSMPipeline(DiffusionPipeline):
    """Step-aware sampling in three lines. Components: ``unet`` (:class:`~ddsm.models.SlimmableUNet`), ``scheduler``
    (any diffusers scheduler), ``vae`` (``AutoencoderKL`` or ``VQModel`` for latent models, else None); plus
    ``schedule`` (a :class:`~ddsm.schedules.Schedule` saved as ``schedule.json``; None means full width at every
    step)."""

    model_cpu_offload_seq = "unet->vae"

    def __init__(self, unet, scheduler, vae=None, schedule: Optional[Schedule] = None):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, vae=vae)
        self.schedule = schedule
        self.last_result = None

    @property
    def autoencoder(self):
        """The VAE, or None (a pipeline saved without one loads its slot back as a placeholder, not a module)."""
        return self.vae if isinstance(self.vae, torch.nn.Module) else None

    def save_pretrained(self, save_directory: Union[str, os.PathLike], **kwargs):
        super().save_pretrained(save_directory, **kwargs)
        if self.schedule is not None:
            self.schedule.save(Path(save_directory) / SCHEDULE_FILE)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        allow_mismatch = kwargs.pop("allow_fingerprint_mismatch", False)
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        path = Path(pretrained_model_name_or_path) / SCHEDULE_FILE
        if path.is_file():
            pipe.schedule = Schedule.load(path, model=pipe.unet, allow_fingerprint_mismatch=allow_mismatch)
        return pipe

    def __call__(self, num_images: int = 1, seeds: Optional[Sequence[int]] = None,
                 class_labels: Optional[Sequence[int]] = None, guidance_scale: float = 1.0,
                 schedule: Union[Schedule, float, Sequence[float], None] = None,
                 num_inference_steps: Optional[int] = None, skip_policy: Optional[SkipPolicy] = None,
                 batch_size: int = 64, output_type: str = "pil", progress: bool = True) -> ImagePipelineOutput:
        """Sample images (one per seed; default seeds 0..num_images-1) with ``schedule`` (default: the
        pipeline's). ``output_type``: "pil", "np" (N, H, W, C) in [0, 1] or "pt" (N, C, H, W) in [-1, 1]. The
        :class:`~ddsm.sampling.SampleResult` (MACs, time, skipped steps) is kept in ``self.last_result``."""
        schedule = schedule if schedule is not None else (self.schedule if self.schedule is not None else 1.0)
        if isinstance(schedule, Schedule) and num_inference_steps is not None:
            self.scheduler.set_timesteps(num_inference_steps)
            if len(self.scheduler.timesteps) != len(schedule):  # PNDM and Heun visit more timesteps than steps
                schedule = schedule.remap(scheduler=self.scheduler)
        seeds = list(range(num_images)) if seeds is None else list(seeds)
        result = sample(self.unet, self.scheduler, schedule, seeds=seeds, num_inference_steps=num_inference_steps,
                        class_labels=class_labels, guidance_scale=guidance_scale, batch_size=batch_size,
                        skip_policy=skip_policy, autoencoder=self.autoencoder, progress=progress)
        self.last_result = result
        if output_type == "pt":
            return ImagePipelineOutput(images=result.images)
        arr = ((result.images + 1) / 2).permute(0, 2, 3, 1).numpy().astype(np.float32)
        if output_type == "np":
            return ImagePipelineOutput(images=arr)
        if output_type != "pil":
            raise ValueError(f"output_type={output_type!r}: expected 'pil', 'np' or 'pt'")
        return ImagePipelineOutput(images=self.numpy_to_pil(arr))
