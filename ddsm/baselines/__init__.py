"""The neighbouring methods the benchmark compares against: StepSaver, AdaptiveDiffusion tuning, T-Stitch, and the
uniform-width and fewer-steps settings for a budget."""

from .budget import BenchmarkError, fewer_steps_for_budget, uniform_width_for_budget
from .adaptive import SkipTuning, tune_skip_delta
from .tstitch import StitchedUNet, ramp_for_budget
from .stepsaver_curves import DEFAULT_CANDIDATES, RULES, StepSaverError, min_steps, ssim_curves
from .stepsaver import FORMAT, VERSION, PREDICTORS, StepSaver, remap_to_steps
from .stepsaver_sampling import StepSaverSampleResult, sample_per_condition

__all__ = ['DEFAULT_CANDIDATES', 'FORMAT', 'VERSION', 'RULES', 'PREDICTORS', 'StepSaver', 'StepSaverError',
           'StepSaverSampleResult', 'min_steps', 'ssim_curves', 'sample_per_condition', 'remap_to_steps',
           'BenchmarkError', 'uniform_width_for_budget', 'fewer_steps_for_budget', 'SkipTuning', 'tune_skip_delta',
           'StitchedUNet', 'ramp_for_budget']
