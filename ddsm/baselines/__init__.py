"""The neighbouring methods the benchmark compares against: StepSaver, AdaptiveDiffusion tuning, T-Stitch."""

from .stepsaver import (
    DEFAULT_CANDIDATES, FORMAT, VERSION, RULES, PREDICTORS, StepSaver, StepSaverError, StepSaverSampleResult,
    min_steps, ssim_curves, sample_per_condition, remap_to_steps
)

__all__ = ['DEFAULT_CANDIDATES', 'FORMAT', 'VERSION', 'RULES', 'PREDICTORS', 'StepSaver', 'StepSaverError',
           'StepSaverSampleResult', 'min_steps', 'ssim_curves', 'sample_per_condition', 'remap_to_steps']
