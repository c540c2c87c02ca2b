"""Where the networks run: one accelerate ``Accelerator`` per process, on CUDA when there is a GPU, else the CPU.

    accelerator = make_accelerator("bf16")                  # CUDA when available, bf16 autocast for the UNet
    model = SlimmableUNet.from_pretrained(path).eval().to(accelerator.device)
    result = sample(model, scheduler, schedule, seeds=range(64), accelerator=accelerator)

Under ``accelerate launch --multi_gpu --num_processes N`` every process gets its own device (``cuda:RANK``, or the
CPU on a machine without GPUs) and :func:`ddsm.sampling.sample` splits the seeds across the processes: the images,
and every number computed from them, are those of one process. Mixed precision covers the UNet's forward only
(``accelerator.autocast()`` in the sampling loop): the scheduler's arithmetic, the autoencoder, the feature networks
and FID stay in float32, and MACs do not change.
"""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["MIXED_PRECISION", "make_accelerator", "model_device", "runtime_record"]

MIXED_PRECISION = ("no", "bf16", "fp16")


def make_accelerator(mixed_precision: Optional[str] = None, **kwargs):
    """An ``accelerate.Accelerator`` for this machine: forced onto the CPU only when CUDA is not available.

    Args:
        mixed_precision: ``"no"``, ``"bf16"`` or ``"fp16"`` (fp16: CUDA only); ``None`` takes accelerate's launch
            flag or config (``accelerate launch --mixed_precision ...``), else ``"no"``.
        kwargs: passed on to ``Accelerator`` (e.g. ``gradient_accumulation_steps``).
    """
    from accelerate import Accelerator

    if mixed_precision is not None and mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"--mixed-precision {mixed_precision!r}: expected one of {list(MIXED_PRECISION)}")
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available(), **kwargs)
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise ValueError("mixed precision fp16 needs a CUDA GPU (accelerate runs fp16 autocast only there); "
                         "use bf16 or no on a CPU")
    return accelerator


def model_device(module: torch.nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (the CPU for a module without parameters)."""
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def runtime_record(model: torch.nn.Module, accelerator=None) -> dict:
    """Where and how a report's images were made: ``device`` (the model's), ``mixed_precision``, ``num_processes``."""
    return dict(device=str(model_device(model)),
                mixed_precision=accelerator.mixed_precision if accelerator is not None else "no",
                num_processes=accelerator.num_processes if accelerator is not None else 1)
