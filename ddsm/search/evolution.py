"""Evolutionary search for step-aware width schedules (DEAP), under a hard MACs budget.

The genome holds one gene per sampling step (or per segment of consecutive steps): an index into the width
options (the model's widths, plus 0 = skip when allowed). A genome's cost is the sum of its steps' MACs (from the
measured per-width table); children over the budget are *repaired* by narrowing random genes until they fit, so
every individual is feasible and no penalty term distorts the objective.

Pseudocode (single-objective mode; NSGA-II mode replaces step 4 by ``selNSGA2`` on (quality, MACs))::

    P <- uniform widths that fit, small-then-large ramps at the budget, random feasible genomes      (|P| = mu)
    evaluate P (quality on N samples with seeds shared by every candidate)
    for g in 1..G:
        1. parents: binary tournaments from P
        2. children: two-point crossover with p_cx, then per-gene mutation with p_mut (each gene mutated with
           p_gene to a *different* value), then repair to the budget
        3. evaluate only children without a valid fitness (a memo of every evaluated genome answers repeats)
        4. P <- best mu of P + children (elitist), hall of fame updated
        5. checkpoint (population, generation, hall of fame, logbook, memo, RNG state), atomically
    re-evaluate the top k on N_final samples (multi-fidelity) and return the best

Randomness comes from one private ``random.Random`` whose state is checkpointed, so ``resume`` after a kill ends
with exactly the result of an uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from deap import base, tools
from tqdm.auto import tqdm

from ..utils import PathLike, atomic_write, atomic_write_json

__all__ = ["SearchSpace", "SearchSettings", "SearchResult", "Genome", "evolve", "SearchError",
           "two_point_crossover", "mutate", "repair"]

CHECKPOINT_VERSION = 1


class SearchError(ValueError):
    """Search arguments that cannot work (budget out of range or below the cheapest schedule, ...)."""


class QualityFitness(base.Fitness):
    weights = (-1.0,)  # lower quality value (FID, KID, 1 - SSIM) is better


class ParetoFitness(base.Fitness):
    weights = (-1.0, -1.0)  # (quality, MACs), both minimised


class Genome(list):
    """A list of option indices, one per gene, with a DEAP fitness (class chosen by the search mode)."""

    def __init__(self, genes: Sequence[int], fitness_cls=QualityFitness):
        super().__init__(int(g) for g in genes)
        self.fitness = fitness_cls()


# ----------------------------------------------------------------------------------------------------------------
# The search space: genes -> widths per step -> MACs
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchSpace:
    """Widths per step for ``num_steps`` sampling steps, grouped into genes.

    Args:
        macs: MACs per width for one forward of one sample (``ddsm.macs.macs_table``).
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


# ----------------------------------------------------------------------------------------------------------------
# Variation operators (private RNG, so checkpoints capture all randomness)
# ----------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------
# Settings, result, checkpoint
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchSettings:
    budget_macs: int                  # hard limit on a schedule's MACs (sum over steps, one sample)
    mode: str = "single"              # "single" (best under the budget) or "nsga2" (quality-MACs front)
    population: int = 24
    generations: int = 12
    crossover_prob: float = 0.7
    mutation_prob: float = 0.3
    mutation_gene_prob: float = 0.1
    num_samples: int = 256
    final_samples: int = 1024
    top_k: int = 4
    seed: int = 0

    def __post_init__(self):
        if self.mode not in ("single", "nsga2"):
            raise SearchError(f"mode={self.mode!r}: expected 'single' or 'nsga2'")
        for name in ("population", "num_samples", "final_samples", "top_k"):
            if getattr(self, name) <= 0:
                raise SearchError(f"{name}={getattr(self, name)}: expected a positive int")
        if self.population < 2:
            raise SearchError(f"population={self.population}: expected at least 2")
        if self.generations < 0:
            raise SearchError(f"generations={self.generations}: expected >= 0")
        for name in ("crossover_prob", "mutation_prob", "mutation_gene_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SearchError(f"{name}={getattr(self, name)}: expected a probability in [0, 1]")


@dataclass
class Candidate:
    widths: List[float]
    macs: int
    quality: float
    num_samples: int

    @property
    def genome_key(self) -> Tuple[float, ...]:
        return tuple(self.widths)


@dataclass
class SearchResult:
    best: Candidate                   # chosen after multi-fidelity re-evaluation
    front: List[Candidate]            # the Pareto front (nsga2) or the re-evaluated top k (single)
    logbook: List[dict]
    evaluations: int                  # candidate evaluations actually run (memo hits excluded)
    memo_hits: int
    images_sampled: int
    settings: SearchSettings
    space: SearchSpace
    metric_name: str = ""
    unet_forwards: int = 0            # one sample through one UNet forward = 1


Evaluate = Callable[[List[float], int], Tuple[float, int]]
"""``evaluate(widths, num_samples) -> (quality, unet_forwards)``: lower quality is better; deterministic for a
given schedule and sample count (common random numbers)."""


def _dump_state(path: Path, state: dict) -> None:
    atomic_write_json(path, state)


def _rng_to_json(rng: random.Random):
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _rng_from_json(data) -> random.Random:
    rng = random.Random()
    rng.setstate((data[0], tuple(data[1]), data[2]))
    return rng


# ----------------------------------------------------------------------------------------------------------------
# The search
# ----------------------------------------------------------------------------------------------------------------


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


def evolve(space: SearchSpace, evaluate: Evaluate, settings: SearchSettings, *, checkpoint: Optional[PathLike] = None,
           resume: bool = False, log_csv: Optional[PathLike] = None, progress: bool = True,
           metric_name: str = "", on_generation: Optional[Callable[[int], None]] = None,
           write: bool = True) -> SearchResult:
    """Run the evolutionary search and return the best schedule(s). See the module docstring.

    Args:
        space: genes, widths and MACs.
        evaluate: ``evaluate(widths, num_samples) -> (quality, unet_forwards)``, deterministic.
        settings: budget and evolution settings.
        checkpoint: JSON file rewritten atomically after every generation.
        resume: continue from ``checkpoint`` when it exists (its settings must equal ``settings``).
        log_csv: per-generation log written at the end.
        progress: a progress bar per generation.
        metric_name: what ``evaluate`` measures, for the result.
        on_generation: called with the generation number after each checkpoint (tests use it to interrupt).
        write: write checkpoint and log (False on non-main processes of a multi-process run).
    """
    budget = settings.budget_macs
    cheapest = space.cost(space.cheapest())
    if budget < cheapest:
        raise SearchError(f"budget {budget} MACs ({budget / space.full_cost:.3f} of full) is below the cheapest "
                          f"schedule: {cheapest} MACs ({cheapest / space.full_cost:.3f} of full)")
    fitness_cls = QualityFitness if settings.mode == "single" else ParetoFitness
    memo: Dict[Tuple[Tuple[float, ...], int], float] = {}
    counters = dict(evaluations=0, memo_hits=0, images=0, forwards=0)

    def quality(widths: List[float], n: int) -> float:
        key = (tuple(widths), n)
        if key in memo:
            counters["memo_hits"] += 1
            return memo[key]
        q, forwards = evaluate(widths, n)
        if not math.isfinite(q):
            raise SearchError(f"the metric returned {q} for widths {widths}")
        memo[key] = float(q)
        counters["evaluations"] += 1
        counters["images"] += n
        counters["forwards"] += int(forwards)
        return memo[key]

    def assign(ind: Genome) -> None:
        widths = space.widths(ind)
        q = quality(widths, settings.num_samples)
        ind.fitness.values = (q,) if settings.mode == "single" else (q, float(space.cost(ind)))

    ckpt = Path(checkpoint) if checkpoint else None
    out_ckpt = ckpt if write else None
    settings_json = dict(asdict(settings), space=dict(asdict(space), macs=[list(m) for m in space.macs]))
    if resume and ckpt is not None and ckpt.is_file():
        state = json.loads(ckpt.read_text())
        if state.get("version") != CHECKPOINT_VERSION:
            raise SearchError(f"checkpoint {ckpt} has version {state.get('version')}, expected {CHECKPOINT_VERSION}")
        diff = {k: (state["settings"].get(k), v) for k, v in settings_json.items() if state["settings"].get(k) != v}
        if diff:
            raise SearchError(f"checkpoint {ckpt} was made with other settings (checkpoint, now): {diff}")
        rng = _rng_from_json(state["rng"])
        memo = {(tuple(w), int(n)): float(q) for w, n, q in state["memo"]}
        counters.update(state["counters"])
        population = [Genome(g, fitness_cls) for g in state["population"]]
        for ind, values in zip(population, state["fitness"]):
            ind.fitness.values = tuple(values)
        logbook_rows = state["logbook"]
        start_gen = state["generation"] + 1
    else:
        rng = random.Random(settings.seed)
        population = [Genome(g, fitness_cls) for g in initial_genomes(space, budget, settings.population, rng)]
        for ind in tqdm(population, desc="generation 0", disable=not progress, leave=False):
            assign(ind)
        logbook_rows = []
        start_gen = 0
        logbook_rows.append(_record(0, population, space, counters, settings))
        _save(out_ckpt, 0, population, logbook_rows, memo, rng, counters, settings_json)

    for gen in range(start_gen, settings.generations + 1):
        if gen == 0:
            continue
        children = _vary(population, space, settings, budget, rng, fitness_cls)
        for child in tqdm(children, desc=f"generation {gen}/{settings.generations}", disable=not progress,
                          leave=False):
            if not child.fitness.valid:  # evaluate only individuals without a valid fitness
                assign(child)
        population = _survive(population + children, settings)
        logbook_rows.append(_record(gen, population, space, counters, settings))
        _save(out_ckpt, gen, population, logbook_rows, memo, rng, counters, settings_json)
        if on_generation is not None:
            on_generation(gen)
    if log_csv and write:
        _write_csv(log_csv, logbook_rows)

    # Multi-fidelity: re-evaluate the front / the top k on more samples, choose on those numbers.
    if settings.mode == "single":
        ranked = sorted(_unique(population), key=lambda i: (i.fitness.values[0], space.cost(i)))
        shortlist = ranked[: settings.top_k]
    else:
        front = tools.ParetoFront()
        front.update(_unique(population))
        shortlist = list(front)
    finals = [Candidate(space.widths(i), space.cost(i), quality(space.widths(i), settings.final_samples),
                        settings.final_samples) for i in tqdm(shortlist, desc="final re-evaluation",
                                                               disable=not progress, leave=False)]
    finals.sort(key=lambda c: (c.quality, c.macs))
    best = finals[0]
    if settings.mode == "nsga2":
        finals = _pareto(finals)
        best = min(finals, key=lambda c: (c.quality, c.macs))
    return SearchResult(best=best, front=finals, logbook=logbook_rows, evaluations=counters["evaluations"],
                        memo_hits=counters["memo_hits"], images_sampled=counters["images"], settings=settings,
                        space=space, metric_name=metric_name, unet_forwards=counters["forwards"])


def _unique(population: List[Genome]) -> List[Genome]:
    seen, out = set(), []
    for ind in population:
        if tuple(ind) not in seen:
            seen.add(tuple(ind))
            out.append(ind)
    return out


def _pareto(cands: List[Candidate]) -> List[Candidate]:
    """Non-dominated candidates on (quality, MACs), sorted by MACs."""
    keep = [c for c in cands if not any((o.quality <= c.quality and o.macs <= c.macs) and
                                        (o.quality < c.quality or o.macs < c.macs) for o in cands)]
    return sorted(keep, key=lambda c: c.macs)


def _vary(population, space, settings, budget, rng, fitness_cls) -> List[Genome]:
    def tournament() -> Genome:
        a, b = rng.sample(population, 2)
        return a if a.fitness > b.fitness else b  # DEAP fitness comparison (dominance-aware, weights applied)

    children: List[Genome] = []
    while len(children) < settings.population:
        p1, p2 = tournament(), tournament()
        c1, c2 = Genome(p1, fitness_cls), Genome(p2, fitness_cls)
        c1.fitness.values, c2.fitness.values = p1.fitness.values, p2.fitness.values
        if rng.random() < settings.crossover_prob:
            two_point_crossover(c1, c2, rng)
            del c1.fitness.values, c2.fitness.values
        for c in (c1, c2):
            if rng.random() < settings.mutation_prob:
                mutate(c, space, settings.mutation_gene_prob, rng)
                if c.fitness.valid:
                    del c.fitness.values
            before = list(c)
            repair(c, space, budget, rng)
            if list(c) != before and c.fitness.valid:
                del c.fitness.values
            children.append(c)
    return children[: settings.population]


def _survive(pool: List[Genome], settings: SearchSettings) -> List[Genome]:
    pool = _unique(pool)
    if settings.mode == "nsga2":
        return tools.selNSGA2(pool, min(settings.population, len(pool)))
    return sorted(pool, key=lambda i: i.fitness.values[0])[: settings.population]


def _record(gen: int, population: List[Genome], space: SearchSpace, counters: dict, settings) -> dict:
    qs = sorted(i.fitness.values[0] for i in population)
    best = min(population, key=lambda i: (i.fitness.values[0], space.cost(i)))
    return dict(generation=gen, best_quality=qs[0], median_quality=qs[len(qs) // 2], worst_quality=qs[-1],
                best_macs_ratio=space.cost(best) / space.full_cost,
                mean_macs_ratio=sum(space.cost(i) for i in population) / len(population) / space.full_cost,
                evaluations=counters["evaluations"], memo_hits=counters["memo_hits"],
                unet_forwards=counters["forwards"], best_widths=" ".join(f"{w:g}" for w in space.widths(best)))


def _save(ckpt, gen, population, logbook_rows, memo, rng, counters, settings_json) -> None:
    if ckpt is None:
        return
    state = dict(version=CHECKPOINT_VERSION, generation=gen, settings=settings_json,
                 population=[list(i) for i in population], fitness=[list(i.fitness.values) for i in population],
                 logbook=logbook_rows, memo=[[list(k[0]), k[1], v] for k, v in memo.items()],
                 rng=_rng_to_json(rng), counters=counters)
    _dump_state(ckpt, state)


def _write_csv(path: PathLike, rows: List[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buf.getvalue())
