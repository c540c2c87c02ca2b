"""The search stage: the DEAP evolution over per-step widths (pure), and the search job around it."""

from .evolution import (
    SearchSpace, SearchSettings, SearchResult, Genome, evolve, SearchError, two_point_crossover, mutate,
    repair
)
from .job import SearchJob, run_search, plot_pareto, plot_schedule

__all__ = ['SearchSpace', 'SearchSettings', 'SearchResult', 'Genome', 'evolve', 'SearchError', 'two_point_crossover',
           'mutate', 'repair', 'SearchJob', 'run_search', 'plot_pareto', 'plot_schedule']
