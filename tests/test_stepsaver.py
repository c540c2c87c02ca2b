"""StepSaver: labelling the minimum step count, the predictor, its JSON file, budgets and width schedules."""

import json
import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from ddsm import Schedule
from ddsm.models import macs_table
from ddsm.evaluation.metrics import ssim
from ddsm.sampling import sample
from ddsm.baselines import (StepSaver, StepSaverError, min_steps, remap_to_steps, sample_per_condition,
                            ssim_curves)
from ddsm.baselines.stepsaver import ridge_predict

DDIM = "DDIMScheduler"


pytestmark = pytest.mark.usefixtures("one_thread")


def exponential_curves(taus, candidates):
    """A stub whose SSIM vs steps we control: SSIM(s) = 1 - exp(-s / tau) per condition."""
    return {c: {s: 1 - math.exp(-s / tau) for s in candidates} for c, tau in taus.items()}


# ------------------------------------------------------------------------------------------------------------- labels


def test_min_steps_rules():
    curve = {5: 0.70, 8: 0.91, 10: 0.88, 15: 0.93, 20: 0.95}
    assert min_steps(curve, 0.9, "stays") == 15  # 8 meets it, but 10 falls below again
    assert min_steps(curve, 0.9, "first") == 8
    assert min_steps(curve, 0.5) == 5
    assert min_steps(curve, 0.99) is None
    with pytest.raises(StepSaverError, match="rule"):
        min_steps(curve, 0.9, "median")


def test_labels_are_the_known_minimum_of_a_controlled_curve():
    candidates = (5, 8, 10, 15, 20, 25, 30, 40, 50)
    taus = {0: 2.0, 1: 4.0, 2: 10.0, 3: 30.0}
    saver = StepSaver.from_curves(exponential_curves(taus, candidates), 0.9, candidates=candidates)
    for c, tau in taus.items():  # 1 - exp(-s / tau) >= 0.9  <=>  s >= tau ln 10
        need = tau * math.log(10)
        expected = next((s for s in candidates if s >= need), max(candidates))
        assert saver.recommend_steps(c) == expected
    assert saver.steps == {0: 5, 1: 10, 2: 25, 3: 50}
    record = {r["label"]: r for r in saver.to_dict()["conditions"]}
    assert record[2]["met"] and not record[3]["met"]  # 30 ln 10 = 69 > 50: never met, largest candidate


def test_curves_on_the_tiny_model_are_exact_at_the_reference(tiny_unet):
    seeds = [0, 1]
    curves = ssim_curves(tiny_unet, DDIM, {}, seeds=seeds, candidates=(2, 4, 6), reference_steps=6,
                         conditions=[1, 7], progress=False)
    assert set(curves) == {1, 7} and all(set(c) == {2, 4, 6} for c in curves.values())
    assert curves[1][6] == pytest.approx(1.0) and curves[7][6] == pytest.approx(1.0)
    # batched over conditions = sampled one condition at a time
    ref = sample(tiny_unet, DDIMScheduler(), 1.0, num_inference_steps=6, seeds=seeds, class_labels=[7, 7],
                 progress=False).images
    two = sample(tiny_unet, DDIMScheduler(), 1.0, num_inference_steps=2, seeds=seeds, class_labels=[7, 7],
                 progress=False).images
    assert curves[7][2] == pytest.approx(float(ssim(two, ref).mean()), abs=1e-6)

    saver = StepSaver.from_curves(curves, 2.0)  # unreachable: every condition gets the largest candidate
    assert saver.steps == {1: 6, 7: 6}
    assert StepSaver.from_curves(curves, -1.0).steps == {1: 2, 7: 2}  # anything goes: the smallest


def test_fit_records_scheduler_and_seeds(tiny_unet):
    saver = StepSaver.fit(tiny_unet, DDIM, {"num_train_timesteps": 1000}, seeds=[3], candidates=(2, 4),
                          reference_steps=4, conditions=[0], threshold=0.5, progress=False)
    assert saver.scheduler["class_name"] == DDIM and saver.reference_steps == 4 and saver.width == 1.0
    assert saver.provenance["seeds"] == [3, 3] and saver.provenance["config_sha256"] == tiny_unet.config_sha256
    assert saver.recommend_steps(0) in (2, 4)


# ---------------------------------------------------------------------------------------------------------- predictor


def _saver_with_embeddings(predictor="knn", k=1):
    candidates = (5, 10, 20, 40)
    taus = {0: 2.0, 1: 4.0, 2: 8.0, 3: 16.0}  # -> 5, 10, 20, 40 steps
    emb = {c: [float(c), float(c) ** 2 / 3] for c in taus}
    return StepSaver.from_curves(exponential_curves(taus, candidates), 0.9, candidates=candidates, embeddings=emb,
                                 predictor=predictor, k=k)


def test_json_round_trip(tmp_path):
    saver = _saver_with_embeddings("ridge", k=2)
    path = saver.save(tmp_path / "stepsaver.json")
    loaded = StepSaver.load(path)
    assert loaded == saver
    for c in saver.conditions:
        assert loaded.recommend_steps(c) == saver.recommend_steps(c)
    x = [1.7, 0.4]
    assert loaded.recommend_steps(x) == saver.recommend_steps(x)
    data = json.loads(path.read_text())
    assert data["format"] == "ddsm-stepsaver" and data["predictor"]["kind"] == "ridge"

    data["format"] = "something-else"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(StepSaverError, match="bad.json.*format"):
        StepSaver.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        StepSaver.load(tmp_path / "missing.json")


@pytest.mark.parametrize("predictor", ["knn", "ridge"])
def test_unseen_embedding_gets_a_candidate_count(predictor):
    saver = _saver_with_embeddings(predictor, k=2)
    for x in ([1.5, 0.75], [-10.0, 5.0], [100.0, 3000.0], np.array([2.2, 1.1]), torch.tensor([0.3, 0.0])):
        assert saver.recommend_steps(x) in saver.candidates
    assert saver.recommend_steps([100.0, 3000.0]) == 40  # far beyond the largest: clipped to the largest count


def test_knn_with_one_neighbour_returns_a_seen_conditions_own_count():
    one = _saver_with_embeddings("knn", k=1)
    assert [one.recommend_steps(list(one.embeddings[c])) for c in one.conditions] == [5, 10, 20, 40]


def test_knn_rounds_the_neighbour_mean_up():
    saver = StepSaver.from_curves({0: {5: 0.95, 10: 0.96, 20: 0.97}, 1: {5: 0.5, 10: 0.6, 20: 0.95}}, 0.9,
                                  embeddings={0: [0.0], 1: [1.0]}, predictor="knn", k=2)
    assert saver.steps == {0: 5, 1: 20}
    assert saver.recommend_steps([0.5]) == 20  # mean 12.5 -> the next candidate up


def test_knn_breaks_distance_ties_by_condition_order():
    # why k-NN stays hand-written: scikit-learn's KNeighborsRegressor breaks distance ties in no set order (1.9 takes
    # condition 1 here, for a mean of 25)
    saver = StepSaver(candidates=(5, 15, 22, 25, 35), threshold=0.9, curves={c: {5: 1.0} for c in range(4)},
                      steps={0: 5, 1: 15, 2: 25, 3: 35}, embeddings={0: [1.0], 1: [1.0], 2: [-2.0], 3: [-2.0]},
                      predictor="knn", k=3)
    assert saver.recommend_steps([-1.0]) == 22  # 2, 3 and the earlier of the tied 0 and 1: mean 21.7, rounded up


def _ridge_reference(X, y, x, alpha):
    """StepSaver's hand-written ridge before scikit-learn: w = (Z^T Z + alpha I)^-1 Z^T (y - mean y) on standardised
    features Z, prediction mean y + z @ w."""
    mu, sd = X.mean(0), X.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    Z, z = (X - mu) / sd, (x - mu) / sd
    A = Z.T @ Z + alpha * np.eye(Z.shape[1])
    w = np.linalg.lstsq(A, Z.T @ (y - y.mean()), rcond=None)[0]
    return float(y.mean() + z @ w)


@pytest.mark.parametrize("alpha", [0.0, 0.01, 1.0, 10.0])
def test_ridge_predictor_equals_the_hand_written_closed_form(alpha):
    rng = np.random.default_rng(0)
    candidates = (5, 10, 20, 40)
    # (conditions, dimensions, a constant coordinate?): one condition, as many conditions as dimensions or fewer
    # (singular without the penalty), more, and an exactly constant coordinate
    cases = [(1, 2, False), (2, 2, False), (3, 5, False), (6, 6, False), (10, 3, True), (12, 6, False)]
    for n, d, constant in cases:
        X = rng.normal(size=(n, d)) * rng.uniform(0.1, 100, size=d)
        if constant:
            X[:, 1] = 0.5
        y = rng.choice(candidates, size=n).astype(float)
        queries = np.concatenate([X, rng.normal(size=(6, d)) * X.std(0).clip(1) + X.mean(0)])
        saver = StepSaver(candidates=candidates, threshold=0.9, curves={c: {5: 1.0} for c in range(n)},
                          steps={c: int(y[c]) for c in range(n)}, embeddings={c: X[c] for c in range(n)},
                          predictor="ridge", ridge_alpha=alpha)
        for x in queries:
            expected = _ridge_reference(X, y, x, alpha)
            assert ridge_predict(X, y, x, alpha) == pytest.approx(expected, rel=1e-9, abs=1e-9)
            clipped = min(max(expected, candidates[0]), candidates[-1])
            assert saver.recommend_steps(x) == next(s for s in candidates if s >= clipped - 1e-9)


def test_recommend_steps_errors():
    saver = StepSaver.from_curves({0: {5: 0.95}}, 0.9)
    with pytest.raises(StepSaverError, match="not labelled"):
        saver.recommend_steps(3)
    with pytest.raises(StepSaverError, match="no embeddings"):
        saver.recommend_steps([0.1, 0.2])
    with pytest.raises(StepSaverError, match="same non-zero length"):
        StepSaver.from_curves({0: {5: 1.0}, 1: {5: 1.0}}, 0.9, embeddings={0: [1.0], 1: [1.0, 2.0]})


# ------------------------------------------------------------------------------------------------------------ budgets


def test_for_budget_lowers_raises_and_scales():
    candidates = (5, 10, 20, 40)
    saver = StepSaver.from_curves(exponential_curves({0: 2.0, 1: 8.0}, candidates), 0.9, candidates=candidates)
    assert saver.steps == {0: 5, 1: 20} and saver.mean_steps() == 12.5
    kept = saver.for_budget(15)
    assert kept.steps == saver.steps and kept.provenance["budget"]["mode"] == "kept"
    lowered = saver.for_budget(8, weights={0: 3, 1: 1})
    assert lowered.threshold < saver.threshold and lowered.mean_steps({0: 3, 1: 1}) <= 8
    assert lowered.provenance["budget"]["mode"] == "lowered"
    raised = saver.for_budget(30, fill=True)
    assert raised.threshold > saver.threshold and 12.5 < raised.mean_steps() <= 30
    scaled = saver.for_budget(3.5)
    assert scaled.steps == {0: 3, 1: 3} and scaled.provenance["budget"]["mode"] == "scaled"
    with pytest.raises(StepSaverError, match="below one step"):
        saver.for_budget(0.5)


# ----------------------------------------------------------------------------------------------------------- sampling


def test_schedule_remapped_to_the_recommended_count(tiny_unet):
    saver = StepSaver.from_curves({4: {10: 0.99, 20: 1.0}}, 0.9)
    assert saver.recommend_steps(4) == 10
    schedule = Schedule.ramp(tiny_unet, DDIMScheduler(), 0.25, 1.0, 0.5, num_inference_steps=20)
    assert schedule.timesteps[:3] == (950, 900, 850) and schedule.widths == (0.25,) * 10 + (1.0,) * 10
    moved = saver.schedule_for(4, schedule, DDIM, {})
    # 10 steps visit 900, 800, ..., 0; each takes the width of the same timestep in the 20-step schedule
    assert moved.timesteps == tuple(range(900, -1, -100))
    assert moved.widths == (0.25,) * 5 + (1.0,) * 5
    assert moved.num_inference_steps == 10 and moved.scheduler_class_name == DDIM
    assert remap_to_steps(schedule, 10, DDIM, {}) == moved


def test_sample_per_condition_matches_separate_runs_and_counts_macs(tiny_unet):
    steps = {0: 2, 1: 4, 2: 2}
    seeds, labels = [5, 6, 7, 8], [1, 0, 2, 1]
    table = macs_table(tiny_unet)
    out = sample_per_condition(tiny_unet, DDIM, {}, steps, seeds=seeds, class_labels=labels)
    assert out.steps == [4, 2, 2, 4] and sorted(out.groups) == [2, 4]
    assert out.macs_per_image == pytest.approx(table[1.0] * 3)  # mean of 4, 2, 2, 4 full-width steps
    assert out.full_macs_per_step == table[1.0]
    for i, (s, c) in enumerate(zip(seeds, labels)):
        alone = sample(tiny_unet, DDIMScheduler(), 1.0, num_inference_steps=steps[c], seeds=[s], class_labels=[c],
                       progress=False).images
        torch.testing.assert_close(out.images[i: i + 1], alone, rtol=0, atol=1e-4)  # batch size: float noise

    # with a width schedule: every count runs the schedule remapped onto it
    schedule = Schedule.from_widths(tiny_unet, DDIMScheduler(), [0.5, 0.5, 1.0, 1.0], num_inference_steps=4)
    mixed = sample_per_condition(tiny_unet, DDIM, {}, steps, seeds=seeds, class_labels=labels, schedule=schedule)
    two = remap_to_steps(schedule, 2, DDIM, {}).widths
    expected = np.mean([sum(table[w] for w in ws) for ws in (schedule.widths, two, two, schedule.widths)])
    assert mixed.macs_per_image == pytest.approx(expected)
