"""The supernet recipe's levers beyond the plain sandwich: timestep-tilted losses for the narrow widths and
distillation from a frozen dense teacher (the --init-from model, or the dense warm-up's average), with exact resume."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from ddsm.config import ConfigError, ExperimentConfig, TrainConfig
from ddsm.training import RunDirectory, SlimmableTrainer, sandwich_losses, timestep_weights
from test_training import WIDTHS, _batch, _config, _dense_unet, _raw, _tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_timestep_weights_tilt_only_the_narrow_widths_and_keep_the_mean():
    t = torch.arange(100)
    assert timestep_weights(1.0, WIDTHS, t, 1.0, 100) is None          # the largest width: plain mean
    assert timestep_weights(0.25, WIDTHS, t, 0.0, 100) is None         # no bias: plain mean
    smallest = timestep_weights(0.25, WIDTHS, t, 1.0, 100)
    assert smallest[0] == 0 and smallest[-1] == 2 and torch.all(smallest[1:] > smallest[:-1])
    torch.testing.assert_close(smallest.mean(), torch.tensor(1.0))     # uniform t: the loss scale is unchanged
    middle = timestep_weights(0.75, WIDTHS, t, 0.6, 100)               # a third of the way: b = 0.6 / 3
    torch.testing.assert_close(middle[[0, -1]], torch.tensor([0.8, 1.2]))
    low = timestep_weights(0.25, WIDTHS, t, -0.5, 100)                 # a negative bias favours low noise
    torch.testing.assert_close(low[[0, -1]], torch.tensor([1.5, 0.5]))
    torch.testing.assert_close(low.mean(), torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"timestep bias 1.5: expected a float in \[-1, 1\]"):
        timestep_weights(0.25, WIDTHS, t, 1.5, 100)
    with pytest.raises(ConfigError, match=r"timestep_bias"):
        TrainConfig(timestep_bias=1.5)


def test_sample_weights_and_teacher_terms_enter_the_loss_as_documented():
    model = _tiny_model()
    noisy, t, target, labels = _batch()
    widths = (1.0, 0.5, 0.25)
    with torch.no_grad():
        teacher = torch.randn_like(target)
    weights = {w: timestep_weights(w, WIDTHS, t, 1.0, 100) for w in widths}
    weights = {w: v for w, v in weights.items() if v is not None}
    plain = sandwich_losses(model, widths, noisy, t, target, labels)
    ones = sandwich_losses(model, widths, noisy, t, target, labels, sample_weights={0.25: torch.ones(4)})
    tilted = sandwich_losses(model, widths, noisy, t, target, labels, sample_weights=weights)
    taught = sandwich_losses(model, widths, noisy, t, target, labels, teacher=teacher, teacher_weight=0.5)
    torch.testing.assert_close(ones[0.25]["loss"], plain[0.25]["loss"])   # weights of one: the plain mean
    assert torch.equal(tilted[1.0]["loss"], plain[1.0]["loss"])
    for w in (0.5, 0.25):
        assert torch.equal(tilted[w]["mse"], plain[w]["mse"])          # the logged error stays unweighted
        assert not torch.allclose(tilted[w]["loss"], plain[w]["loss"])
        with torch.no_grad():
            pred = model(noisy, t, labels, width=w).sample
        per_sample = (pred - target).pow(2).flatten(1).mean(1)
        torch.testing.assert_close(tilted[w]["loss"], (weights[w] * per_sample).mean())
    for w in widths:                                                 # the teacher term reaches every width
        torch.testing.assert_close(taught[w]["loss"], plain[w]["mse"] + 0.5 * taught[w]["teacher"])
        assert taught[w]["teacher"] > 0
    with pytest.raises(ValueError, match=r"teacher prediction of shape \(4, 1, 4, 4\), expected the target's"):
        sandwich_losses(model, widths, noisy, t, target, labels, teacher=teacher[..., :4, :4], teacher_weight=1.0)


def test_warmup_average_becomes_the_frozen_teacher_and_resume_is_exact(tmp_path):
    cfg = _config(max_steps=4, full_width_steps=2, sandwich_widths=3, teacher_weight=0.5, timestep_bias=0.5,
                  checkpoint_every=100, sample_images=0)
    warm = SlimmableTrainer(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, teacher_weight=0.0,
                                                                                timestep_bias=0.0)),
                            tmp_path / "warm", max_steps=2, progress=False).train()
    straight = SlimmableTrainer(cfg, tmp_path / "a", progress=False).train()
    teacher = load_file(tmp_path / "a/teacher/diffusion_pytorch_model.safetensors")
    average = load_file(warm.model_dir / "diffusion_pytorch_model.safetensors")
    assert teacher.keys() == average.keys()
    for k in teacher:                                    # the teacher is the warm-up's EMA at the switch
        torch.testing.assert_close(teacher[k], average[k], rtol=0, atol=1e-6)
    log = RunDirectory(tmp_path / "a").read_log()
    assert [any(k.startswith("teacher/") for k in r) for r in log] == [False, False, True, True]
    assert all(f"teacher/{w}" in log[-1] for w in (1.0, 0.25))
    # stop after the teacher was made, resume: the same weights as the straight run
    SlimmableTrainer(cfg, tmp_path / "b", max_steps=3, progress=False).train()
    resumed = SlimmableTrainer(cfg, tmp_path / "b", max_steps=4, resume=True, progress=False)
    assert resumed.teacher is not None                   # read back from RUN/teacher
    resumed.train()
    a = load_file(straight.model_dir / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "b/model/diffusion_pytorch_model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_init_from_model_is_the_teacher_and_a_teacher_is_required(tmp_path):
    dense = _dense_unet(tmp_path / "dense")
    raw = _raw(max_steps=1, sample_images=0, teacher_weight=1.0, sandwich_widths=2)
    trainer = SlimmableTrainer(ExperimentConfig.from_dict(raw), tmp_path / "run", init_from=tmp_path / "dense",
                               progress=False)
    g = torch.Generator().manual_seed(0)
    x, t, y = torch.randn(3, 1, 8, 8, generator=g), torch.tensor([1, 40, 99]), torch.tensor([0, 4, 9])
    with torch.no_grad():
        torch.testing.assert_close(trainer.teacher(x, t, class_labels=y, width=1.0).sample,
                                   dense(x, t, class_labels=y).sample, rtol=1e-5, atol=1e-5)
    assert not any(p.requires_grad for p in trainer.teacher.parameters())
    trainer.train()
    assert (tmp_path / "run/teacher/config.json").is_file()
    assert "teacher/1.0" in RunDirectory(tmp_path / "run").read_log()[0]
    with pytest.raises(ConfigError, match=r"teacher_weight=1.0 needs a teacher: --init-from DENSE_DIR"):
        SlimmableTrainer(_config(teacher_weight=1.0), tmp_path / "other", progress=False)
