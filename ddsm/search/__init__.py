"""The search stage: the DEAP evolution over per-step widths (pure), and the search job around it."""

from .space import (SearchSpace, Genome, SearchError, two_point_crossover, mutate, repair, initial_genomes,
                    tournament_selector)
from .evolution import SearchSettings, SearchResult, evolve
from .fingerprint import search_objective, state_dict_sha256
from .job import SearchJob, run_search, plot_pareto, plot_schedule

__all__ = ['SearchSpace', 'SearchSettings', 'SearchResult', 'Genome', 'evolve', 'SearchError', 'two_point_crossover',
           'mutate', 'repair', 'initial_genomes', 'tournament_selector', 'search_objective', 'state_dict_sha256',
           'SearchJob', 'run_search', 'plot_pareto', 'plot_schedule']
