"""AdaptiveDiffusion skipping tuned to a MACs budget: bisect the skip threshold ``delta`` on calibration seeds.

Skipping decides per sample whether to reuse the last noise prediction, so its cost depends on the data: the
benchmark measures the MACs a :class:`~ddsm.sampling.SkipPolicy` actually spends on calibration seeds and
:func:`tune_skip_delta` searches the smallest ``delta`` that meets the budget there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from ..sampling import SkipPolicy
from .budget import BenchmarkError

__all__ = ["SkipTuning", "tune_skip_delta"]


@dataclass(frozen=True)
class SkipTuning:
    """The outcome of :func:`tune_skip_delta`: the policy, the MACs ratio it spent on the calibration seeds,
    whether that met the budget, and every (delta, C_max, ratio) tried."""

    policy: SkipPolicy
    calibration_ratio: float
    met: bool
    trials: Tuple[Tuple[float, int, float], ...]


def tune_skip_delta(measure: Callable[[SkipPolicy], float], budget: float, *, max_consecutive: int = 4,
                    max_allowed_consecutive: Optional[int] = None, iterations: int = 12, delta_low: float = 1e-4,
                    delta_high: float = 1e3) -> SkipTuning:
    """The smallest AdaptiveDiffusion ``delta`` (to bisection precision) whose MACs ratio meets ``budget``.

    ``measure(policy)`` samples the calibration seeds with ``policy`` and returns the MACs ratio actually spent.

    1. ``delta = 0`` (almost never skips) meeting the budget needs no skipping: return it.
    2. Check that ``delta_high`` (skip whenever allowed) meets it; if not, double ``C_max`` (up to
       ``max_allowed_consecutive``, default the same) until it does, or give up (``met=False``, the cheapest policy).
    3. Bisect ``log(delta)`` in ``[delta_low, delta_high]`` for ``iterations`` steps, keeping the upper end meeting
       the budget; return the upper end. Larger delta skips more, so the MACs fall (not always strictly: skipping
       changes the trajectory), and the returned delta meets the budget on the calibration seeds by construction.
    """
    if not 0 < budget:
        raise BenchmarkError(f"budget {budget}: expected > 0")
    memo: Dict[Tuple[float, int], float] = {}

    def ratio(delta: float, c: int) -> float:
        if (delta, c) not in memo:
            memo[(delta, c)] = float(measure(SkipPolicy(delta=delta, max_consecutive=c)))
        return memo[(delta, c)]

    def done(delta: float, c: int, met: bool) -> SkipTuning:
        trials = tuple((d, cc, r) for (d, cc), r in memo.items())
        return SkipTuning(SkipPolicy(delta=delta, max_consecutive=c), ratio(delta, c), met, trials)

    c = max_consecutive
    cap = max(c, max_allowed_consecutive or c)
    if ratio(0.0, c) <= budget:
        return done(0.0, c, True)
    while ratio(delta_high, c) > budget:
        if c >= cap:
            return done(delta_high, c, False)
        c = min(cap, 2 * c)
    if ratio(delta_low, c) <= budget:
        return done(delta_low, c, True)
    lo, hi = math.log(delta_low), math.log(delta_high)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if ratio(math.exp(mid), c) <= budget:
            hi = mid
        else:
            lo = mid
    return done(delta_high if hi == math.log(delta_high) else math.exp(hi), c, True)
