"""The sampling stage: the step-aware sampling loop, its skip policy, schedulers, the diffusers pipeline, and the
step-aware UNet that stock diffusers pipelines take as their ``unet``."""

from .schedulers import SCHEDULERS, UNSUPPORTED, build_scheduler, step_kwargs, set_timestep_count
from .loop import SkipPolicy, SampleResult, sample, balanced_labels, resolve_widths
from .pipeline import DDSMPipeline, SCHEDULE_FILE
from .adapter import StepAwareUNet, enable_step_aware, disable_step_aware

__all__ = ['SCHEDULERS', 'UNSUPPORTED', 'build_scheduler', 'step_kwargs', 'set_timestep_count', 'SkipPolicy',
           'SampleResult', 'sample', 'balanced_labels', 'resolve_widths', 'DDSMPipeline', 'SCHEDULE_FILE']
__all__ += ['StepAwareUNet', 'enable_step_aware', 'disable_step_aware']
