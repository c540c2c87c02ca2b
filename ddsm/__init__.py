"""ddsm: Denoising Diffusion Step-aware Models, a toolkit.

One weight-shared slimmable UNet serves many widths; a search picks a width per denoising step under a compute
budget; samplers run that step-aware schedule with any diffusers scheduler, or inside a stock diffusers pipeline
(``enable_step_aware``).
"""

from .models import SlimmableUNet, StaticSubnet
from .sampling import (DDSMPipeline, SampleResult, SkipPolicy, StepAwareUNet, disable_step_aware, enable_step_aware,
                       sample)
from .schedules import Schedule, ScheduleError
from .version import __version__

__all__ = ["SlimmableUNet", "StaticSubnet", "Schedule", "ScheduleError", "SampleResult", "SkipPolicy", "sample",
           "DDSMPipeline", "StepAwareUNet", "enable_step_aware", "disable_step_aware", "__version__"]
