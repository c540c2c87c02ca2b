"""Evolutionary search for step-aware width schedules (DEAP), under a hard MACs budget.

Genomes, their cost and the operators are in :mod:`.space`. Children over the budget are *repaired* by narrowing
random genes until they fit, so every individual is feasible and no penalty term distorts the objective.

Pseudocode (single-objective mode; NSGA-II mode picks parents in step 1 by front and crowding distance, and
replaces step 4 by ``selNSGA2`` on (quality, MACs))::

    P <- uniform widths that fit, small-then-large ramps at the budget, random feasible genomes      (|P| = mu)
    evaluate P (quality on N samples with seeds shared by every candidate)
    for g in 1..G:
        1. parents: binary tournaments from P
        2. children: two-point crossover with p_cx, then per-gene mutation with p_mut (each gene mutated with
           p_gene to a *different* value), then repair to the budget
        3. evaluate only children without a valid fitness (a memo of every evaluated genome answers repeats)
        4. P <- best mu of P + children (elitist), hall of fame updated
        5. checkpoint (population, generation, hall of fame, logbook, memo, RNG state), atomically
    final choice (multi-fidelity): the top k (nsga2: the front) re-scored on N_final samples; with halving_eta >= 2,
    successive halving instead: the top k on N, the best 1/eta of them on N*eta, ... the last on N_final (.halving)

Randomness comes from one private ``random.Random`` whose state is checkpointed, so ``resume`` after a kill ends
with exactly the result of an uninterrupted run. The checkpoint also records the settings and the *objective* (what
a memoised score means: metric, seeds, scheduler, model weights, ...; :func:`~.fingerprint.search_objective`), and
``resume`` refuses a checkpoint made with other ones, naming each difference.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from deap import tools
from tqdm.auto import tqdm

from ..utils import PathLike, atomic_write, atomic_write_json
from .halving import Candidate, Rung, halving_rungs, successive_halving
from .space import (Genome, ParetoFitness, QualityFitness, SearchError, SearchSpace, initial_genomes, mutate, repair,
                    tournament_selector, two_point_crossover)

__all__ = ["SearchSettings", "SearchResult", "Candidate", "evolve"]

CHECKPOINT_VERSION = 2  # 2: the checkpoint records the objective


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
    halving_eta: int = 1              # >= 2: successive halving from num_samples to final_samples (see .halving)

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
        if self.halving_eta != 1 and self.mode != "single":
            raise SearchError(f"halving_eta={self.halving_eta} works with mode 'single' only (nsga2 re-scores its "
                              "whole front on final_samples); use halving_eta=1 with nsga2")
        halving_rungs(self.num_samples, self.final_samples, self.halving_eta)  # raises on a bad eta or N

    @property
    def rungs(self) -> List[int]:
        """Sample counts of the final choice's rungs (:func:`~.halving.halving_rungs`)."""
        return halving_rungs(self.num_samples, self.final_samples, self.halving_eta)


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
    rungs: List[Rung] = field(default_factory=list)  # the final choice's rungs (one without halving)


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


def evolve(space: SearchSpace, evaluate: Evaluate, settings: SearchSettings, *, checkpoint: Optional[PathLike] = None,
           resume: bool = False, log_csv: Optional[PathLike] = None, progress: bool = True,
           metric_name: str = "", on_generation: Optional[Callable[[int], None]] = None,
           write: bool = True, objective: Optional[Mapping[str, Any]] = None) -> SearchResult:
    """Run the evolutionary search and return the best schedule(s). See the module docstring.

    Args:
        space: genes, widths and MACs.
        evaluate: ``evaluate(widths, num_samples) -> (quality, unet_forwards)``, deterministic.
        settings: budget and evolution settings.
        checkpoint: JSON file rewritten atomically after every generation.
        resume: continue from ``checkpoint`` when it exists (its settings and objective must equal these).
        log_csv: per-generation log written at the end.
        progress: a progress bar per generation.
        metric_name: what ``evaluate`` measures, for the result.
        on_generation: called with the generation number after each checkpoint (tests use it to interrupt).
        write: write checkpoint and log (False on non-main processes of a multi-process run).
        objective: plain JSON values that define what ``evaluate`` measures (metric, seeds, scheduler, model
            fingerprints, ...), recorded in the checkpoint and compared on ``resume``.
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
    header = json.loads(json.dumps(dict(settings=settings_json, objective=objective)))  # as read back
    if resume and ckpt is not None and ckpt.is_file():
        rng, memo, population, logbook_rows, start_gen = _restore(ckpt, header, fitness_cls, counters)
    else:
        rng = random.Random(settings.seed)
        population = [Genome(g, fitness_cls) for g in initial_genomes(space, budget, settings.population, rng)]
        for ind in tqdm(population, desc="generation 0", disable=not progress, leave=False):
            assign(ind)
        logbook_rows = []
        start_gen = 0
        logbook_rows.append(_record(0, population, space, counters, settings))
        _save(out_ckpt, 0, population, logbook_rows, memo, rng, counters, header)

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
        _save(out_ckpt, gen, population, logbook_rows, memo, rng, counters, header)
        if on_generation is not None:
            on_generation(gen)
    if log_csv and write:
        _write_csv(log_csv, logbook_rows)
    best, finals, rungs = _final_choice(population, space, settings, quality, counters, progress)
    return SearchResult(best=best, front=finals, logbook=logbook_rows, evaluations=counters["evaluations"],
                        memo_hits=counters["memo_hits"], images_sampled=counters["images"], settings=settings,
                        space=space, metric_name=metric_name, unet_forwards=counters["forwards"], rungs=rungs)


def _restore(ckpt: Path, header: dict, fitness_cls, counters: dict):
    """The RNG, memo, population, logbook and next generation of a checkpoint made with ``header`` (settings and
    objective); its counters are loaded into ``counters``."""
    state = json.loads(ckpt.read_text())
    fresh = "start without --resume or use another --output"
    if state.get("version") != CHECKPOINT_VERSION:
        raise SearchError(f"search checkpoint {ckpt} has version {state.get('version')}, this version reads "
                          f"{CHECKPOINT_VERSION} (version 2 records the objective); {fresh}")
    stored = json.loads(json.dumps({k: state.get(k) for k in header}))
    if isinstance(stored.get("settings"), dict):  # made before successive halving existed: it ran without
        stored["settings"].setdefault("halving_eta", 1)
    diff = _mismatches(stored, header)
    if diff:
        raise SearchError(f"search checkpoint {ckpt} was made with other settings than this run: {'; '.join(diff)}; "
                          f"{fresh}")
    rng = _rng_from_json(state["rng"])
    memo = {(tuple(w), int(n)): float(q) for w, n, q in state["memo"]}
    counters.update(state["counters"])
    population = [Genome(g, fitness_cls) for g in state["population"]]
    for ind, values in zip(population, state["fitness"]):
        ind.fitness.values = tuple(values)
    return rng, memo, population, state["logbook"], state["generation"] + 1


def _mismatches(stored: dict, now: dict) -> List[str]:
    """``"name=<checkpoint's>, this run asks name=<now>"`` for each differing leaf of the sections (settings,
    objective) of a checkpoint and of this run, named by its path below the section (``seed``, ``metric``,
    ``scheduler_config.beta_schedule``...)."""
    old, new = _section_leaves(stored), _section_leaves(now)
    absent = object()

    def show(name: str, value) -> str:
        text = "<absent>" if value is absent else repr(value)
        return f"{name}={text if len(text) <= 48 else text[:45] + '...'}"

    names = list(new) + [k for k in old if k not in new]
    return [f"{show(k, old.get(k, absent))}, this run asks {show(k, new.get(k, absent))}"
            for k in names if old.get(k, absent) != new.get(k, absent)]


def _section_leaves(sections: dict) -> dict:
    out = {}
    for tree in sections.values():
        out.update(_leaves(tree or {}))
    return out


def _leaves(tree: dict, prefix: str = "") -> dict:
    """The leaves of nested dicts by dotted name."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _final_choice(population: List[Genome], space: SearchSpace, settings: SearchSettings,
                  quality: Callable[[List[float], int], float], counters: dict,
                  progress: bool) -> Tuple[Candidate, List[Candidate], List[Rung]]:
    """Multi-fidelity: re-evaluate the front / the top k on more samples (successive halving when
    ``halving_eta >= 2``), choose on the largest N. Returns the best candidate, the candidates of the last rung
    (nsga2: their non-dominated part) and the rungs."""
    if settings.mode == "single":
        ranked = sorted(_unique(population), key=lambda i: (i.fitness.values[0], space.cost(i)))
        shortlist = ranked[: settings.top_k]
    else:
        front = tools.ParetoFront()
        front.update(_unique(population))
        shortlist = list(front)
    rungs = successive_halving([(space.widths(i), space.cost(i)) for i in shortlist], quality, settings.rungs,
                               settings.halving_eta, counters=counters, progress=progress)
    finals = list(rungs[-1].candidates)  # sorted by (quality, MACs)
    best = finals[0]
    if settings.mode == "nsga2":
        finals = _pareto(finals)
        best = min(finals, key=lambda c: (c.quality, c.macs))
    return best, finals, rungs


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
    tournament = tournament_selector(population, rng, pareto=settings.mode == "nsga2")
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


def _save(ckpt, gen, population, logbook_rows, memo, rng, counters, header) -> None:
    if ckpt is None:
        return
    state = dict(version=CHECKPOINT_VERSION, generation=gen, **header,
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
