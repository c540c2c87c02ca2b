"""The search stage: the DEAP evolution over per-step widths (pure), and the search job around it."""

from .space import SearchSpace, Genome, SearchError, two_point_crossover, mutate, repair, initial_genomes
from .evolution import SearchSettings, SearchResult, evolve
from .job import SearchJob, run_search, plot_pareto, plot_schedule

__all__ = ['SearchSpace', 'SearchSettings', 'SearchResult', 'Genome', 'evolve', 'SearchError', 'two_point_crossover',
           'mutate', 'repair', 'initial_genomes', 'SearchJob', 'run_search', 'plot_pareto', 'plot_schedule']
