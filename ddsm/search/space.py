"""The search space of step-aware width schedules, and the genetic operators on it.

A genome holds one gene per sampling step (or per segment of consecutive steps): an index into the width options
(the model's widths, plus 0 = skip when allowed). A genome's cost is the sum of its steps' MACs (from the measured
per-width table). Every operator takes a private ``random.Random``, so that a checkpoint of its state captures all
the randomness of a search.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from deap import base, tools
from deap.tools import emo

__all__ = ["SearchError", "segments_upto", "QualityFitness", "ParetoFitness", "Genome", "SearchSpace",
           "two_point_crossover", "mutate", "repair", "initial_genomes", "tournament_selector"]


class SearchError(ValueError):
    """Search arguments that cannot work (budget out of range or below the cheapest schedule, ...)."""


def segments_upto(segments: Optional[int], num_steps: int) -> Optional[int]:
    """Genes of a search at ``num_steps`` steps when ``segments`` is an upper bound (a config's ``segments: 50``
    means one gene per step at 25 steps): None (one gene per step) when ``segments`` is None or >= ``num_steps``."""
    return None if segments is None or segments >= num_steps else segments


class QualityFitness(base.Fitness):
    weights = (-1.0,)  # lower quality value (FID, KID, 1 - SSIM) is better


class ParetoFitness(base.Fitness):
    weights = (-1.0, -1.0)  # (quality, MACs), both minimised


class Genome(list):
    """A list of option indices, one per gene, with a DEAP fitness (class chosen by the search mode)."""

    def __init__(self, genes: Sequence[int], fitness_cls=QualityFitness):
        super().__init__(int(g) for g in genes)
        self.fitness = fitness_cls()


@dataclass(frozen=True)
class SearchSpace:
    """Widths per step for ``num_steps`` sampling steps, grouped into genes.

    Args:
        macs: MACs per width for one forward of one sample (``ddsm.models.macs_table``).
        num_steps: Sampling steps of the target scheduler.
        allow_skip: Add 0 (skip: reuse the previous prediction) to the options; never at step 0.
        segments: Group consecutive steps into this many genes of near-equal length (None: one gene per step).
    """

    macs: Tuple[Tuple[float, int], ...]
    num_steps: int
    allow_skip: bool = False
    segments: Optional[int] = None

    @classmethod
    def build(cls, macs: Dict[float, int], num_steps: int, allow_skip: bool = False,
              segments: Optional[int] = None) -> "SearchSpace":
        if num_steps <= 0:
            raise SearchError(f"num_steps={num_steps}: expected a positive int")
        if segments is not None and not 1 <= segments <= num_steps:
            raise SearchError(f"segments={segments}: expected 1..num_steps ({num_steps})")
        return cls(tuple(sorted((float(w), int(m)) for w, m in macs.items())), num_steps, allow_skip, segments)

    @property
    def options(self) -> Tuple[float, ...]:
        widths = tuple(w for w, _ in self.macs)
        return ((0.0,) if self.allow_skip else ()) + widths

    @property
    def num_genes(self) -> int:
        return self.segments or self.num_steps

    @property
    def bounds(self) -> List[Tuple[int, int]]:
        """Step range [start, stop) of each gene."""
        n, g = self.num_steps, self.num_genes
        edges = [round(i * n / g) for i in range(g + 1)]
        return [(edges[i], edges[i + 1]) for i in range(g)]

    def widths(self, genome: Sequence[int]) -> List[float]:
        opts = self.options
        out: List[float] = []
        for gene, (a, b) in zip(genome, self.bounds):
            out += [opts[gene]] * (b - a)
        return out

    def width_macs(self, width: float) -> int:
        return 0 if width == 0 else dict(self.macs)[width]

    def cost(self, genome: Sequence[int]) -> int:
        return sum(self.width_macs(w) for w in self.widths(genome))

    @property
    def full_cost(self) -> int:
        return self.macs[-1][1] * self.num_steps

    def lowest(self, gene_index: int) -> int:
        """The narrowest option a gene may take (no skip for the gene holding step 0)."""
        return 1 if (self.allow_skip and gene_index == 0) else 0

    def cheapest(self) -> List[int]:
        return [self.lowest(i) for i in range(self.num_genes)]

    def genome_of(self, widths: Sequence[float]) -> List[int]:
        """The genome of a per-step width list (each gene takes the width of its first step)."""
        opts = self.options
        return [opts.index(float(widths[a])) for a, _ in self.bounds]


def two_point_crossover(a: List[int], b: List[int], rng: random.Random) -> None:
    """Swap the genes between two random cut points, in place."""
    n = len(a)
    if n < 2:
        return
    i, j = sorted(rng.sample(range(n + 1), 2))
    a[i:j], b[i:j] = b[i:j], a[i:j]


def mutate(genome: List[int], space: SearchSpace, gene_prob: float, rng: random.Random) -> int:
    """Replace each gene, with probability ``gene_prob``, by a *different* allowed option; at least one gene is
    always changed (a mutation that changes nothing is a wasted evaluation). Returns the number changed."""
    n_opts = len(space.options)
    changed = 0
    forced = rng.randrange(len(genome))
    for i in range(len(genome)):
        if i == forced or rng.random() < gene_prob:
            allowed = [o for o in range(space.lowest(i), n_opts) if o != genome[i]]
            if allowed:
                genome[i] = rng.choice(allowed)
                changed += 1
    return changed


def repair(genome: List[int], space: SearchSpace, budget: int, rng: random.Random) -> List[int]:
    """Narrow random genes (one option step at a time) until the genome's MACs fit ``budget``."""
    for i in range(len(genome)):
        genome[i] = max(genome[i], space.lowest(i))
    while space.cost(genome) > budget:
        narrowable = [i for i in range(len(genome)) if genome[i] > space.lowest(i)]
        if not narrowable:
            raise SearchError(f"budget {budget} MACs is below the cheapest schedule ({space.cost(space.cheapest())})")
        genome[rng.choice(narrowable)] -= 1
    return genome


def tournament_selector(population: Sequence[Genome], rng: random.Random,
                        pareto: bool = False) -> Callable[[], Genome]:
    """A function drawing one parent per call by a binary tournament between two random members of ``population``.

    Single objective: the better fitness wins. ``pareto=True`` (NSGA-II, Deb et al. 2002): the crowded-comparison
    operator. The member of the better non-dominated front wins (so a dominated member never beats its dominator);
    on one front, the larger crowding distance wins (the ends of a front and its sparse regions, where
    lexicographic comparison would always prefer the best quality); remaining ties are a coin flip. This is DEAP's
    ``tools.selTournamentDCD`` comparing fronts rather than pairwise dominance (an individual cannot win by being
    alone in a worse front), drawing from ``rng`` (whose state the search checkpoints) instead of the global
    ``random``, and for any population size (not only multiples of 4).
    """
    if not pareto:
        def best_of_two() -> Genome:
            a, b = rng.sample(population, 2)
            return a if a.fitness > b.fitness else b  # DEAP fitness comparison (weights applied)

        return best_of_two
    rank = {}
    for index, front in enumerate(tools.sortNondominated(population, len(population))):
        emo.assignCrowdingDist(front)
        rank.update({id(ind): (index, -ind.fitness.crowding_dist) for ind in front})

    def crowded_best_of_two() -> Genome:
        a, b = rng.sample(population, 2)
        if rank[id(a)] != rank[id(b)]:
            return a if rank[id(a)] < rank[id(b)] else b
        return a if rng.random() < 0.5 else b

    return crowded_best_of_two


def initial_genomes(space: SearchSpace, budget: int, count: int, rng: random.Random) -> List[List[int]]:
    """Uniform widths that fit the budget; with skips, evenly spaced computed genes at one width (fewer sampling
    steps, written as skips: with DDIM a skipped step that reuses the last noise prediction is exactly a longer
    step); small-then-large ramps at the budget; then random feasible genomes. So the baselines a schedule must beat
    start inside the population, and elitism keeps the best of them."""
    opts = space.options
    out: List[List[int]] = []

    def add(g: List[int]) -> None:
        if g not in out and len(out) < count:
            out.append(g)

    n = space.num_genes
    nonzero = [i for i, w in enumerate(opts) if w > 0]
    for o in reversed(nonzero):  # uniform, widest first
        g = [o] * n
        if space.cost(g) <= budget:
            add(g)
    if space.allow_skip:  # the most evenly spaced genes of one width that fit (gene 0 always computed)
        for o in reversed(nonzero):
            if space.cost([o] * n) <= budget:
                continue  # the uniform genome is in already
            for k in range(n - 1, 0, -1):
                kept = {round(i * n / k) for i in range(k)}
                g = [o if i in kept else 0 for i in range(n)]
                if space.cost(g) <= budget:
                    add(g)
                    break
    for s in nonzero:  # ramps: the first k genes small, the rest large, with the most large genes that fit
        for big in reversed(nonzero):
            if big <= s:
                continue
            for k in range(n + 1):
                g = [s] * k + [big] * (n - k)
                if space.cost(g) <= budget:
                    if 0 < k < n:
                        add(g)
                    break
    attempts = 0
    while len(out) < count and attempts < 100 * count:
        attempts += 1
        g = [rng.randrange(space.lowest(i), len(opts)) for i in range(n)]
        add(repair(g, space, budget, rng))
    return out
