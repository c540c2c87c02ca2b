"""ScheduleEvaluator metrics that need no real data: fidelity and teacher_fid (FID to the full model's samples)."""

import pytest
import torch

from ddsm.evaluation import FeatureSpace, ScheduleEvaluator
from ddsm.evaluation.metrics import feature_stats, fidelity_summary, frechet_distance

SCHEDULER = ("DDIMScheduler", dict(num_train_timesteps=100, beta_schedule="linear"))
STEPS = 4


class _PixelFeatures(torch.nn.Module):
    """Average-pooled pixels as features (16 dims at 16 px): no training, enough for a Frechet distance."""

    name = "pooled-pixels"

    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x, 4).flatten(1)


def _evaluator(model, metric):
    space = FeatureSpace(_PixelFeatures(), "digits", "train", 16, 1, progress=False)
    return ScheduleEvaluator(model, *SCHEDULER, STEPS, metric, space, seed=5, batch_size=8)


def test_teacher_fid_is_zero_for_the_full_model_and_matches_a_hand_computation(tiny_unet):
    ev = _evaluator(tiny_unet, "teacher_fid")
    assert "full-width" in ev.metric_name
    full_score, forwards = ev([1.0] * STEPS, 12)
    # the first call also samples the full model's reference images, and says so in its forwards
    assert abs(full_score) < 1e-6 and forwards == 2 * 12 * STEPS and ev.reference_forwards == 12 * STEPS
    narrow = [1.0, 0.25, 0.25, 0.25]
    score, _ = ev(narrow, 12)
    images = ev.run(narrow, 12).images
    want = frechet_distance(*feature_stats(ev.features.features(images)),
                            *feature_stats(ev.features.features(ev.full_images(12))))
    assert score == pytest.approx(want, rel=1e-9) and score > 1e-3


def test_fidelity_metric_is_one_minus_ssim_to_full(tiny_unet):
    ev = _evaluator(tiny_unet, "fidelity")
    narrow = [0.5] * STEPS
    score, _ = ev(narrow, 6)
    want = 1 - fidelity_summary(ev.run(narrow, 6).images, ev.full_images(6))["ssim"]
    assert score == pytest.approx(want) and 0 < score < 1


def test_full_images_grow_by_the_missing_seeds_only_and_siblings_share_them(tiny_unet):
    ev = _evaluator(tiny_unet, "fidelity")
    _, first = ev([0.5] * STEPS, 4)
    assert first == 2 * 4 * STEPS  # candidate + the full model's 4 reference images
    _, second = ev([0.5] * STEPS, 10)
    assert second == 10 * STEPS + 6 * STEPS  # only seeds 4..9 of the reference are new
    one_shot = ev.run([1.0] * STEPS, 10).images
    assert torch.allclose(ev.full_images(10), one_shot, atol=1e-5)
    teacher = ev.sibling("teacher_fid", _evaluator(tiny_unet, "teacher_fid").features)
    score, forwards = teacher([0.5] * STEPS, 10)
    assert forwards == 10 * STEPS and ev.reference_forwards == 10 * STEPS  # the reference came from ``ev``
    assert score > 0


def test_unknown_metric_and_missing_features_are_clear_errors(tiny_unet):
    with pytest.raises(ValueError, match="expected one of"):
        ScheduleEvaluator(tiny_unet, *SCHEDULER, STEPS, "lpips")
    with pytest.raises(ValueError, match="needs a FeatureSpace"):
        ScheduleEvaluator(tiny_unet, *SCHEDULER, STEPS, "teacher_fid")
