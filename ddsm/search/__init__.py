"""The search stage: the DEAP evolution over per-step widths (pure), successive halving for its final choice, the
search job around it, and the proxy check (do the search's scores rank schedules as a held-out FID does?)."""

from .space import (SearchSpace, Genome, SearchError, segments_upto, two_point_crossover, mutate, repair,
                    initial_genomes, tournament_selector)
from .halving import Candidate, Rung, halving_rungs, successive_halving
from .evolution import SearchSettings, SearchResult, evolve
from .fingerprint import search_objective, state_dict_sha256
from .job import DDSM_SEARCH_FORWARDS, SearchJob, metric_features, run_search, plot_pareto, plot_schedule
from .diverse import FAMILIES, diverse_schedules
from .proxy import PROXY_FORMAT, TRUST_THRESHOLD, ProxyCheckJob, proxy_summary, run_proxy_check, spearman
from .proxy_report import plot_proxy_check, proxy_markdown

__all__ = ['SearchSpace', 'SearchSettings', 'SearchResult', 'Genome', 'evolve', 'SearchError', 'segments_upto',
           'two_point_crossover',
           'mutate', 'repair', 'initial_genomes', 'tournament_selector', 'search_objective', 'state_dict_sha256',
           'SearchJob', 'run_search', 'plot_pareto', 'plot_schedule', 'metric_features', 'DDSM_SEARCH_FORWARDS',
           'Candidate', 'Rung', 'halving_rungs', 'successive_halving', 'FAMILIES', 'diverse_schedules',
           'PROXY_FORMAT', 'TRUST_THRESHOLD', 'ProxyCheckJob', 'proxy_summary', 'run_proxy_check', 'spearman',
           'plot_proxy_check', 'proxy_markdown']
