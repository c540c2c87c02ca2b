"""The step-aware sampler: equality with diffusers pipelines and static sub-networks, seeds independent of batch
size and process count, skipping, guidance, latent sampling, MACs accounting, the pipeline and the CLI."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (AutoencoderKL, DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler,
                       DPMSolverMultistepScheduler, EulerDiscreteScheduler, UNet2DModel)

from conftest import tiny_unet_kwargs
from ddsm import DDSMPipeline, Schedule, ScheduleError, SkipPolicy, SlimmableUNet, sample
from ddsm.models import macs_table

ROOT = Path(__file__).resolve().parents[1]
STEPS = 12


def _small(model):
    """Scale weights down so random-weight sampling stays numerically tame."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.25)
    return model.eval()


@pytest.fixture
def model(tiny_unet):
    return _small(tiny_unet)


@pytest.fixture
def dense():
    torch.manual_seed(3)
    unet = UNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(16, 32, 32),
                       layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
                       attention_head_dim=8, flip_sin_to_cos=False, freq_shift=1, downsample_padding=0)
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0, 0.05)
    return unet.eval()


@pytest.mark.parametrize("scheduler_cls, pipeline_cls", [(DDIMScheduler, DDIMPipeline), (DDPMScheduler, DDPMPipeline)])
def test_full_width_equals_diffusers_pipeline(dense, scheduler_cls, pipeline_cls):
    supernet = SlimmableUNet.from_dense(dense, channel_divisor=4).eval()
    pipe = pipeline_cls(unet=dense, scheduler=scheduler_cls())
    pipe.set_progress_bar_config(disable=True)
    seeds = [5, 6, 7]
    ref = pipe(batch_size=3, generator=[torch.Generator().manual_seed(s) for s in seeds],
               num_inference_steps=STEPS, output_type="np").images
    ours = sample(supernet, scheduler_cls(), 1.0, seeds=seeds, num_inference_steps=STEPS, batch_size=2,
                  progress=False).images
    ours = ((ours / 2 + 0.5).clamp(0, 1)).permute(0, 2, 3, 1).numpy()
    assert np.abs(ref - ours).max() < 1e-4


@pytest.mark.parametrize("width", [0.25, 0.75])
def test_uniform_width_equals_static_subnet(model, width):
    sub = model.subnet(width).eval()
    seeds, labels = [0, 1], [3, 4]
    scheduler = DDIMScheduler()
    scheduler.set_timesteps(STEPS)
    x = torch.cat([torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(s)) for s in seeds])
    y = torch.tensor(labels)
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(sub(x, t, y), t, x).prev_sample
    out = sample(model, DDIMScheduler(), width, seeds=seeds, class_labels=labels, num_inference_steps=STEPS,
                 progress=False)
    torch.testing.assert_close(out.images, x.clamp(-1, 1), rtol=0, atol=1e-5)


@pytest.mark.parametrize("scheduler_cls", [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler,
                                           EulerDiscreteScheduler])
def test_images_do_not_depend_on_batch_size(model, scheduler_cls):
    widths = [1.0, 0.5, 0.0, 0.25] * (STEPS // 4)
    kw = dict(seeds=range(10, 15), class_labels=[0, 1, 2, 3, 4], progress=False,
              skip_policy=SkipPolicy(delta=0.5, max_consecutive=2))
    a = sample(model, scheduler_cls(), widths, batch_size=5, **kw)
    b = sample(model, scheduler_cls(), widths, batch_size=2, **kw)
    c = sample(model, scheduler_cls(), widths, batch_size=1, **kw)
    assert torch.isfinite(a.images).all()
    torch.testing.assert_close(a.images, b.images, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.images, c.images, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(a.computed, c.computed)
    # different seeds give different images
    assert (a.images[0] - a.images[1]).abs().max() > 1e-3


def test_skip_width_reuses_previous_prediction_and_steps_scheduler(model):
    widths = [1.0, 0.0, 0.5, 0.0, 0.0, 1.0]
    scheduler = DDIMScheduler()
    scheduler.set_timesteps(len(widths))
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([2])
    with torch.no_grad():
        eps = None
        for t, w in zip(scheduler.timesteps, widths):
            if w:
                eps = model(x, t, class_labels=y, width=w).sample
            x = scheduler.step(eps, t, x).prev_sample
    out = sample(model, DDIMScheduler(), widths, seeds=[0], class_labels=[2], progress=False)
    torch.testing.assert_close(out.images, x.clamp(-1, 1), rtol=0, atol=1e-6)
    assert out.computed.tolist() == [[True, False, True, False, False, True]]
    table = macs_table(model)
    assert out.macs_per_image == table[1.0] * 2 + table[0.5]
    assert out.full_macs_per_image == table[1.0] * 6


def test_skip_policy_never_skips_first_steps_and_respects_c_max(model):
    policy = SkipPolicy(delta=1e9, max_consecutive=2, min_computed=3)  # criterion always true
    out = sample(model, DDIMScheduler(), 1.0, seeds=[0, 1], num_inference_steps=12, skip_policy=policy,
                 progress=False)
    expected = [True, True, True, False, False, True, False, False, True, False, False, True]
    assert out.computed.tolist() == [expected, expected]
    none = sample(model, DDIMScheduler(), 1.0, seeds=[0, 1], num_inference_steps=12,
                  skip_policy=SkipPolicy(delta=0.0), progress=False)
    assert none.computed.all()
    assert out.macs_per_image == pytest.approx(none.macs_per_image * 6 / 12)


def test_skip_policy_criterion_matches_definition(model):
    """Replay the AdaptiveDiffusion rule by hand on one sample and compare the decisions."""
    delta, c_max = 0.05, 3
    out = sample(model, DDIMScheduler(), 1.0, seeds=[4], num_inference_steps=20,
                 skip_policy=SkipPolicy(delta=delta, max_consecutive=c_max), progress=False)
    scheduler = DDIMScheduler()
    scheduler.set_timesteps(20)
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    deltas, decisions, eps, run_next, consecutive = [], [], None, True, 0
    with torch.no_grad():
        for k, t in enumerate(scheduler.timesteps):
            run = run_next or k == 0
            decisions.append(run)
            if run:
                eps = model(x, t, width=1.0).sample
            consecutive = 0 if run else consecutive + 1
            x_next = scheduler.step(eps, t, x).prev_sample
            deltas.append((x_next - x).abs().mean().item())
            x = x_next
            run_next = True
            if k + 1 >= 3:
                d0, d1, d2 = deltas[-3:]
                if abs(d2 - 2 * d1 + d0) <= 2 * delta * d1 and consecutive < c_max:
                    run_next = False
    assert out.computed[0].tolist() == decisions
    assert not all(decisions), "the test should exercise at least one skip"


def test_classifier_free_guidance_is_batched_correctly(model):
    scale = 3.0
    scheduler = DDIMScheduler()
    scheduler.set_timesteps(6)
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    y, null = torch.tensor([7]), torch.tensor([10])
    with torch.no_grad():
        for t in scheduler.timesteps:
            cond = model(x, t, class_labels=y, width=0.5).sample
            uncond = model(x, t, class_labels=null, width=0.5).sample
            x = scheduler.step(uncond + scale * (cond - uncond), t, x).prev_sample
    out = sample(model, DDIMScheduler(), 0.5, seeds=[1], class_labels=[7], guidance_scale=scale,
                 num_inference_steps=6, progress=False)
    torch.testing.assert_close(out.images, x.clamp(-1, 1), rtol=0, atol=1e-5)
    assert out.macs_per_image == 2 * 6 * macs_table(model)[0.5]


def test_schedule_object_runs_and_mismatches_raise(model):
    scheduler = DDIMScheduler()
    sched = Schedule.ramp(model, scheduler, 0.25, 1.0, 0.5, num_inference_steps=10)
    out = sample(model, DDIMScheduler(), sched, seeds=[0], progress=False)
    assert out.widths == [0.25] * 5 + [1.0] * 5
    table = macs_table(model)
    assert out.macs_per_image == pytest.approx(5 * table[0.25] + 5 * table[1.0])
    assert out.macs_per_image == pytest.approx(sched.with_macs(table).macs["total"])
    with pytest.raises(ScheduleError, match="first step cannot be skipped"):
        sample(model, DDIMScheduler(), [0.0, 1.0], seeds=[0], progress=False)
    with pytest.raises(ScheduleError, match=r"not in the model's width_choices"):
        sample(model, DDIMScheduler(), [1.0, 0.3], seeds=[0], progress=False)
    with pytest.raises(ValueError, match="class labels must lie"):
        sample(model, DDIMScheduler(), 1.0, seeds=[0], class_labels=[11], progress=False)


def test_official_ddsm_schedule_imports_and_samples(model):
    official = [1.0 if t < 266 else (0.75 if t < 600 else 0.5) for t in range(1000)]
    scheduler = DDIMScheduler()
    sched = Schedule.import_ddsm_official(json.dumps(official), model, scheduler, num_inference_steps=50)
    assert len(sched) == 50 and sched.widths[0] == 0.5 and sched.widths[-1] == 1.0
    out = sample(model, DDIMScheduler(), sched, seeds=[0], progress=False)
    assert out.widths == list(sched.widths)


def test_latent_sampling_end_to_end(tmp_path):
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=2,
                        norm_num_groups=4, sample_size=16).eval()
    unet = _small(SlimmableUNet(**tiny_unet_kwargs(sample_size=8, in_channels=2, out_channels=2,
                                                   attention_resolutions=(4,))))
    out = sample(unet, DDIMScheduler(), [1.0, 0.5, 0.25], seeds=[0, 1], autoencoder=vae, progress=False)
    assert out.images.shape == (2, 1, 16, 16)
    assert out.decode_macs_per_image > 0 and out.macs_per_image > 0


def test_pipeline_round_trip(model, tmp_path):
    scheduler = DDIMScheduler()
    sched = Schedule.ramp(model, scheduler, 0.5, 1.0, 0.4, num_inference_steps=10)
    pipe = DDSMPipeline(unet=model, scheduler=scheduler, schedule=sched)
    pipe.save_pretrained(tmp_path / "pipe")
    assert (tmp_path / "pipe" / "schedule.json").is_file()

    loaded = DDSMPipeline.from_pretrained(tmp_path / "pipe")
    assert loaded.schedule == sched
    images = loaded(seeds=[0, 1], class_labels=[1, 2], output_type="pt", progress=False).images
    direct = sample(model, DDIMScheduler(), sched, seeds=[0, 1], class_labels=[1, 2], progress=False).images
    torch.testing.assert_close(images, direct, rtol=0, atol=1e-6)
    pil = loaded(num_images=2, progress=False).images
    assert len(pil) == 2 and pil[0].size == (16, 16)


def _run(args, **kw):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, **kw)


def test_sample_cli_end_to_end(model, tmp_path):
    model.save_pretrained(tmp_path / "run" / "model")
    sched = Schedule.uniform(model, DDIMScheduler(), 0.5, num_inference_steps=8)
    sched.save(tmp_path / "s.json")
    res = _run(["eval/sample.py", "--model", str(tmp_path / "run" / "model"), "--schedule", str(tmp_path / "s.json"),
                "--num-samples", "4", "--output-dir", str(tmp_path / "out")])
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "out" / "sample.json").read_text())
    assert report["macs_ratio"] == pytest.approx(macs_table(model)[0.5] / macs_table(model)[1.0])
    assert (tmp_path / "out" / "grid.png").is_file()
    assert np.load(tmp_path / "out" / "samples.npz")["images"].shape == (4, 1, 16, 16)

    bad = _run(["eval/sample.py", "--model", str(tmp_path / "run" / "model"), "--schedule",
                str(tmp_path / "missing.json")])
    assert bad.returncode != 0 and "missing.json" in bad.stderr
    bad = _run(["eval/sample.py", "--model", str(tmp_path / "nowhere")])
    assert bad.returncode != 0 and "not a SlimmableUNet directory" in bad.stderr


MP_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, torch
    from accelerate import Accelerator
    from diffusers import DDPMScheduler
    from ddsm import SlimmableUNet, sample
    acc = Accelerator(cpu=True)
    model = SlimmableUNet.from_pretrained(sys.argv[1]).eval()
    out = sample(model, DDPMScheduler(), [1.0, 0.5, 0.25, 0.5] * 2, seeds=range(7), class_labels=list(range(7)),
                 batch_size=2, accelerator=acc, progress=False)
    if acc.is_main_process:
        np.save(sys.argv[2], out.images.numpy())
        print("world", acc.num_processes)
""")


def test_two_processes_give_the_single_process_images(model, tmp_path):
    model.save_pretrained(tmp_path / "model")
    script = tmp_path / "mp.py"
    script.write_text(MP_SCRIPT)
    res = _run(["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", str(script), str(tmp_path / "model"),
                str(tmp_path / "mp.npy")], timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "world 2" in res.stdout
    single = sample(model, DDPMScheduler(), [1.0, 0.5, 0.25, 0.5] * 2, seeds=range(7), class_labels=list(range(7)),
                    batch_size=7, progress=False)
    np.testing.assert_allclose(np.load(tmp_path / "mp.npy"), single.images.numpy(), rtol=0, atol=1e-5)


def test_scheduler_table_cli(model, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("scheduler_table", ROOT / "eval" / "scheduler_table.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    model.save_pretrained(tmp_path / "model")
    Schedule.ramp(model, DDIMScheduler(), 0.25, 1.0, 0.5, num_inference_steps=6).save(tmp_path / "s.json")
    assert cli.main(["--model", str(tmp_path / "model"), "--schedule", str(tmp_path / "s.json"), "--num-samples", "2",
                     "--schedulers", "DDIMScheduler", "EulerDiscreteScheduler", "--output",
                     str(tmp_path / "t.json")]) == 0
    rows = json.loads((tmp_path / "t.json").read_text())
    assert [r["plan"] for r in rows] == ["full width", "schedule"] * 2
    table = macs_table(model)
    assert rows[1]["macs_ratio"] == pytest.approx((3 * table[0.25] + 3 * table[1.0]) / (6 * table[1.0]))
    assert "| DDIMScheduler |" in capsys.readouterr().out
    assert cli.main(["--model", str(tmp_path / "model"), "--schedule", str(tmp_path / "none.json")]) == 2
