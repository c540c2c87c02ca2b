"""Search state: a checkpoint records the objective its scores mean and --resume refuses another one; NSGA-II
parents by front and crowding distance; an interrupted NSGA-II search resumes exactly."""

import importlib.util
import json
import random
from pathlib import Path

import pytest
import torch

from conftest import tiny_unet_kwargs
from ddsm import SlimmableUNet
from ddsm.config import ExperimentConfig
from ddsm.sampling import build_scheduler
from ddsm.search import (Genome, SearchError, SearchJob, SearchSettings, SearchSpace, evolve, search_objective,
                         state_dict_sha256, tournament_selector)
from ddsm.search.space import ParetoFitness

ROOT = Path(__file__).resolve().parents[1]
MACS = {0.25: 10, 0.5: 30, 0.75: 60, 1.0: 100}
TARGET = [0.5] * 6 + [1.0] * 6

pytestmark = pytest.mark.usefixtures("one_thread")


def toy_evaluate(widths, n):
    return sum((w - t) ** 2 for w, t in zip(widths, TARGET)) + 1.0 / n, n


class Kill(Exception):
    pass


def _interrupted(space, settings, ckpt, objective, at=3):
    def stop(gen):
        if gen == at:
            raise Kill

    with pytest.raises(Kill):
        evolve(space, toy_evaluate, settings, checkpoint=ckpt, progress=False, on_generation=stop, objective=objective)


def _objective(**overrides):
    return dict(dict(metric="fidelity", sample_seed=0, scheduler="DDIMScheduler",
                     scheduler_config={"beta_schedule": "linear", "num_train_timesteps": 1000},
                     model={"config_sha256": "a" * 64, "weights_sha256": "b" * 64}), **overrides)


def test_resume_refuses_another_objective_and_names_what_differs(tmp_path):
    space = SearchSpace.build(MACS, num_steps=12)
    settings = SearchSettings(budget_macs=int(0.55 * space.full_cost), population=8, generations=5,
                              num_samples=4, final_samples=8, top_k=2, seed=3)
    ckpt = tmp_path / "checkpoint.json"
    _interrupted(space, settings, ckpt, _objective())
    assert json.loads(ckpt.read_text())["objective"]["metric"] == "fidelity"

    with pytest.raises(SearchError) as e:
        evolve(space, toy_evaluate, settings, checkpoint=ckpt, resume=True, progress=False,
               objective=_objective(metric="domain_fid"))
    message = str(e.value)
    assert "metric='fidelity', this run asks metric='domain_fid'" in message
    assert str(ckpt) in message and "start without --resume or use another --output" in message
    assert "sample_seed" not in message  # only what differs

    other = _objective(model={"config_sha256": "a" * 64, "weights_sha256": "c" * 64},
                       scheduler_config={"beta_schedule": "scaled_linear", "num_train_timesteps": 1000})
    with pytest.raises(SearchError, match=r"model\.weights_sha256='b.*this run asks model\.weights_sha256='c"):
        evolve(space, toy_evaluate, settings, checkpoint=ckpt, resume=True, progress=False, objective=other)
    with pytest.raises(SearchError, match=r"scheduler_config\.beta_schedule='linear', this run asks "
                                          r"scheduler_config\.beta_schedule='scaled_linear'"):
        evolve(space, toy_evaluate, settings, checkpoint=ckpt, resume=True, progress=False, objective=other)
    more = SearchSettings(**{**settings.__dict__, "num_samples": 8})
    with pytest.raises(SearchError, match="num_samples=4, this run asks num_samples=8"):
        evolve(space, toy_evaluate, more, checkpoint=ckpt, resume=True, progress=False, objective=_objective())
    with pytest.raises(SearchError, match="metric='fidelity', this run asks metric=<absent>"):  # no objective
        evolve(space, toy_evaluate, settings, checkpoint=ckpt, resume=True, progress=False)

    straight = evolve(space, toy_evaluate, settings, progress=False)
    resumed = evolve(space, toy_evaluate, settings, checkpoint=ckpt, resume=True, progress=False,
                     objective=_objective())
    assert resumed.best == straight.best and resumed.logbook == straight.logbook
    assert resumed.evaluations == straight.evaluations


def test_a_checkpoint_of_an_older_version_is_refused(tmp_path):
    space = SearchSpace.build(MACS, num_steps=12)
    settings = SearchSettings(budget_macs=int(0.55 * space.full_cost), population=8, generations=5,
                              num_samples=4, final_samples=8, top_k=2)
    ckpt = tmp_path / "checkpoint.json"
    _interrupted(space, settings, ckpt, _objective())
    state = json.loads(ckpt.read_text())
    ckpt.write_text(json.dumps(dict(state, version=1)))
    with pytest.raises(SearchError, match="has version 1.*start without --resume"):
        evolve(space, toy_evaluate, settings, checkpoint=ckpt, resume=True, progress=False, objective=_objective())


def test_search_objective_fingerprints_model_weights_scheduler_and_seeds(tiny_unet):
    scheduler = build_scheduler("DDIMScheduler", {"num_train_timesteps": 1000})
    job = SearchJob(output="s.json", metric="fidelity", num_steps=8)
    objective = search_objective(job, tiny_unet, scheduler)
    assert objective == json.loads(json.dumps(objective))  # plain JSON, compares equal to its stored copy
    assert objective == search_objective(job, tiny_unet, build_scheduler("DDIMScheduler",
                                                                         {"num_train_timesteps": 1000}))
    assert objective["model"]["weights_sha256"] == state_dict_sha256(tiny_unet)
    assert objective["scheduler"] == "DDIMScheduler" and objective["scheduler_config"]["num_train_timesteps"] == 1000
    assert objective["features"] is None and objective["autoencoder"] is None

    with torch.no_grad():
        next(tiny_unet.parameters()).view(-1)[0] += 1e-3  # same config, other weights
    changed = search_objective(job, tiny_unet, scheduler)
    assert changed["model"]["weights_sha256"] != objective["model"]["weights_sha256"]
    assert changed["model"]["config_sha256"] == objective["model"]["config_sha256"]
    other_job = SearchJob(output="s.json", metric="fidelity", num_steps=8, sample_seed=5, guidance_scale=2.0)
    other = search_objective(other_job, tiny_unet, build_scheduler("DDPMScheduler", {"num_train_timesteps": 500}),
                             mixed_precision="bf16")
    assert (other["sample_seed"], other["guidance_scale"], other["scheduler"]) == (5, 2.0, "DDPMScheduler")
    assert (objective["mixed_precision"], other["mixed_precision"]) == ("no", "bf16")
    assert other["scheduler_config"]["num_train_timesteps"] == 500


def test_state_dict_sha256_covers_buffers_and_dtypes():
    a, b = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    assert state_dict_sha256(a) == state_dict_sha256(b)
    b.running_mean += 1
    assert state_dict_sha256(a) != state_dict_sha256(b)
    assert state_dict_sha256(torch.nn.Linear(2, 2).to(torch.bfloat16)) != state_dict_sha256(torch.nn.Linear(2, 2))


def _cli():
    spec = importlib.util.spec_from_file_location("evolve_cli_resume", ROOT / "search/evolve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_cli_resume_with_another_metric_is_refused_in_one_line(tmp_path, fast_domain_features, capsys):
    torch.manual_seed(0)
    SlimmableUNet(**tiny_unet_kwargs()).save_pretrained(tmp_path / "model")
    ExperimentConfig.from_dict({"model": tiny_unet_kwargs()}).save(tmp_path / "experiment.yaml")
    out = tmp_path / "search" / "schedule.json"
    args = ["--model", str(tmp_path / "model"), "--config", str(tmp_path / "experiment.yaml"), "--output", str(out),
            "--budget", "0.5", "--steps", "4", "--population", "4", "--generations", "1", "--num-samples", "4",
            "--final-samples", "4", "--top-k", "1", "--no-baselines"]
    main = _cli()
    assert main([*args, "--metric", "fidelity"]) == 0
    before = (out.parent / "checkpoint.json").read_text()
    capsys.readouterr()
    assert main([*args, "--metric", "domain_fid", "--resume"]) != 0
    err = capsys.readouterr().err.strip()
    assert "metric='fidelity', this run asks metric='domain_fid'" in err
    assert "start without --resume or use another --output" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert (out.parent / "checkpoint.json").read_text() == before  # the checkpoint is left as it was
    assert main([*args, "--metric", "fidelity", "--resume"]) == 0


# ---------------------------------------------------------------------------------------------------------------------
# NSGA-II parent selection
# ---------------------------------------------------------------------------------------------------------------------


def _population(points):
    pop = []
    for i, values in enumerate(points):
        ind = Genome([i], ParetoFitness)
        ind.fitness.values = values
        pop.append(ind)
    return pop


def test_nsga2_parents_by_front_and_crowding_not_lexicographic():
    # (quality, MACs), both minimised. A front of four, and D = (0.05, 200), dominated by (0.0, 100) but
    # lexicographically better than three members of the front. The front's cheap end (0.5, 10) has the worst
    # quality, so a lexicographic tournament never picks it; its crowding distance is infinite (an end of the
    # front), so a crowded tournament picks it whenever it is drawn, except against the other end (a coin flip).
    front = [(0.0, 100.0), (0.1, 60.0), (0.2, 40.0), (0.5, 10.0)]
    pop = _population(front + [(0.05, 200.0)])
    dominated, cheap_end = pop[4], pop[3]
    draw = tournament_selector(pop, random.Random(0), pareto=True)
    picks = [draw() for _ in range(4000)]
    assert not any(p is dominated for p in picks)  # never beats a member of a better front
    # P(cheap end wins) = sum over its 4 pairings (each 1/10) of P(win): 1 + 1 + 1 (finite crowding, worse front)
    # + 1/2 (the other end) = 0.35.
    share = sum(p is cheap_end for p in picks) / len(picks)
    assert 0.32 < share < 0.38, share
    # the middle two have finite crowding distances: they lose to the ends; (0.2, 40) is the less crowded of them
    assert sum(p is pop[1] for p in picks) / len(picks) == pytest.approx(0.1, abs=0.02)
    assert sum(p is pop[2] for p in picks) / len(picks) == pytest.approx(0.2, abs=0.03)


def test_single_objective_parents_stay_best_of_two():
    pop = [Genome([i]) for i in range(6)]
    for i, ind in enumerate(pop):
        ind.fitness.values = (float(i),)
    draw = tournament_selector(pop, random.Random(1))
    picks = [draw() for _ in range(2000)]
    assert not any(p is pop[5] for p in picks)  # the worst never wins a binary tournament
    assert sum(p is pop[0] for p in picks) / len(picks) == pytest.approx(1 / 3, abs=0.03)  # in 5 of 15 pairs


def test_nsga2_resume_after_interruption_gives_identical_result(tmp_path):
    space = SearchSpace.build(MACS, num_steps=12)
    settings = SearchSettings(budget_macs=space.full_cost, mode="nsga2", population=10, generations=5,
                              num_samples=4, final_samples=4, seed=2)
    straight = evolve(space, toy_evaluate, settings, progress=False)
    ckpt = tmp_path / "checkpoint.json"
    _interrupted(space, settings, ckpt, None, at=2)
    resumed = evolve(space, toy_evaluate, settings, checkpoint=ckpt, resume=True, progress=False)
    assert resumed.front == straight.front and resumed.logbook == straight.logbook
