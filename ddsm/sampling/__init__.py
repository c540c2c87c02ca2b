"""The sampling stage: the step-aware sampling loop, its skip policy, schedulers and the diffusers pipeline."""

from .schedulers import SCHEDULERS, UNSUPPORTED, build_scheduler, step_kwargs, set_timestep_count
from .loop import SkipPolicy, SampleResult, sample, balanced_labels, resolve_widths
from .pipeline import DDSMPipeline, SCHEDULE_FILE

__all__ = ['SCHEDULERS', 'UNSUPPORTED', 'build_scheduler', 'step_kwargs', 'set_timestep_count', 'SkipPolicy',
           'SampleResult', 'sample', 'balanced_labels', 'resolve_widths', 'DDSMPipeline', 'SCHEDULE_FILE']
