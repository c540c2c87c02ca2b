"""The benchmark stage: every method at equal MACs budgets on the same seeds, its runner, report and plots."""

from ..baselines import (BenchmarkError, SkipTuning, StitchedUNet, fewer_steps_for_budget, ramp_for_budget,
                         tune_skip_delta, uniform_width_for_budget)
from .job import METHODS, BenchmarkJob, budget_status
from .schedules import assign_schedules, load_schedules, resolve_sampler
from .methods import BenchmarkSampler
from .runner import run_benchmark
from .report import benchmark_markdown, plot_benchmark, write_benchmark

__all__ = ['METHODS', 'BenchmarkError', 'BenchmarkJob', 'SkipTuning', 'StitchedUNet', 'budget_status',
           'uniform_width_for_budget', 'fewer_steps_for_budget', 'ramp_for_budget', 'tune_skip_delta',
           'load_schedules', 'assign_schedules', 'resolve_sampler', 'run_benchmark', 'write_benchmark',
           'benchmark_markdown', 'plot_benchmark', 'BenchmarkSampler']
