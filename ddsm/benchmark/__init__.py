"""The benchmark stage: every method at equal MACs budgets on the same seeds, its runner, report and plots."""

from .runner import (
    METHODS, BenchmarkError, BenchmarkJob, SkipTuning, StitchedUNet, budget_status, uniform_width_for_budget,
    fewer_steps_for_budget, ramp_for_budget, tune_skip_delta, load_schedules, assign_schedules,
    resolve_sampler, run_benchmark, write_benchmark, benchmark_markdown, plot_benchmark
)

__all__ = ['METHODS', 'BenchmarkError', 'BenchmarkJob', 'SkipTuning', 'StitchedUNet', 'budget_status',
           'uniform_width_for_budget', 'fewer_steps_for_budget', 'ramp_for_budget', 'tune_skip_delta',
           'load_schedules', 'assign_schedules', 'resolve_sampler', 'run_benchmark', 'write_benchmark',
           'benchmark_markdown', 'plot_benchmark']
