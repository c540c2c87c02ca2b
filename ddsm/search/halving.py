"""Multi-fidelity final choice by successive halving (Jamieson & Talwalkar, AISTATS 2016; the inner loop of
Hyperband): many candidates scored on few samples, the best of them on more, choosing on the most.

With ``eta >= 2`` the rungs use ``N, N*eta, N*eta^2, ...`` samples (capped at, and ending with, ``N_final``); each rung
keeps the best ``ceil(k / eta)`` of its ``k`` candidates for the next. With ``eta = 1`` there is one rung: the whole
shortlist scored on ``N_final`` (the search's behaviour before successive halving). Rung 0 is free inside a search:
the population was scored on ``N`` already, so its scores come from the memo.

Every candidate of a rung is scored on the same seeds (common random numbers): a rung compares schedules, not noise.
A rung holding one candidate is skipped unless it is the last (the choice is made; only the final N matters).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

from tqdm.auto import tqdm

from .space import SearchError

__all__ = ["Candidate", "Rung", "halving_rungs", "successive_halving"]


@dataclass
class Candidate:
    """A schedule (widths per step), its MACs per image and its quality on ``num_samples`` samples."""

    widths: List[float]
    macs: int
    quality: float
    num_samples: int

    @property
    def genome_key(self) -> Tuple[float, ...]:
        return tuple(self.widths)


@dataclass
class Rung:
    """One rung of successive halving: its candidates scored on ``num_samples`` (best first), how many of them
    went on to the next rung, and what scoring them spent (memo hits are free)."""

    num_samples: int
    candidates: List[Candidate]
    kept: int
    evaluations: int = 0
    unet_forwards: int = 0
    memo_hits: int = 0
    seconds: float = 0.0

    def to_dict(self, full_cost: int) -> dict:
        """Plain JSON values, MACs also as a ratio of ``full_cost`` (the full width at every step)."""
        return dict(num_samples=self.num_samples, kept=self.kept, evaluations=self.evaluations,
                    unet_forwards=self.unet_forwards, memo_hits=self.memo_hits, seconds=self.seconds,
                    candidates=[dict(widths=c.widths, macs=c.macs, macs_ratio=c.macs / full_cost, quality=c.quality)
                                for c in self.candidates])


def halving_rungs(num_samples: int, final_samples: int, eta: int) -> List[int]:
    """Sample counts of the rungs: ``[final_samples]`` for ``eta = 1``; else ``num_samples * eta^r`` for r = 0, 1,
    ... capped at ``final_samples``, which is always the last.

    >>> halving_rungs(64, 256, 2), halving_rungs(64, 500, 3), halving_rungs(64, 256, 1)
    ([64, 128, 256], [64, 192, 500], [256])
    """
    if not isinstance(eta, int) or eta < 1:
        raise SearchError(f"halving_eta={eta!r}: expected an int >= 1 (1: no successive halving)")
    if eta == 1:
        return [final_samples]
    if final_samples <= num_samples:
        raise SearchError(f"successive halving (halving_eta={eta}) needs final_samples > num_samples, got "
                          f"final_samples={final_samples}, num_samples={num_samples}")
    rungs = [num_samples]
    while rungs[-1] < final_samples:
        rungs.append(min(rungs[-1] * eta, final_samples))
    return rungs


def successive_halving(shortlist: Sequence[Tuple[List[float], int]], quality: Callable[[List[float], int], float],
                       rungs: Sequence[int], eta: int, counters: Optional[dict] = None,
                       progress: bool = False) -> List[Rung]:
    """Score ``shortlist`` (``(widths, macs)`` pairs) rung by rung; the last rung's candidates are the result.

    Args:
        shortlist: the candidates of rung 0, e.g. the best of the population.
        quality: ``quality(widths, n) -> float``, lower is better, deterministic (memoised by the caller).
        rungs: sample counts, increasing (:func:`halving_rungs`).
        eta: each rung keeps ``ceil(k / eta)`` of its ``k`` candidates.
        counters: the caller's running totals (``evaluations``, ``forwards``, ``memo_hits``), read before and after
            each rung to record what it spent.
        progress: a progress bar per rung.
    """
    if not shortlist:
        raise SearchError("successive halving got no candidates")
    if list(rungs) != sorted(set(rungs)):
        raise SearchError(f"rungs {list(rungs)}: expected strictly increasing sample counts")
    counters = counters if counters is not None else {}
    pool = [(list(w), int(m)) for w, m in shortlist]
    out: List[Rung] = []
    for r, n in enumerate(rungs):
        last = r == len(rungs) - 1
        if len(pool) == 1 and not last:
            continue  # the choice is made: spend samples only where it is confirmed, at the final N
        before = {k: counters.get(k, 0) for k in ("evaluations", "forwards", "memo_hits")}
        start = time.perf_counter()
        scored = [Candidate(w, m, quality(w, n), n)
                  for w, m in tqdm(pool, desc=f"rung {r}: {len(pool)} on {n} samples", disable=not progress,
                                   leave=False)]
        scored.sort(key=lambda c: (c.quality, c.macs))
        keep = len(scored) if last else max(1, math.ceil(len(scored) / eta))
        out.append(Rung(n, scored, keep, evaluations=counters.get("evaluations", 0) - before["evaluations"],
                        unet_forwards=counters.get("forwards", 0) - before["forwards"],
                        memo_hits=counters.get("memo_hits", 0) - before["memo_hits"],
                        seconds=time.perf_counter() - start))
        pool = [(c.widths, c.macs) for c in scored[:keep]]
    return out
