"""The benchmark stage: every method at equal MACs budgets on the same seeds, its runner, report and plots; the
frontier over step counts and budgets."""

from ..baselines import (BenchmarkError, SkipTuning, StitchedUNet, fewer_steps_for_budget, ramp_for_budget,
                         tune_skip_delta, uniform_width_for_budget)
from .job import METHODS, BenchmarkJob, budget_status
from .schedules import (ScheduleAssignment, SearchedSchedule, assign_schedules, load_schedules, resolve_sampler,
                        schedule_kind)
from .methods import BenchmarkSampler
from .runner import run_benchmark
from .report import benchmark_markdown, plot_benchmark, write_benchmark
from .frontier_report import FRONTIER_METHODS, frontier_markdown, frontier_report, plot_frontier, write_frontier
from .frontier import KINDS, FrontierJob, check_steps, PlannedSchedule, plan_schedules, run_frontier, search_path
from .cli_args import benchmark_job

__all__ = ['METHODS', 'BenchmarkError', 'BenchmarkJob', 'SkipTuning', 'StitchedUNet', 'budget_status',
           'uniform_width_for_budget', 'fewer_steps_for_budget', 'ramp_for_budget', 'tune_skip_delta',
           'load_schedules', 'assign_schedules', 'resolve_sampler', 'run_benchmark', 'write_benchmark',
           'benchmark_markdown', 'plot_benchmark', 'BenchmarkSampler', 'schedule_kind', 'ScheduleAssignment',
           'SearchedSchedule', 'FRONTIER_METHODS', 'frontier_report', 'frontier_markdown', 'plot_frontier',
           'write_frontier', 'KINDS', 'FrontierJob', 'PlannedSchedule', 'plan_schedules', 'run_frontier',
           'search_path', 'check_steps', 'benchmark_job']
