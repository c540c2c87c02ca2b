"""The evolutionary search: budget, operators, memo, resume, NSGA-II front, a toy optimum."""

import json
import random

import pytest

from ddsm.search import (SearchError, SearchSettings, SearchSpace, evolve, initial_genomes, mutate, repair,
                        two_point_crossover)

MACS = {0.25: 10, 0.5: 30, 0.75: 60, 1.0: 100}


def toy_objective(target):
    """Quality = squared distance of the widths to ``target`` (one width per step); every call counted."""
    calls = []

    def evaluate(widths, n):
        calls.append((tuple(widths), n))
        return sum((w - t) ** 2 for w, t in zip(widths, target)) + 1.0 / n, n * sum(1 for w in widths if w)

    return evaluate, calls


def test_space_costs_and_segments():
    space = SearchSpace.build(MACS, num_steps=10, segments=3)
    assert space.bounds == [(0, 3), (3, 7), (7, 10)]
    assert space.widths([0, 3, 1]) == [0.25] * 3 + [1.0] * 4 + [0.5] * 3
    assert space.cost([0, 3, 1]) == 30 + 400 + 90
    skip = SearchSpace.build(MACS, num_steps=4, allow_skip=True)
    assert skip.options == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert skip.cheapest() == [1, 0, 0, 0] and skip.cost(skip.cheapest()) == 10


def test_repair_fits_budget_and_never_skips_step_zero():
    space = SearchSpace.build(MACS, num_steps=8, allow_skip=True)
    rng = random.Random(0)
    for _ in range(200):
        g = [rng.randrange(len(space.options)) for _ in range(8)]
        budget = rng.randrange(space.cost(space.cheapest()), space.full_cost + 1)
        repair(g, space, budget, rng)
        assert space.cost(g) <= budget and space.options[g[0]] != 0
    with pytest.raises(SearchError, match="below the cheapest"):
        repair([4] * 8, space, 5, rng)


def test_mutation_changes_genes_at_the_configured_rate():
    space = SearchSpace.build(MACS, num_steps=200)
    rng = random.Random(1)
    for prob in (0.0, 0.1, 0.5):
        changed = []
        for _ in range(50):
            g = [rng.randrange(4) for _ in range(200)]
            before = list(g)
            mutate(g, space, prob, rng)
            diff = sum(a != b for a, b in zip(before, g))
            assert diff >= 1  # a mutation always mutates
            changed.append(diff)
        rate = sum(changed) / (50 * 200)
        assert abs(rate - max(prob, 1 / 200)) < 0.03, (prob, rate)


def test_crossover_swaps_a_segment():
    rng = random.Random(2)
    swapped = 0
    for _ in range(100):
        a, b = [0] * 10, [3] * 10
        two_point_crossover(a, b, rng)
        assert sorted(a + b) == [0] * 10 + [3] * 10
        assert all((x == 0) == (y == 3) for x, y in zip(a, b))  # the same positions swapped in both
        swapped += a != [0] * 10
    assert swapped > 80


def test_every_child_respects_the_budget():
    space = SearchSpace.build(MACS, num_steps=12)
    budget = int(0.5 * space.full_cost)
    seen = []

    def evaluate(widths, n):
        seen.append(widths)
        assert sum(MACS[w] for w in widths) <= budget
        return -sum(widths), 0

    settings = SearchSettings(budget_macs=budget, population=10, generations=5, num_samples=4, final_samples=8,
                              top_k=2)
    result = evolve(space, evaluate, settings, progress=False)
    assert len(seen) > 20
    assert result.best.macs <= budget and result.best.num_samples == 8


def test_toy_objective_finds_known_optimum_and_memo_skips_repeats():
    # Best under the budget: full width on the last 4 steps, 0.25 elsewhere (target says so, budget allows it).
    target = [0.25] * 8 + [1.0] * 4
    space = SearchSpace.build(MACS, num_steps=12)
    budget = sum(MACS[w] for w in target)
    evaluate, calls = toy_objective(target)
    settings = SearchSettings(budget_macs=budget, population=16, generations=25, num_samples=4, final_samples=16,
                              top_k=3, seed=0)
    result = evolve(space, evaluate, settings, progress=False)
    assert result.best.widths == target
    assert len(calls) == len(set(calls)) == result.evaluations  # never evaluated the same genome twice
    assert result.memo_hits > 0
    assert result.best.quality == pytest.approx(1 / 16)


def test_initial_population_has_uniform_and_ramps():
    space = SearchSpace.build(MACS, num_steps=10)
    pop = initial_genomes(space, int(0.5 * space.full_cost), 12, random.Random(0))
    assert [1] * 10 in pop and [0] * 10 in pop and [3] * 10 not in pop  # uniform 0.5 and 0.25 fit, 1.0 does not
    assert any(g[0] < g[-1] and len(set(g)) == 2 for g in pop)        # a small-then-large ramp


def test_initial_population_with_skips_holds_fewer_steps_at_full_width():
    space = SearchSpace.build(MACS, num_steps=10, allow_skip=True)            # options: skip, 0.25, 0.5, 0.75, 1.0
    pop = initial_genomes(space, int(0.5 * space.full_cost), 12, random.Random(0))
    assert [4, 0] * 5 in pop                                                  # 5 of 10 steps at full width
    assert [3, 3, 3, 0, 3, 3, 3, 0, 3, 3] in pop                              # the most 0.75 steps that fit: 8 x 60
    assert all(g[0] != 0 and space.cost(g) <= 0.5 * space.full_cost for g in pop)


def test_resume_after_interruption_gives_identical_result(tmp_path):
    target = [0.5] * 6 + [1.0] * 6
    space = SearchSpace.build(MACS, num_steps=12)
    settings = SearchSettings(budget_macs=int(0.55 * space.full_cost), population=8, generations=6,
                              num_samples=4, final_samples=8, top_k=2, seed=3)
    straight = evolve(space, toy_objective(target)[0], settings, progress=False)

    class Kill(Exception):
        pass

    def stop_at(gen):
        if gen == 3:
            raise Kill

    ckpt = tmp_path / "ckpt.json"
    with pytest.raises(Kill):
        evolve(space, toy_objective(target)[0], settings, checkpoint=ckpt, progress=False, on_generation=stop_at)
    assert json.loads(ckpt.read_text())["generation"] == 3
    resumed = evolve(space, toy_objective(target)[0], settings, checkpoint=ckpt, resume=True, progress=False)
    assert resumed.best.widths == straight.best.widths
    assert resumed.best.quality == straight.best.quality
    assert resumed.logbook == straight.logbook
    assert resumed.evaluations == straight.evaluations

    other = SearchSettings(**{**settings.__dict__, "seed": 4})
    with pytest.raises(SearchError, match="other settings"):
        evolve(space, toy_objective(target)[0], other, checkpoint=ckpt, resume=True, progress=False)


def test_nsga2_front_is_non_dominated():
    target = [0.25] * 6 + [1.0] * 6
    space = SearchSpace.build(MACS, num_steps=12)
    settings = SearchSettings(budget_macs=space.full_cost, mode="nsga2", population=16, generations=8,
                              num_samples=4, final_samples=4, seed=1)
    result = evolve(space, toy_objective(target)[0], settings, progress=False)
    front = result.front
    assert len(front) >= 3
    for a in front:
        for b in front:
            assert not ((b.quality <= a.quality and b.macs <= a.macs) and (b.quality < a.quality or b.macs < a.macs))
    assert [c.macs for c in front] == sorted(c.macs for c in front)


def test_bad_settings_raise():
    space = SearchSpace.build(MACS, num_steps=4)
    with pytest.raises(SearchError, match="below the cheapest"):
        evolve(space, toy_objective([1.0] * 4)[0], SearchSettings(budget_macs=39), progress=False)
    with pytest.raises(SearchError, match="mode='pareto'"):
        SearchSettings(budget_macs=10, mode="pareto")
    with pytest.raises(SearchError, match="mutation_prob=1.5"):
        SearchSettings(budget_macs=10, mutation_prob=1.5)
