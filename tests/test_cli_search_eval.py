"""search/evolve.py and eval/evaluate.py end to end on a tiny random model, in temp dirs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import halved_tiny_unet, tiny_unet_kwargs
from ddsm import Schedule, SlimmableUNet
from ddsm.config import ExperimentConfig

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--steps", "8", "--population", "4", "--generations", "2", "--num-samples", "4", "--final-samples", "8",
         "--top-k", "2"]


def _script(path):
    """Import a CLI script as a module, to call its main(argv) in-process (no interpreter start-up)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(path).stem + "_cli", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(args):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    model = halved_tiny_unet()
    root = tmp_path_factory.mktemp("run")
    model.save_pretrained(root / "model")
    ExperimentConfig.from_dict({"model": tiny_unet_kwargs()}).save(root / "experiment.yaml")  # defaults elsewhere
    return root


def _config(run_dir):
    """--config: the run folder has no config.yaml beside model/, and the CLIs never guess one."""
    return ["--config", str(run_dir / "experiment.yaml")]


def test_evolve_cli_writes_every_output(run_dir):
    out = run_dir / "search" / "schedule.json"
    res = _run(["search/evolve.py", "--model", str(run_dir / "model"), "--budget", "0.5", "--metric", "fidelity",
                "--output", str(out), *_config(run_dir), *SMALL])
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("schedule.json", "pareto.json", "pareto.png", "schedule.png", "log.csv", "checkpoint.json"):
        assert (out.parent / name).is_file(), name
    model = SlimmableUNet.from_pretrained(run_dir / "model")
    schedule = Schedule.load(out, model=model)  # fingerprint matches the model it was searched for
    assert len(schedule) == 8 and schedule.macs["ratio"] <= 0.5
    assert schedule.metrics["metric"] == "fidelity" and schedule.provenance["search"]["budget"] == 0.5
    pareto = json.loads((out.parent / "pareto.json").read_text())
    assert {b["kind"] for b in pareto["baselines"]} == {"uniform", "fewer_steps"}
    assert pareto["unet_forwards"] > 0

    # --resume of a finished search reproduces the same schedule
    res = _run(["search/evolve.py", "--model", str(run_dir / "model"), "--budget", "0.5", "--metric", "fidelity",
                "--output", str(out), "--resume", "--no-baselines", *_config(run_dir), *SMALL])
    assert res.returncode == 0, res.stderr[-3000:]
    assert Schedule.load(out).widths == schedule.widths


@pytest.mark.parametrize("args, message", [
    (["--budget", "0"], "out of range"),
    (["--budget", "1.5"], "out of range"),
    (["--budget", "0.01"], "below the cheapest"),
    (["--budget", "0.5", "--metric", "lpips"], "unknown"),
])
def test_evolve_cli_rejects_bad_arguments(run_dir, tmp_path, capsys, args, message):
    code = _script("search/evolve.py").main(["--model", str(run_dir / "model"), "--output",
                                              str(tmp_path / "s.json"), *_config(run_dir), *args, *SMALL])
    err = capsys.readouterr().err
    assert code != 0
    assert message in err, err[-2000:]
    assert not (tmp_path / "s.json").exists()


def test_evolve_cli_config_segments_are_an_upper_bound(run_dir, tmp_path, capsys):
    """configs/fashion.yaml's segments: 50 beside --steps 8: one gene per step; an explicit --segments 50 fails."""
    config = tmp_path / "experiment.yaml"
    ExperimentConfig.from_dict({"model": tiny_unet_kwargs(), "search": {"segments": 50}}).save(config)
    evolve = _script("search/evolve.py")
    out = tmp_path / "s.json"
    base = ["--model", str(run_dir / "model"), "--config", str(config), "--budget", "0.5", "--metric", "fidelity",
            "--no-baselines", *SMALL]
    assert evolve.main([*base, "--output", str(out)]) == 0, capsys.readouterr().err[-2000:]
    schedule = Schedule.load(out)
    assert len(schedule) == 8 and schedule.provenance["search"]["segments"] is None

    assert evolve.main([*base, "--output", str(tmp_path / "t.json"), "--segments", "50"]) != 0
    assert "segments=50: expected 1..num_steps (8)" in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()


def test_evaluate_cli_writes_both_reports(run_dir, tmp_path):
    model = SlimmableUNet.from_pretrained(run_dir / "model")
    from diffusers import DDIMScheduler

    schedule = Schedule.ramp(model, DDIMScheduler(), 0.25, 1.0, 0.5, num_inference_steps=6)
    schedule.save(tmp_path / "schedule.json")
    res = _run(["eval/evaluate.py", "--model", str(run_dir / "model"), "--schedule", str(tmp_path / "schedule.json"),
                "--num-samples", "8", "--no-inception", "--output-dir", str(tmp_path / "report"), *_config(run_dir)])
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["step_aware"]["macs_ratio"] == pytest.approx(schedule.with_macs(
        __import__("ddsm.models.macs", fromlist=["macs_table"]).macs_table(model)).macs["ratio"])
    assert report["metrics"]["domain_features"].startswith("mnist-5k-16px")
    assert 0 < report["fidelity"]["ssim"] < 1
    md = (tmp_path / "report" / "report.md").read_text()
    assert "domain FID" in md and "Speed-up" in md
    assert (tmp_path / "report" / "grid.png").is_file()


def test_real_fid_cli_domain_only(capsys):
    code = _script("eval/real_fid.py").main(["--dataset", "mnist-5k", "--num-samples", "200", "--no-inception"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["num_samples"] == [200, 200] and out["domain_features"].startswith("mnist-5k-16px")
    assert 0 < out["domain_fid"] < 100  # two real halves: small, far below real vs noise (thousands)
    assert _script("eval/real_fid.py").main(["--dataset", "nope"]) == 2
