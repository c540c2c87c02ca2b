"""Sandwich-rule training: the sandwich draw, distillation, exact resume, two processes, --init-from, NaN stop,
latent diffusion, checkpoint bookkeeping and the CLI, on 8 px models of a few channels (sklearn's 8x8 digits)."""

import dataclasses
import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ddsm.config import ConfigError, ExperimentConfig, load_config
from ddsm.training import (ExponentialMovingAverage, RunDirectory, ShardedBatchSampler, SlimmableTrainer,
                           TrainingDiverged, sandwich_losses, sandwich_widths, step_generator, warmup_lambda)
from ddsm.models import SlimmableUNet
from ddsm.utils import config_sha256

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = (0.25, 0.5, 0.75, 1.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def _raw(**train):
    """A tiny class-conditional experiment on the 8x8 digits: 2 levels of 8 and 16 channels."""
    return {
        "name": "tiny",
        "model": dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=[8, 16], layers_per_block=1,
                      attention_resolutions=[4], attention_head_dim=4, norm_num_groups=4, num_classes=10,
                      width_choices=list(WIDTHS), channel_divisor=2),
        "data": {"name": "digits"},
        "diffusion": {"num_train_timesteps": 100},
        "train": dict(dict(batch_size=8, max_steps=4, warmup_steps=2, checkpoint_every=2, sample_every=100,
                           sample_images=10, sample_steps=3, log_every=1), **train),
        "sampling": {"batch_size": 16},
    }


def _config(**train) -> ExperimentConfig:
    return ExperimentConfig.from_dict(_raw(**train))


def _write_config(path: Path, raw: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(raw))
    return path


def _script(name: str):
    """Import a train/ script as a module, to call its main() in this process."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "train" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_model(**overrides) -> SlimmableUNet:
    torch.manual_seed(0)
    return SlimmableUNet(**dict(_raw()["model"], **overrides))


# ----------------------------------------------------------------------------------------------------------------
# The sandwich rule
# ----------------------------------------------------------------------------------------------------------------


def test_sandwich_always_has_largest_and_smallest_and_draws_the_rest_at_random():
    choices = (0.25, 1.0, 0.5, 0.75, 0.375)  # any order in
    seen = set()
    for seed in range(40):
        draw = sandwich_widths(choices, 3, step_generator(7, seed))
        assert draw[0] == 1.0 and draw[-1] == 0.25 and len(draw) == 3
        assert list(draw) == sorted(draw, reverse=True)
        seen.add(draw[1])
        assert draw == sandwich_widths(choices, 3, step_generator(7, seed))  # seeded: the same draw again
    assert seen == {0.375, 0.5, 0.75}  # every middle width gets drawn
    draws = [sandwich_widths(choices, 4, step_generator(7, s)) for s in range(20)]
    assert len(set(draws)) > 1 and all(len(set(d)) == 4 for d in draws)  # distinct widths, varying draws
    assert sandwich_widths(WIDTHS, 4, step_generator(0)) == (1.0, 0.75, 0.5, 0.25)  # n >= widths: all of them
    assert sandwich_widths(WIDTHS, 9, step_generator(0)) == (1.0, 0.75, 0.5, 0.25)
    assert sandwich_widths(WIDTHS, 2, step_generator(0)) == (1.0, 0.25)
    assert sandwich_widths(WIDTHS, 1, step_generator(0)) == (1.0,)


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    noisy, target = torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 8, 8, generator=g)
    return noisy, torch.tensor([5, 50, 90, 99]), target, torch.tensor([1, 2, 3, 10])


def test_inplace_distillation_changes_the_small_widths_loss_only():
    model = _tiny_model()
    noisy, t, target, labels = _batch()
    widths = (1.0, 0.5, 0.25)

    def run(**kw):
        model.zero_grad()
        terms = sandwich_losses(model, widths, noisy, t, target, labels, backward=lambda loss: loss.backward(), **kw)
        return terms, torch.cat([p.grad.flatten() for p in model.parameters()])

    plain, g_plain = run()
    distill, g_distill = run(distill_weight=0.5)
    only, g_only = run(distill_weight=0.5, distill_only=True)
    assert torch.equal(plain[1.0]["loss"], distill[1.0]["loss"]) and "distill" not in distill[1.0]
    for w in (0.5, 0.25):
        assert "distill" not in plain[w]
        assert torch.equal(plain[w]["mse"], distill[w]["mse"])  # same predictions, same ground-truth error
        assert distill[w]["distill"] > 0
        torch.testing.assert_close(distill[w]["loss"], plain[w]["mse"] + 0.5 * distill[w]["distill"])
        torch.testing.assert_close(only[w]["loss"], 0.5 * only[w]["distill"])
        assert not torch.allclose(plain[w]["loss"], distill[w]["loss"])
    assert not torch.allclose(g_plain, g_distill) and not torch.allclose(g_distill, g_only)
    # gradients of all widths add up: the sum of per-width backward passes equals one backward of the summed loss
    model.zero_grad()
    sum(model(noisy, t, labels, width=w).sample.sub(target).pow(2).mean() for w in widths).backward()
    torch.testing.assert_close(torch.cat([p.grad.flatten() for p in model.parameters()]), g_plain)
    with pytest.raises(ValueError, match="decreasing"):
        sandwich_losses(model, (0.25, 1.0), noisy, t, target, labels)


def test_batches_are_disjoint_across_processes_and_restart_exactly():
    one = ShardedBatchSampler(100, 8, seed=3)
    shards = [ShardedBatchSampler(100, 4, num_processes=2, process_index=r, seed=3) for r in range(2)]
    for k in range(30):  # spans several epochs (12 global batches each)
        a, b = shards[0].indices(k), shards[1].indices(k)
        assert not set(a) & set(b) and a + b == one.indices(k)
    later = iter(ShardedBatchSampler(100, 8, seed=3, start=17))
    assert [next(later) for _ in range(3)] == [one.indices(k) for k in (17, 18, 19)]
    assert ShardedBatchSampler(100, 8, seed=4).indices(0) != one.indices(0)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ShardedBatchSampler(10, 8, num_processes=2)


# ----------------------------------------------------------------------------------------------------------------
# EMA and warm-up: diffusers' EMAModel as configured here, and the warm-up kept against diffusers' schedule
# ----------------------------------------------------------------------------------------------------------------


def _ema_run(decay=0.9, updates=30):
    """An ExponentialMovingAverage over ``updates`` random changes of the tiny model, and the decay and averages of
    the formula ddsm used before diffusers' EMAModel: ``d = min(decay, (1 + n) / (10 + n))`` at update ``n``,
    ``shadow.lerp_(param, 1 - d)``."""
    model = _tiny_model()
    ema = ExponentialMovingAverage(model, decay)
    shadow = [p.detach().clone() for p in model.parameters()]
    g = torch.Generator().manual_seed(0)
    for n in range(1, updates + 1):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g), alpha=0.1)
        ema.step(model.parameters())
        d = min(decay, (1 + n) / (10 + n))
        assert ema.cur_decay_value == d  # the same decay at every update, exactly
        for s, p in zip(shadow, model.parameters()):
            s.lerp_(p.detach(), 1.0 - d)
    return model, ema, shadow


def test_ema_matches_the_formula_it_replaced():
    _, ema, shadow = _ema_run()
    for got, want in zip(ema.shadow_params, shadow):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)  # lerp_ and EMAModel's sub_ round apart


def test_ema_state_round_trips_and_reads_the_old_format():
    model, ema, _ = _ema_run(updates=5)
    names = [name for name, _ in model.named_parameters()]
    old = {"decay": 0.9, "num_updates": 5, "shadow": dict(zip(names, ema.shadow_params))}  # ddsm's own EMA's state
    for state in (ema.state_dict(), old):
        buffer = io.BytesIO()
        torch.save(state, buffer)  # as accelerate's save_state / load_state do
        buffer.seek(0)
        loaded = ExponentialMovingAverage(_tiny_model(), 0.5)
        loaded.load_state_dict(torch.load(buffer, map_location="cpu", weights_only=False))
        assert (loaded.decay, loaded.optimization_step) == (0.9, 5)
        assert all(torch.equal(a, b) for a, b in zip(loaded.shadow_params, ema.shadow_params))
        loaded.step(model.parameters())
        assert loaded.cur_decay_value == min(0.9, 7 / 16)  # update 6 continues the count
    on_meta = ExponentialMovingAverage(_tiny_model().to("meta"), 0.5)  # stands for a GPU: not where torch.load puts it
    on_meta.load_state_dict(ema.state_dict())
    assert all(p.device.type == "meta" for p in on_meta.shadow_params)  # the averages stay with the model
    with pytest.raises(ValueError, match="does not match the model"):
        ExponentialMovingAverage(torch.nn.Linear(2, 2), 0.5).load_state_dict(ema.state_dict())


def test_warmup_learning_rates_and_why_not_diffusers_schedule():
    from diffusers.optimization import get_scheduler

    def rates(make, steps=6):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
        scheduler, out = make(optimizer), []
        for _ in range(steps):
            out.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
        return out

    ours = rates(lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, warmup_lambda(3)))
    assert ours == [0.5 / 3, 0.5 * 2 / 3, 0.5, 0.5, 0.5, 0.5]  # the first step already learns
    theirs = rates(lambda opt: get_scheduler("constant_with_warmup", opt, num_warmup_steps=3))
    assert theirs[0] == 0.0 and theirs[1:] == ours[:-1]  # one step behind: the first step would not learn
    assert rates(lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, warmup_lambda(0)), 2) == [0.5, 0.5]


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints and resume
# ----------------------------------------------------------------------------------------------------------------


def test_resume_is_exact(tmp_path):
    """2N steps straight == N steps, stop, resume N more: model, optimizer and EMA, with random sandwich draws,
    label dropout, model dropout and gradient accumulation all in play."""
    cfg = _config(sandwich_widths=3, gradient_accumulation_steps=2, label_dropout=0.3, checkpoint_every=100,
                  sample_images=0)
    cfg = dataclasses.replace(cfg, model=dict(cfg.model, dropout=0.1))
    assert SlimmableTrainer(cfg, tmp_path / "a", max_steps=4, progress=False).train().step == 4
    first = SlimmableTrainer(cfg, tmp_path / "b", max_steps=2, progress=False).train()
    assert first.step == 2 and (tmp_path / "b/checkpoints/step-00000002").is_dir()
    resumed = SlimmableTrainer(cfg, tmp_path / "b", max_steps=4, resume=True, progress=False)
    assert resumed.step == 2 and resumed.resumed_from.name == "step-00000002"
    result = resumed.train()
    assert result.step == 4 and result.steps_this_run == 2
    for name in ("model.safetensors",):
        a = load_file(tmp_path / "a/checkpoints/step-00000004" / name)
        b = load_file(tmp_path / "b/checkpoints/step-00000004" / name)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    ema_a = load_file(tmp_path / "a/model/diffusion_pytorch_model.safetensors")
    ema_b = load_file(tmp_path / "b/model/diffusion_pytorch_model.safetensors")
    for k in ema_a:
        torch.testing.assert_close(ema_a[k], ema_b[k], rtol=0, atol=1e-6)
    model_a = load_file(tmp_path / "a/checkpoints/step-00000004/model.safetensors")
    assert any(not torch.equal(model_a[k], ema_a[k]) for k in ema_a)  # the EMA really is another set of weights
    log_a, log_b = RunDirectory(tmp_path / "a").read_log(), RunDirectory(tmp_path / "b").read_log()
    assert [r["step"] for r in log_b] == [1, 2, 3, 4]
    for ra, rb in zip(log_a, log_b):
        assert {k: v for k, v in ra.items() if k != "it_per_s"} == {k: v for k, v in rb.items() if k != "it_per_s"}


def test_full_width_steps_train_the_largest_width_alone_then_the_sandwich(tmp_path):
    cfg = _config(max_steps=4, full_width_steps=2, sandwich_widths=3, gradient_accumulation_steps=2,
                  checkpoint_every=100, sample_images=0)
    trainer = SlimmableTrainer(cfg, tmp_path / "run", progress=False)
    assert "after 2 full-width steps" in trainer.describe()
    trainer.train()
    log = RunDirectory(tmp_path / "run").read_log()
    widths = [sorted(float(k.split("/")[1]) for k in r if k.startswith("loss/")) for r in log]
    assert widths[:2] == [[1.0], [1.0]]
    assert all(len(w) == 3 and w[0] == min(WIDTHS) and w[-1] == 1.0 for w in widths[2:])
    with pytest.raises(ConfigError, match="full_width_steps=-1"):
        _config(full_width_steps=-1)


def test_reorder_channels_runs_once_as_the_sandwich_starts_and_resumes_exactly(tmp_path, monkeypatch):
    import ddsm.training.trainer as trainer_module

    calls = []
    real = trainer_module.reorder_

    def spy(model, mirrors, optimizer):
        calls.append(trainer.step)
        return real(model, mirrors, optimizer)

    monkeypatch.setattr(trainer_module, "reorder_", spy)
    cfg = _config(max_steps=4, full_width_steps=2, sandwich_widths=3, reorder_channels=True, checkpoint_every=100,
                  sample_images=0)
    trainer = SlimmableTrainer(cfg, tmp_path / "a", progress=False)
    trainer.train()
    assert calls == [2]
    # stopped at the warm-up's end (before the reordering) and resumed: the same weights as straight through
    trainer = SlimmableTrainer(cfg, tmp_path / "b", max_steps=2, progress=False)
    trainer.train()
    trainer = SlimmableTrainer(cfg, tmp_path / "b", resume=True, progress=False)
    trainer.train()
    assert calls == [2, 2]
    a, b = (load_file(tmp_path / f"{r}/checkpoints/step-00000004/model.safetensors") for r in "ab")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    plain = SlimmableTrainer(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, reorder_channels=False)),
                             tmp_path / "c", progress=False)
    plain.train()
    c = load_file(tmp_path / "c/checkpoints/step-00000004/model.safetensors")
    assert calls == [2, 2] and any(not torch.equal(a[k], c[k]) for k in a)


def test_reorder_channels_never_runs_twice_nor_after_init_from_a_trained_supernet(tmp_path, monkeypatch, capsys):
    import ddsm.training.trainer as trainer_module

    calls = []
    real = trainer_module.reorder_
    monkeypatch.setattr(trainer_module, "reorder_", lambda *a: calls.append(1) or real(*a))
    raw = _raw(max_steps=3, full_width_steps=2, sandwich_widths=3, reorder_channels=True, checkpoint_every=100,
               sample_images=0)
    SlimmableTrainer(ExperimentConfig.from_dict(raw), tmp_path / "a", progress=False).train()
    assert calls == [1]
    # resumed with a later warm-up end (the train section may change on --resume): already reordered, not again
    raw["train"].update(full_width_steps=3, max_steps=5)
    SlimmableTrainer(ExperimentConfig.from_dict(raw), tmp_path / "a", resume=True, progress=False).train()
    assert calls == [1]

    # --init-from a multi-width supernet: its narrow widths are trained, so never reordered; from a dense one at
    # the sandwich's start (here step 0)
    raw["train"].update(full_width_steps=0, max_steps=1)
    config = ExperimentConfig.from_dict(raw)
    capsys.readouterr()
    SlimmableTrainer(config, tmp_path / "b", init_from=tmp_path / "a" / "model", progress=False).train()
    assert calls == [1]
    assert "reorder_channels: not sorting" in capsys.readouterr().out   # said, not silently skipped
    dense = SlimmableUNet(**dict(raw["model"], width_choices=[1.0]))
    dense.save_pretrained(tmp_path / "dense")
    SlimmableTrainer(config, tmp_path / "c", init_from=tmp_path / "dense", progress=False).train()
    assert calls == [1, 1]


def test_step_counter_reads_checkpoints_from_before_the_reorder_flag():
    from ddsm.training.run import StepCounter

    counter = StepCounter()
    counter.load_state_dict({"step": 7})
    assert (counter.step, counter.reordered) == (7, False)
    counter.reordered = True
    again = StepCounter()
    again.load_state_dict(counter.state_dict())
    assert (again.step, again.reordered) == (7, True)
    # an older checkpoint resumed after --init-from a trained supernet keeps the trainer's "never sort" flag
    fixed = StepCounter()
    fixed.reordered = True
    fixed.load_state_dict({"step": 3})
    assert (fixed.step, fixed.reordered) == (3, True)


def test_checkpoints_are_renamed_into_place_and_pruned(tmp_path):
    run = RunDirectory(tmp_path)
    assert run.latest_checkpoint() is None
    for step in (2, 4):
        run.checkpoint_path(step).mkdir(parents=True)
    (run.checkpoints / ".tmp-step-00000006").mkdir()  # a crash while writing step 6
    assert run.latest_checkpoint().name == "step-00000004"  # no pointer: the newest complete one
    (run.checkpoints / "latest").write_text("step-00000002\n")
    assert run.latest_checkpoint().name == "step-00000002"  # the pointer wins
    (run.checkpoints / "latest").write_text("step-00000009\n")  # pointing at nothing: fall back
    assert run.latest_checkpoint().name == "step-00000004"

    trainer = SlimmableTrainer(_config(checkpoint_every=1, keep_checkpoints=2, sample_images=0), tmp_path / "run",
                               max_steps=3, progress=False)
    (tmp_path / "run/checkpoints/.tmp-step-00000001").mkdir(parents=True)  # stale, from a crashed run
    trainer.train()
    names = sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir())
    assert names == ["latest", "step-00000002", "step-00000003"]
    assert (tmp_path / "run/checkpoints/latest").read_text().strip() == "step-00000003"
    with pytest.raises(FileExistsError, match="--resume"):  # never train over a run by accident
        SlimmableTrainer(_config(), tmp_path / "run", progress=False)


class _PoisonedDigits(torch.utils.data.Dataset):
    """The digits, with NaN images at the indices of micro-batch ``k`` of the training order (seed 0)."""

    def __init__(self, k: int, batch_size: int = 8):
        from ddsm.data import load_dataset

        self.base = load_dataset("digits", image_size=8, channels=1)
        self.num_classes = self.base.num_classes
        self.poisoned = set(ShardedBatchSampler(len(self.base), batch_size, seed=0).indices(k))

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        image, label = self.base[i]
        return (torch.full_like(image, float("nan")) if i in self.poisoned else image), label


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    import ddsm.training.trainer

    monkeypatch.setattr(ddsm.training.trainer, "dataset_for_training", lambda config, autoencoder=None: _PoisonedDigits(2))
    config = _write_config(tmp_path / "c.yaml", _raw(batch_size=8, max_steps=5, checkpoint_every=2, sample_images=0))
    out = tmp_path / "run"
    code = _script("train_slimmable").main(["--config", str(config), "--output-dir", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "step 3" in err and "not finite" in err and "step-00000002" in err and "--resume" in err
    assert (out / "checkpoints/latest").read_text().strip() == "step-00000002"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step-00000002"]
    assert not (out / "model").exists()
    weights = load_file(out / "checkpoints/step-00000002/model.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values())
    with pytest.raises(TrainingDiverged):  # and the library raises its own exception type
        SlimmableTrainer(_config(max_steps=3), tmp_path / "lib", dataset=_PoisonedDigits(0), progress=False).train()


# ----------------------------------------------------------------------------------------------------------------
# Several processes, dense start, latent diffusion
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_cpu_processes_train_and_save_once(tmp_path):
    config = _write_config(tmp_path / "c.yaml", _raw(batch_size=4, max_steps=3, checkpoint_every=2, sample_images=4))
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(ROOT / "train/train_slimmable.py"), "--config", str(config), "--output-dir", str(out), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("2 process(es) (MULTI_CPU") == 1  # both processes up; only the main one prints
    assert "batch 4 per process x 2 x 1 accumulation = 8" in proc.stdout
    assert [r["step"] for r in RunDirectory(out).read_log()] == [1, 2, 3]  # logged once, not once per process
    ckpt = out / "checkpoints/step-00000003"
    assert (ckpt / "random_states_0.pkl").is_file() and (ckpt / "random_states_1.pkl").is_file()
    assert not list((out / "checkpoints").glob(".tmp-*"))
    assert len(list((out / "samples").glob("*.png"))) == 4
    model = SlimmableUNet.from_pretrained(out / "model")
    assert model.width_choices == WIDTHS


def _dense_unet(path: Path):
    from diffusers import UNet2DModel

    torch.manual_seed(1)
    dense = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D",
                        "UpBlock2D"), norm_num_groups=4, attention_head_dim=4, num_class_embeds=10)
    with torch.no_grad():
        for p in dense.parameters():
            p.normal_(0, 0.1)
    dense.save_pretrained(path)
    return dense.eval()


def test_init_from_dense_reproduces_the_dense_model_at_full_width(tmp_path):
    dense = _dense_unet(tmp_path / "dense")
    raw = _raw(max_steps=1, sample_images=0)
    raw["model"] = dict(raw["model"], block_out_channels=[32, 32], width_choices=[0.5, 1.0])  # replaced by dense's
    trainer = SlimmableTrainer(ExperimentConfig.from_dict(raw), tmp_path / "run", init_from=tmp_path / "dense",
                               progress=False)
    g = torch.Generator().manual_seed(0)
    x, t, y = torch.randn(3, 1, 8, 8, generator=g), torch.tensor([1, 40, 99]), torch.tensor([0, 4, 9])
    with torch.no_grad():
        want = dense(x, t, class_labels=y).sample
        got = trainer.unwrapped.eval()(x, t, class_labels=y, width=1.0).sample
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    trainer.train()
    saved = load_config(tmp_path / "run/config.yaml").model  # the resolved config records the converted model
    assert saved["block_out_channels"] == [8, 16] and saved["width_choices"] == [0.5, 1.0]
    assert saved["attention_head_dim"] == 4 and saved["num_classes"] == 10
    assert SlimmableUNet.from_pretrained(tmp_path / "run/model").width_choices == (0.5, 1.0)
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        SlimmableTrainer(_config(), tmp_path / "other", init_from=tmp_path / "nothing", progress=False)


def test_init_from_a_dense_slimmable_unet_keeps_its_weights_and_takes_the_config_widths(tmp_path):
    """A dense model trained here (width_choices [1.0]) starts a supernet: same full-width outputs, new widths."""
    torch.manual_seed(2)
    raw = _raw(max_steps=1, sample_images=0)
    dense = SlimmableUNet(**dict(raw["model"], width_choices=[1.0])).eval()
    dense.save_pretrained(tmp_path / "dense")
    trainer = SlimmableTrainer(ExperimentConfig.from_dict(raw), tmp_path / "run", init_from=tmp_path / "dense",
                               progress=False)
    net = trainer.unwrapped.eval()
    assert net.width_choices == WIDTHS
    g = torch.Generator().manual_seed(0)
    x, t, y = torch.randn(2, 1, 8, 8, generator=g), torch.tensor([3, 70]), torch.tensor([1, 8])
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, class_labels=y, width=1.0).sample, dense(x, t, class_labels=y).sample)
        narrow = net(x, t, class_labels=y, width=min(WIDTHS)).sample
    assert narrow.shape == x.shape and not torch.allclose(narrow, dense(x, t, class_labels=y).sample)


def _latent_raw(tmp_path: Path) -> dict:
    raw = _raw(max_steps=2, checkpoint_every=2, sample_every=2, sample_images=4, sample_steps=2)
    raw["model"] = dict(raw["model"], sample_size=4, in_channels=2, out_channels=2, attention_resolutions=[2])
    raw["vae"] = dict(block_out_channels=[8, 8], latent_channels=2, layers_per_block=1, norm_num_groups=4,
                      batch_size=8, max_steps=3, checkpoint_every=3, log_every=1, scale_images=64)
    raw["autoencoder"] = str(tmp_path / "vae/autoencoder")
    return raw


def test_latent_run_trains_end_to_end(tmp_path):
    from diffusers import AutoencoderKL

    config = _write_config(tmp_path / "latent.yaml", _latent_raw(tmp_path))
    assert _script("train_autoencoder").main(["--config", str(config), "--no-progress"]) == 0  # default output
    vae = AutoencoderKL.from_pretrained(tmp_path / "vae/autoencoder")
    assert vae.config.latent_channels == 2 and vae.config.sample_size == 8
    assert vae.config.scaling_factor != 1.0 and vae.config.scaling_factor > 0
    assert (tmp_path / "vae/samples/recon-step-00000003.png").is_file()
    assert [r["step"] for r in RunDirectory(tmp_path / "vae").read_log()] == [1, 2, 3]

    out = tmp_path / "unet"
    assert _script("train_slimmable").main(["--config", str(config), "--output-dir", str(out), "--no-progress"]) == 0
    model = SlimmableUNet.from_pretrained(out / "model")
    assert (model.config.in_channels, model.config.sample_size) == (2, 4)
    assert AutoencoderKL.from_pretrained(out / "autoencoder").config.scaling_factor == vae.config.scaling_factor
    from PIL import Image

    with Image.open(out / "samples/step-00000002_w1.00.png") as grid:  # decoded: 8 px digits (x4), not latents
        assert grid.size == (4 * (2 + 2 * (8 + 2)),) * 2 and grid.mode == "L"  # 2x2 grid, scaled x4


def test_latent_shape_mismatch_is_a_clear_error(tmp_path, capsys):
    raw = _latent_raw(tmp_path)
    config = _write_config(tmp_path / "latent.yaml", raw)
    assert _script("train_autoencoder").main(["--config", str(config), "--max-steps", "1", "--no-progress"]) == 0
    raw["model"] = dict(raw["model"], in_channels=1, out_channels=1, sample_size=8)
    bad = _write_config(tmp_path / "bad.yaml", raw)
    assert _script("train_slimmable").main(["--config", str(bad), "--output-dir", str(tmp_path / "u")]) == 2
    err = capsys.readouterr().err
    assert "latents of shape (2, 4, 4)" in err and "in_channels=1 (latents need 2)" in err
    assert "sample_size=8 (latents need 4)" in err
    raw["autoencoder"] = str(tmp_path / "missing")
    assert _script("train_slimmable").main(["--config", str(_write_config(tmp_path / "m.yaml", raw))]) == 2
    assert "not an AutoencoderKL directory" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# The CLI
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", ["train_slimmable", "train_autoencoder"])
def test_cli_help(script):
    proc = subprocess.run([sys.executable, str(ROOT / "train" / f"{script}.py"), "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0
    for flag in ("--config", "--output-dir", "--resume", "--max-steps"):
        assert flag in proc.stdout
    if script == "train_slimmable":
        assert "--init-from" in proc.stdout and "--dry-run" in proc.stdout


def test_cli_rejects_bad_input(tmp_path, capsys):
    main = _script("train_slimmable").main
    assert main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    raw = _raw()
    raw["train"]["learning_rat"] = 0.1
    assert main(["--config", str(_write_config(tmp_path / "typo.yaml", raw))]) == 2
    assert "learning_rat" in capsys.readouterr().err
    raw = _raw(distill_only=True)
    assert main(["--config", str(_write_config(tmp_path / "d.yaml", raw))]) == 2
    assert "distill_weight" in capsys.readouterr().err
    assert main(["--config", str(_write_config(tmp_path / "ok.yaml", _raw())), "--max-steps", "0"]) == 2
    assert "--max-steps 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2


def test_cli_end_to_end_writes_the_run(tmp_path, capsys):
    config = _write_config(tmp_path / "tiny.yaml", _raw(max_steps=4, checkpoint_every=2, sample_every=2,
                                                          distill_weight=0.5))
    out = tmp_path / "run"
    main = _script("train_slimmable").main
    assert main(["--config", str(config), "--output-dir", str(out), "--dry-run"]) == 0
    assert "1 process(es)" in capsys.readouterr().out and not out.exists()
    assert main(["--config", str(config), "--output-dir", str(out), "--no-progress"]) == 0
    model = SlimmableUNet.from_pretrained(out / "model")
    assert model.config.num_classes == 10
    from diffusers import DDPMScheduler

    assert DDPMScheduler.from_pretrained(out / "scheduler").config.num_train_timesteps == 100
    resolved = load_config(out / "config.yaml")
    assert resolved.train.max_steps == 4 and resolved.train.distill_weight == 0.5
    assert resolved.model["norm_eps"] == 1e-6  # the model section is resolved too, defaults filled in
    assert config_sha256(resolved.model) == model.config_sha256  # so schedule fingerprints match the saved model
    log = RunDirectory(out).read_log()
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert {f"loss/{w}" for w in WIDTHS} | {"distill/0.25", "lr", "it_per_s"} <= set(log[-1])
    grids = sorted(p.name for p in (out / "samples").glob("*.png"))
    assert grids == [f"step-0000000{s}_w{w:.2f}.png" for s in (2, 4) for w in WIDTHS]
    # extend the finished run: --resume with a larger --max-steps
    assert main(["--config", str(config), "--output-dir", str(out), "--resume", "--max-steps", "5",
                 "--no-progress"]) == 0
    assert [r["step"] for r in RunDirectory(out).read_log()] == [1, 2, 3, 4, 5]
    assert load_config(out / "config.yaml").train.max_steps == 5
    changed = _raw(max_steps=6)
    changed["model"]["block_out_channels"] = [16, 16]
    code = main(["--config", str(_write_config(tmp_path / "changed.yaml", changed)), "--output-dir", str(out),
                 "--resume"])
    assert code == 2 and "model section differs" in capsys.readouterr().err


def test_train_cost_benchmark_reports_both_steps(tmp_path, capsys):
    import json

    spec = importlib.util.spec_from_file_location("train_cost", ROOT / "eval" / "train_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = _write_config(tmp_path / "tiny.yaml", _raw(sandwich_widths=3))
    assert module.main(["--config", str(path), "--batch", "4", "--rounds", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    # 3 widths: the full, the smallest and one of the two middle widths on average
    from ddsm.models import macs_table

    table = macs_table(_tiny_model())
    expected = table[1.0] + table[0.25] + (table[0.5] + table[0.75]) / 2
    assert out["macs_ratio"] == pytest.approx(expected / table[1.0])
    assert out["plain_seconds"] > 0 and out["sandwich_seconds"] > 0
    assert module.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    raw = _raw(sandwich_widths=3)
    dense = _write_config(tmp_path / "dense.yaml", dict(raw, model=dict(raw["model"], block_out_channels=[4, 8],
                                                                         norm_num_groups=2, width_choices=[1.0])))
    capsys.readouterr()
    assert module.main(["--config", str(path), "--batch", "4", "--rounds", "2", "--dense-config", str(dense)]) == 0
    out = json.loads(capsys.readouterr().out)
    tc = _config(sandwich_widths=3).train
    run = min(tc.full_width_steps, tc.max_steps) * out["plain_seconds"] + (tc.max_steps - tc.full_width_steps) * \
        out["sandwich_seconds"]
    assert out["dense_steps_same_wall_clock"] == round(run / out["dense_seconds"]) and out["dense_macs"] < table[1.0]
    other = _write_config(tmp_path / "other.yaml", dict(raw, model=dict(raw["model"], num_classes=None)))
    assert module.main(["--config", str(path), "--dense-config", str(other)]) == 2
    assert "data shape or conditioning differs" in capsys.readouterr().err
