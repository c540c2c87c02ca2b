"""The simplest baselines' settings for a MACs budget (pure functions), and the error every baseline raises.

:class:`BenchmarkError` lives here, below :mod:`ddsm.benchmark`, because the baselines (T-Stitch, AdaptiveDiffusion
tuning) raise it too; :mod:`ddsm.benchmark` re-exports it.
"""

from __future__ import annotations

from typing import Mapping, Optional

__all__ = ["BenchmarkError", "uniform_width_for_budget", "fewer_steps_for_budget"]


class BenchmarkError(ValueError):
    """Benchmark arguments that cannot work (budget out of range, overlapping seeds, incompatible models...)."""


def uniform_width_for_budget(table: Mapping[float, float], budget: float) -> Optional[float]:
    """The widest width whose MACs are at most ``budget`` times the full width's (None: even the narrowest is
    over)."""
    full = table[max(table)]
    fits = [float(w) for w, m in table.items() if m <= budget * full * (1 + 1e-12)]
    return max(fits) if fits else None


def fewer_steps_for_budget(num_steps: int, budget: float) -> int:
    """``floor(budget * N)``: the most full-width steps within the budget (0: the budget is below one step)."""
    return max((k for k in range(num_steps + 1) if k <= budget * num_steps * (1 + 1e-12)), default=0)
