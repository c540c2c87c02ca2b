"""ddsm: Denoising Diffusion Step-aware Models, a toolkit.

One weight-shared slimmable UNet serves many widths; a search picks a width per denoising step under a compute
budget; samplers run that step-aware schedule with any diffusers scheduler.
"""

__version__ = "0.1.0"

from .unet import SlimmableUNet, StaticSubnet  # noqa: E402
from .schedule import Schedule, ScheduleError  # noqa: E402
from .sampling import SampleResult, SkipPolicy, sample  # noqa: E402
from .pipeline import DDSMPipeline  # noqa: E402

__all__ = ["SlimmableUNet", "StaticSubnet", "Schedule", "ScheduleError", "SampleResult", "SkipPolicy", "sample",
           "DDSMPipeline", "__version__"]
