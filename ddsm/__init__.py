"""ddsm: Denoising Diffusion Step-aware Models, a toolkit.

One weight-shared slimmable UNet serves many widths; a search picks a width per denoising step under a compute
budget; samplers run that step-aware schedule with any diffusers scheduler, or inside a stock diffusers pipeline
(``enable_step_aware``).

The names below are imported on first use (PEP 562), so ``import ddsm.cli`` (every script's flags) does not pull in
torch and diffusers, and ``--help`` answers at once.
"""

import importlib

from .version import __version__

_LAZY = {"SlimmableUNet": "models", "StaticSubnet": "models", "Schedule": "schedules", "ScheduleError": "schedules",
         "SampleResult": "sampling", "SkipPolicy": "sampling", "sample": "sampling", "DDSMPipeline": "sampling",
         "StepAwareUNet": "sampling", "enable_step_aware": "sampling", "disable_step_aware": "sampling"}

__all__ = ["SlimmableUNet", "StaticSubnet", "Schedule", "ScheduleError", "SampleResult", "SkipPolicy", "sample",
           "DDSMPipeline", "StepAwareUNet", "enable_step_aware", "disable_step_aware", "__version__"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
