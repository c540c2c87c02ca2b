"""Successive halving in the search's final choice: rungs, who is re-scored at which N, forwards, settings, resume."""

import json

import pytest
import torch

from conftest import load_script, tiny_unet_kwargs
from ddsm import SlimmableUNet
from ddsm.config import ConfigError, ExperimentConfig
from ddsm.search import (SearchError, SearchSettings, SearchSpace, evolve, halving_rungs, successive_halving)

MACS = {0.25: 10, 0.5: 30, 0.75: 60, 1.0: 100}

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rungs_multiply_by_eta_and_end_on_final_samples():
    assert halving_rungs(64, 256, 2) == [64, 128, 256]
    assert halving_rungs(64, 500, 3) == [64, 192, 500]
    assert halving_rungs(10, 11, 4) == [10, 11]
    assert halving_rungs(64, 256, 1) == [256]  # no halving: the shortlist straight on final_samples
    with pytest.raises(SearchError, match="final_samples > num_samples"):
        halving_rungs(64, 64, 2)
    with pytest.raises(SearchError, match="expected an int >= 1"):
        halving_rungs(64, 256, 0)


def _fake_quality(table, log, forwards_per_image=3):
    """``quality(widths, n)`` from ``table[widths[0]](n)``; every call logged, a memo and counters as evolve has."""
    counters = dict(evaluations=0, forwards=0, memo_hits=0)
    memo = {}

    def quality(widths, n):
        key = (tuple(widths), n)
        if key in memo:
            counters["memo_hits"] += 1
            return memo[key]
        log.append((widths[0], n))
        counters["evaluations"] += 1
        counters["forwards"] += n * forwards_per_image
        memo[key] = table[widths[0]](n)
        return memo[key]

    return quality, counters


def test_each_rung_rescores_the_best_one_over_eta_on_more_samples():
    # candidate i scores i at small N; from N = 16 on, candidate 1 is the best (a small-N ranking error)
    table = {i: (lambda n, i=i: (-1.0 if i == 1 and n >= 16 else float(i))) for i in range(8)}
    log = []
    quality, counters = _fake_quality(table, log)
    shortlist = [([float(i)], 10 * i) for i in range(8)]
    rungs = successive_halving(shortlist, quality, [4, 8, 16, 32], eta=2, counters=counters)
    assert [r.num_samples for r in rungs] == [4, 8, 16, 32]
    assert [len(r.candidates) for r in rungs] == [8, 4, 2, 1]
    assert [r.kept for r in rungs] == [4, 2, 1, 1]
    assert log == [(i, 4) for i in range(8)] + [(i, 8) for i in range(4)] + [(i, 16) for i in range(2)] + [(1, 32)]
    assert [c.widths for c in rungs[2].candidates] == [[1.0], [0.0]]  # the larger N decides
    assert rungs[-1].candidates[0].widths == [1.0] and rungs[-1].candidates[0].num_samples == 32
    assert [r.unet_forwards for r in rungs] == [8 * 4 * 3, 4 * 8 * 3, 2 * 16 * 3, 32 * 3]
    assert counters["forwards"] == sum(r.unet_forwards for r in rungs)
    record = rungs[0].to_dict(100)
    assert record["candidates"][0] == dict(widths=[0.0], macs=0, macs_ratio=0.0, quality=0.0)
    assert record["num_samples"] == 4 and record["kept"] == 4 and record["seconds"] >= 0


def test_a_single_survivor_skips_to_the_final_rung_and_memo_hits_are_free():
    log = []
    quality, counters = _fake_quality({0: lambda n: 1.0, 1: lambda n: 2.0}, log)
    quality([0.0], 4), quality([1.0], 4)  # rung 0 already scored (the population), as in a search
    log.clear()
    rungs = successive_halving([([0.0], 0), ([1.0], 10)], quality, [4, 8, 16, 32], eta=2, counters=counters)
    assert [(r.num_samples, len(r.candidates)) for r in rungs] == [(4, 2), (32, 1)]
    assert log == [(0, 32)]
    assert rungs[0].evaluations == 0 and rungs[0].memo_hits == 2 and rungs[0].unet_forwards == 0


def _flip_objective(calls):
    """Distance to a target ramp plus a term that misleads at small N: uniform 0.5 looks best below N = 16."""
    target = [0.5] * 3 + [1.0] * 3

    def evaluate(widths, n):
        calls.append((tuple(widths), n))
        q = sum((w - t) ** 2 for w, t in zip(widths, target))
        if n < 16 and widths == [0.5] * 6:
            q -= 10.0
        return q, n * sum(1 for w in widths if w)

    return evaluate


def test_evolve_with_halving_chooses_on_the_largest_n_and_counts_every_forward():
    space = SearchSpace.build(MACS, num_steps=6)
    settings = SearchSettings(budget_macs=space.full_cost, population=8, generations=2, num_samples=4,
                              final_samples=16, top_k=4, halving_eta=2, seed=1)
    calls = []
    result = evolve(space, _flip_objective(calls), settings, progress=False)
    assert [r.num_samples for r in result.rungs] == [4, 8, 16]
    assert [len(r.candidates) for r in result.rungs] == [4, 2, 1]
    assert result.rungs[0].evaluations == 0 and result.rungs[0].memo_hits == 4  # scored in the evolution
    assert result.best.num_samples == 16 and result.front == result.rungs[-1].candidates
    assert len(calls) == len(set(calls)) == result.evaluations  # the memo answers every repeat
    assert result.unet_forwards == sum(n * sum(1 for w in ws if w) for ws, n in calls)
    assert {n for _, n in calls} == {4, 8, 16}
    assert sum(1 for _, n in calls if n == 8) == 2 and sum(1 for _, n in calls if n == 16) == 1


def test_eta_one_keeps_the_old_final_choice():
    space = SearchSpace.build(MACS, num_steps=6)
    settings = SearchSettings(budget_macs=space.full_cost, population=8, generations=2, num_samples=4,
                              final_samples=16, top_k=3, seed=1)
    calls = []
    result = evolve(space, _flip_objective(calls), settings, progress=False)
    assert settings.halving_eta == 1 and settings.rungs == [16]
    assert len(result.rungs) == 1 and len(result.front) == 3 and result.best.num_samples == 16
    assert sum(1 for _, n in calls if n == 16) == 3


@pytest.mark.parametrize("kw, message", [
    (dict(halving_eta=0), "expected an int >= 1"),
    (dict(halving_eta=2, mode="nsga2"), "works with mode 'single' only"),
    (dict(halving_eta=2, num_samples=64, final_samples=64), "final_samples > num_samples"),
])
def test_bad_halving_settings_are_clear_errors(kw, message):
    with pytest.raises(SearchError, match=message):
        SearchSettings(budget_macs=100, **kw)


def test_config_section_checks_halving_eta():
    model = tiny_unet_kwargs()
    assert ExperimentConfig.from_dict({"model": model, "search": {"halving_eta": 2}}).search.halving_eta == 2
    with pytest.raises(ConfigError, match="halving_eta"):
        ExperimentConfig.from_dict({"model": model, "search": {"halving_eta": 0}})


def test_a_checkpoint_from_before_halving_resumes_and_another_eta_is_refused(tmp_path):
    space = SearchSpace.build(MACS, num_steps=6)
    settings = SearchSettings(budget_macs=200, population=6, generations=3, num_samples=4, final_samples=16, top_k=2)
    ckpt = tmp_path / "checkpoint.json"
    straight = evolve(space, _flip_objective([]), settings, progress=False)

    class Kill(Exception):
        pass

    def stop(gen):
        if gen == 2:
            raise Kill

    with pytest.raises(Kill):
        evolve(space, _flip_objective([]), settings, checkpoint=ckpt, progress=False, on_generation=stop)
    state = json.loads(ckpt.read_text())
    del state["settings"]["halving_eta"]  # as written before successive halving existed
    ckpt.write_text(json.dumps(state))
    resumed = evolve(space, _flip_objective([]), settings, checkpoint=ckpt, resume=True, progress=False)
    assert resumed.best.widths == straight.best.widths
    other = SearchSettings(**{**settings.__dict__, "halving_eta": 2})
    with pytest.raises(SearchError, match="halving_eta=1, this run asks halving_eta=2"):
        evolve(space, _flip_objective([]), other, checkpoint=ckpt, resume=True, progress=False)


def test_evolve_cli_records_the_rungs(tmp_path, capsys):
    torch.manual_seed(0)
    SlimmableUNet(**tiny_unet_kwargs()).save_pretrained(tmp_path / "model")
    ExperimentConfig.from_dict({"model": tiny_unet_kwargs()}).save(tmp_path / "experiment.yaml")
    out = tmp_path / "search" / "schedule.json"
    main = load_script("search/evolve.py").main
    args = ["--model", str(tmp_path / "model"), "--config", str(tmp_path / "experiment.yaml"), "--output", str(out),
            "--budget", "0.6", "--steps", "4", "--population", "4", "--generations", "1", "--num-samples", "2",
            "--final-samples", "8", "--top-k", "4", "--metric", "fidelity", "--no-baselines"]
    assert main([*args, "--halving-eta", "2"]) == 0
    printed = capsys.readouterr().out
    assert "successive halving: 4 on 2, 2 on 4, 1 on 8" in printed and "DDSM paper" in printed
    pareto = json.loads((out.parent / "pareto.json").read_text())
    assert [r["num_samples"] for r in pareto["rungs"]] == [2, 4, 8] and pareto["settings"]["halving_eta"] == 2
    assert pareto["best"]["num_samples"] == 8
    assert pareto["unet_forwards"] >= sum(r["unet_forwards"] for r in pareto["rungs"]) > 0
    provenance = json.loads(out.read_text())["provenance"]["search"]
    assert provenance["halving_eta"] == 2 and provenance["rungs"] == [2, 4, 8]
    assert {k: provenance[k] for k in ("allow_skip", "num_samples", "final_samples", "top_k")} == dict(
        allow_skip=False, num_samples=2, final_samples=8, top_k=4)  # enough to tell how it was searched
    assert main([*args, "--halving-eta", "2", "--final-samples", "2"]) == 2
    assert "final_samples > num_samples" in capsys.readouterr().err
