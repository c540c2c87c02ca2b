"""Diverse width schedules for checking a search metric against a held-out one (``eval/proxy_check.py``).

Six families, taken round-robin so that any prefix of the list is diverse:

* ``uniform``: one width at every step (the full model included);
* ``fewer_steps``: the full width on k evenly spaced steps, the others skipped (with DDIM exactly a longer step);
* ``ramp_up`` / ``ramp_down``: a narrow width then the full one / the full width then a narrow one, the switch placed
  so that the MACs ratio is nearest a target;
* ``mix`` / ``mix_skip``: random widths per step (``mix_skip``: skips too, never at step 0), widened or narrowed at
  random steps until the MACs ratio is just under a target.

Targets spread over ``[min_ratio, max_ratio]`` in van der Corput order (0.5, 0.25, 0.75, ... of the range), so a
short list covers the range too. Everything is deterministic for a given ``seed``.
"""

from __future__ import annotations

import random
from typing import Dict, Iterator, List, Sequence

from .space import SearchError, SearchSpace

__all__ = ["FAMILIES", "diverse_schedules"]

FAMILIES = ("uniform", "fewer_steps", "ramp_up", "ramp_down", "mix", "mix_skip")


def _van_der_corput(i: int) -> float:
    """The i-th (from 1) point of the base-2 van der Corput sequence: 0.5, 0.25, 0.75, 0.125, ..."""
    out, denom = 0.0, 1.0
    while i:
        denom *= 2
        i, bit = divmod(i, 2)
        out += bit / denom
    return out


def _targets(lo: float, hi: float, phase: float = 0.0) -> Iterator[float]:
    """MACs-ratio targets in [lo, hi]: the van der Corput sequence shifted by ``phase`` (mod 1)."""
    i = 0
    while True:
        i += 1
        yield lo + (hi - lo) * ((_van_der_corput(i) + phase) % 1.0)


def _spread(items: Sequence) -> List:
    """``items`` reordered so that each prefix spreads over the whole list (middle, ends, quarters, ...)."""
    order: List[int] = []
    n = len(items)
    for pos in [0.5, 1.0, 0.0] + [_van_der_corput(i) for i in range(2, 4 * n + 2)]:
        j = min(n - 1, int(round(pos * (n - 1))))
        if j not in order:
            order.append(j)
    order += [j for j in range(n) if j not in order]
    return [items[j] for j in order]


def _entry(space: SearchSpace, kind: str, label: str, genome: List[int]) -> dict:
    cost = space.cost(genome)
    return dict(kind=kind, label=label, widths=space.widths(genome), macs=cost, macs_ratio=cost / space.full_cost)


def _uniform(space: SearchSpace) -> Iterator[dict]:
    n = space.num_genes
    for o in _spread([i for i, w in enumerate(space.options) if w > 0]):
        yield _entry(space, "uniform", f"uniform {space.options[o]:g}", [o] * n)


def _fewer_steps(space: SearchSpace, lo: float, hi: float) -> Iterator[dict]:
    n, full = space.num_genes, len(space.options) - 1
    ks = sorted({max(1, min(n - 1, round(f * n))) for f in (lo + (hi - lo) * j / 7 for j in range(8))})
    for k in _spread(ks):
        kept = {round(i * n / k) for i in range(k)}
        yield _entry(space, "fewer_steps", f"{k} of {n} steps at full width",
                     [full if i in kept else 0 for i in range(n)])


def _ramps(space: SearchSpace, up: bool, lo: float, hi: float) -> Iterator[dict]:
    n, opts, full = space.num_genes, space.options, len(space.options) - 1
    narrow = [i for i, w in enumerate(opts) if 0 < w < opts[full]]
    if not narrow or n < 2:
        return
    for j, target in zip(range(16), _targets(lo, hi, 0.0 if up else 0.125)):
        small = narrow[(j + (0 if up else 1)) % len(narrow)]
        costs = {k: space.cost(([small] * k + [full] * (n - k)) if up else ([full] * (n - k) + [small] * k))
                 for k in range(1, n)}
        k = min(costs, key=lambda kk: (abs(costs[kk] - target * space.full_cost), kk))
        genome = [small] * k + [full] * (n - k) if up else [full] * (n - k) + [small] * k
        arrow = f"{opts[small]:g}->{opts[full]:g}" if up else f"{opts[full]:g}->{opts[small]:g}"
        yield _entry(space, "ramp_up" if up else "ramp_down", f"ramp {arrow}, {k} of {n} steps narrow", genome)


def _mixes(space: SearchSpace, skips: bool, lo: float, hi: float, rng: random.Random) -> Iterator[dict]:
    n, opts = space.num_genes, space.options
    first = 1 if space.allow_skip else 0  # the first non-skip option
    for target in _targets(lo, hi, 0.0625 if skips else 0.0):
        low = [space.lowest(i) if skips else first for i in range(n)]
        genome = [rng.randrange(low[i], len(opts)) for i in range(n)]
        if skips:  # a skip on about a quarter of the steps, so they matter
            genome = [0 if i > 0 and rng.random() < 0.25 else g for i, g in enumerate(genome)]
        budget = target * space.full_cost
        while space.cost(genome) > budget:
            narrowable = [i for i in range(n) if genome[i] > low[i]]
            if not narrowable:
                break
            genome[rng.choice(narrowable)] -= 1
        while True:
            widenable = [i for i in range(n) if genome[i] < len(opts) - 1
                         and space.cost(genome) - space.width_macs(opts[genome[i]])
                         + space.width_macs(opts[genome[i] + 1]) <= budget]
            if not widenable:
                break
            genome[rng.choice(widenable)] += 1
        kind = "mix_skip" if skips else "mix"
        yield _entry(space, kind, f"random {'widths+skips' if skips else 'widths'} at <= {target:.2f}", genome)


def diverse_schedules(space: SearchSpace, count: int, seed: int = 0, min_ratio: float = 0.2,
                      max_ratio: float = 0.9) -> List[dict]:
    """``count`` distinct schedules of ``space`` (one gene per step; skips need ``allow_skip``), each a dict of
    ``kind``, ``label``, ``widths``, ``macs`` and ``macs_ratio``, families taken round-robin (module docstring).

    Raises:
        SearchError: on a bad count or ratio range, or when the space has fewer than ``count`` distinct schedules.
    """
    if count < 1:
        raise SearchError(f"count={count}: expected a positive number of schedules")
    if not 0 < min_ratio < max_ratio <= 1:
        raise SearchError(f"ratio range [{min_ratio}, {max_ratio}]: expected 0 < min_ratio < max_ratio <= 1")
    if space.segments not in (None, space.num_steps):
        raise SearchError("diverse_schedules needs one gene per step (segments=None)")
    rng = random.Random(f"ddsm-diverse-{seed}")
    lo, hi = min_ratio, max_ratio
    families: Dict[str, Iterator[dict]] = dict(
        uniform=_uniform(space), fewer_steps=_fewer_steps(space, lo, hi) if space.allow_skip else iter(()),
        ramp_up=_ramps(space, True, lo, hi), ramp_down=_ramps(space, False, lo, hi),
        mix=_mixes(space, False, lo, hi, rng), mix_skip=_mixes(space, True, lo, hi, rng) if space.allow_skip
        else iter(()))
    out: List[dict] = []
    seen = set()
    misses = {k: 0 for k in families}
    while len(out) < count and families:
        for kind in list(families):
            if len(out) >= count:
                break
            entry = next(families[kind], None)
            if entry is None or misses[kind] > 50:
                families.pop(kind)
                continue
            key = tuple(entry["widths"])
            if key in seen:
                misses[kind] += 1
                continue
            seen.add(key)
            out.append(entry)
    if len(out) < count:
        raise SearchError(f"only {len(out)} distinct schedules of {space.num_steps} steps could be built, "
                          f"{count} asked: lower the count or use more steps")
    return out
