"""Devices, dtypes and processes: every entry point runs its networks on the accelerator's device (CUDA when there is
one), follows the model's dtype with nothing cast on the way, and keeps the metrics in float32."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler

from conftest import halved_tiny_unet, load_script as _script, tiny_unet_kwargs
from ddsm import Schedule, SkipPolicy, SlimmableUNet, sample
from ddsm.config import ExperimentConfig
from ddsm.evaluation import FeatureSpace, evaluate_schedule
from ddsm.runtime import make_accelerator, model_device, runtime_record

ROOT = Path(__file__).resolve().parents[1]
CLIS = {"eval/sample.py": [], "eval/evaluate.py": ["--schedule", "s.json"], "search/evolve.py": [],
        "eval/benchmark.py": [], "eval/widths.py": [], "eval/proxy_check.py": [], "eval/frontier.py": []}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fresh_accelerate():
    """accelerate keeps one state per process (its mixed precision cannot change): start and leave it empty."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


class _Built(Exception):
    """Raised by the stand-in Accelerator: the command stops right after choosing its device."""


@pytest.fixture
def accelerator_calls(monkeypatch):
    """``accelerate.Accelerator`` replaced by a recorder of its keyword arguments that stops the command."""
    import accelerate

    calls = []

    def record(**kwargs):
        calls.append(kwargs)
        raise _Built()

    monkeypatch.setattr(accelerate, "Accelerator", record)
    return calls


@pytest.fixture
def feature_devices(monkeypatch, fast_domain_features):
    """The ``device`` every FeatureSpace is built with (the fast random feature network stands in for the
    classifier)."""
    seen = []
    original = FeatureSpace.__post_init__

    def spy(self):
        seen.append(self.device)
        original(self)

    monkeypatch.setattr(FeatureSpace, "__post_init__", spy)
    return seen


def _unet(**kw):
    """A tiny random UNet with its weights halved (no exploding samples)."""
    return halved_tiny_unet(**kw)


def _float64_unet(**kw):
    return _unet(**kw).double()


def _forward_inputs(model):
    """(dtype, device) of the input of every forward of ``model``."""
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append((args[0].dtype, args[0].device)))
    return seen


# ---------------------------------------------------------------------------------------------- the accelerator


@pytest.mark.parametrize("cuda", [True, False])
def test_make_accelerator_forces_the_cpu_only_without_cuda(monkeypatch, accelerator_calls, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    with pytest.raises(_Built):
        make_accelerator("bf16", gradient_accumulation_steps=2)
    assert accelerator_calls == [dict(mixed_precision="bf16", cpu=not cuda, gradient_accumulation_steps=2)]


@pytest.mark.parametrize("path", sorted(CLIS))
@pytest.mark.parametrize("flag", [[], ["--mixed-precision", "bf16"]])
def test_clis_build_a_cuda_accelerator_when_cuda_is_available(monkeypatch, accelerator_calls, tmp_path, path, flag):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(_Built):
        _script(path).main(["--model", str(tmp_path / "model"), *CLIS[path], *flag])
    assert accelerator_calls == [dict(mixed_precision=flag[1] if flag else None, cpu=False)]


def test_training_builds_its_accelerator_the_same_way(monkeypatch, accelerator_calls):
    from ddsm.training import make_accelerator as training_accelerator

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(_Built):
        training_accelerator(4)
    assert accelerator_calls == [dict(mixed_precision=None, cpu=False, gradient_accumulation_steps=4)]


def test_fp16_without_cuda_is_one_clear_error(fresh_accelerate, tmp_path, capsys):
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        make_accelerator("fp16")
    with pytest.raises(ValueError, match="expected one of"):
        make_accelerator("fp8")
    code = _script("eval/sample.py").main(["--model", str(tmp_path / "model"), "--mixed-precision", "fp16"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "fp16 needs a CUDA GPU" in err and len(err.splitlines()) == 1


def test_model_device_and_runtime_record():
    net = torch.nn.Linear(2, 2).to("meta")
    assert model_device(net) == torch.device("meta")
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")
    assert runtime_record(net) == dict(device="meta", mixed_precision="no", num_processes=1)


# ------------------------------------------------------------------------ dtypes: float64 in, float64 out


def test_sample_follows_a_float64_model_end_to_end():
    model = _float64_unet()
    inputs = _forward_inputs(model)
    out = sample(model, DDPMScheduler(), [1.0, 0.5, 0, 0.25, 1.0], seeds=range(3), class_labels=[0, 1, 2],
                 guidance_scale=2.0, skip_policy=SkipPolicy(delta=0.5), batch_size=2, progress=False)
    assert out.images.dtype == torch.float64 and torch.isfinite(out.images).all()
    assert inputs and set(inputs) == {(torch.float64, torch.device("cpu"))}


def test_latent_sampling_follows_a_float64_model_and_autoencoder():
    vae = AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=2,
                        norm_num_groups=4, sample_size=16).double().eval()
    unet = _float64_unet(sample_size=8, in_channels=2, out_channels=2, attention_resolutions=(4,))
    out = sample(unet, DDIMScheduler(), [1.0, 0.5, 0.25], seeds=[0, 1], autoencoder=vae, progress=False)
    assert out.images.shape == (2, 1, 16, 16) and out.images.dtype == torch.float64


def test_evaluate_search_and_benchmark_follow_a_float64_model(tmp_path, feature_devices):
    from ddsm.benchmark import BenchmarkJob, run_benchmark
    from ddsm.search import SearchJob, run_search

    model = _float64_unet()
    inputs = _forward_inputs(model)
    schedule = Schedule.from_widths(model, DDIMScheduler(), [1.0, 0.5, 0.25, 0.5], num_inference_steps=4)
    report, full, ours = evaluate_schedule(model, schedule, num_samples=3, dataset="mnist-5k", inception=False,
                                           progress=False)
    assert full.dtype == ours.dtype == torch.float64
    assert np.isfinite(report["metrics"]["domain_fid_step_aware"]) and report["device"] == "cpu"

    job = SearchJob(output=str(tmp_path / "search" / "schedule.json"), budget=0.7, metric="teacher_fid",
                    num_steps=4, population=4, generations=1, num_samples=3, final_samples=3, top_k=1,
                    baselines=False)
    summary = run_search(model, job, {}, progress=False)
    assert np.isfinite(summary["best"]["quality"])

    job = BenchmarkJob(budgets=(0.6,), num_samples=3, num_steps=4, calibration_samples=2, stepsaver_samples=1,
                       stepsaver_candidates=(2, 4), stepsaver_reference_steps=4, inception=False,
                       bisection_iterations=2)
    small = _float64_unet(block_out_channels=(8, 16, 16), width_choices=(1.0,))
    bench, _ = run_benchmark(model, job, schedules=[("s.json", schedule)], small_dense=small, progress=False)
    rows = bench["budgets"][0]["methods"]
    assert all(np.isfinite(r["ssim"]) for r in rows if r["status"] == "ok")
    assert {r["method"] for r in rows if r["status"] == "ok"} >= {"uniform", "tstitch_dense", "stepsaver", "ddsm"}
    assert set(inputs) == {(torch.float64, torch.device("cpu"))}
    assert feature_devices and set(feature_devices) == {torch.device("cpu")}  # the model's device, never None


def test_feature_networks_stay_float32_on_float64_images(fast_domain_features):
    space = FeatureSpace.domain("mnist-5k", 16, 1, device=torch.device("cpu"))
    feats = space.features(torch.rand(3, 1, 16, 16, dtype=torch.float64) * 2 - 1)
    assert feats.dtype == np.float32 and next(space.net.parameters()).dtype == torch.float32


# -------------------------------------------------------------------------------------- mixed precision


def test_bf16_autocast_runs_the_unet_in_bf16_and_keeps_macs_and_dtype(fresh_accelerate, tiny_unet):
    accelerator = make_accelerator("bf16")
    dtypes = []
    tiny_unet.register_forward_hook(lambda module, args, out: dtypes.append(out.sample.dtype))
    kw = dict(seeds=range(3), class_labels=[0, 1, 2], guidance_scale=1.5, progress=False)
    fp32 = sample(tiny_unet, DDIMScheduler(), [1.0, 0.5, 0.25, 1.0], **kw)
    assert set(dtypes) == {torch.float32}
    dtypes.clear()
    bf16 = sample(tiny_unet, DDIMScheduler(), [1.0, 0.5, 0.25, 1.0], accelerator=accelerator, **kw)
    assert set(dtypes) == {torch.bfloat16}
    assert bf16.images.dtype == torch.float32 and bf16.macs_per_image == fp32.macs_per_image
    assert (bf16.images - fp32.images).abs().max() < 0.5  # the same images, at bf16 precision
    assert runtime_record(tiny_unet, accelerator)["mixed_precision"] == "bf16"


# ------------------------------------------------------------------------------------ the CLIs' devices


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime-run")
    _unet().save_pretrained(root / "model")
    ExperimentConfig.from_dict({"model": tiny_unet_kwargs()}).save(root / "config.yaml")
    return root


def test_sample_and_evaluate_clis_load_every_network_on_the_accelerator_device(run_dir, tmp_path, monkeypatch,
                                                                               feature_devices):
    import ddsm.cli

    loaded = []
    for name in ("load_model", "load_autoencoder"):
        original = getattr(ddsm.cli, name)
        monkeypatch.setattr(ddsm.cli, name, lambda *a, _f=original, _n=name, **kw: loaded.append(
            (_n, kw.get("device"))) or _f(*a, **kw))
    model = str(run_dir / "model")
    assert _script("eval/sample.py").main(["--model", model, "--num-samples", "2", "--steps", "3", "--width", "0.5",
                                           "--output-dir", str(tmp_path / "s")]) == 0
    summary = json.loads((tmp_path / "s" / "sample.json").read_text())
    assert summary["device"] == "cpu" and summary["num_processes"] == 1
    Schedule.from_widths(SlimmableUNet.from_pretrained(model), DDIMScheduler(), [1.0, 0.25, 0.5],
                         num_inference_steps=3).save(tmp_path / "s.json")
    assert _script("eval/evaluate.py").main(["--model", model, "--schedule", str(tmp_path / "s.json"),
                                             "--num-samples", "2", "--no-inception",
                                             "--output-dir", str(tmp_path / "e")]) == 0
    assert json.loads((tmp_path / "e" / "report.json").read_text())["device"] == "cpu"
    cpu = torch.device("cpu")
    assert loaded == [("load_model", cpu), ("load_autoencoder", cpu), ("load_model", cpu), ("load_autoencoder", cpu)]
    assert feature_devices == [cpu]


@pytest.mark.slow
def test_sample_cli_in_two_processes_gives_the_single_process_images(run_dir, tmp_path):
    args = ["--model", str(run_dir / "model"), "--num-samples", "5", "--steps", "4", "--batch-size", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    two = subprocess.run([*launch, str(ROOT / "eval/sample.py"), *args, "--output-dir", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert _script("eval/sample.py").main([*args, "--output-dir", str(tmp_path / "one")]) == 0
    assert json.loads((tmp_path / "two" / "sample.json").read_text())["num_processes"] == 2
    one, both = (np.load(tmp_path / d / "samples.npz") for d in ("one", "two"))
    assert list(both["seeds"]) == list(one["seeds"]) == list(range(5))
    np.testing.assert_allclose(both["images"], one["images"], rtol=0, atol=1e-5)
