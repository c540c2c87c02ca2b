"""The sampling stage: the step-aware sampling loop, its skip policy, schedulers and the diffusers pipeline."""

from .loop import SkipPolicy, SampleResult, sample, balanced_labels, resolve_widths, build_scheduler, SCHEDULERS
from .pipeline import DDSMPipeline, SCHEDULE_FILE

__all__ = ['SkipPolicy', 'SampleResult', 'sample', 'balanced_labels', 'resolve_widths', 'build_scheduler',
           'SCHEDULERS', 'DDSMPipeline', 'SCHEDULE_FILE']
