"""make demo's code path (eval/demo.py -> ddsm.demo.run_demo), shortened: a tiny model on the 8x8 digits, a small
search, no Inception. Checks every file the demo promises, and that a second run reuses the finished stages."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _main(script: str):
    spec = importlib.util.spec_from_file_location(script + "_script", ROOT / "eval" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture
def demo_main(fast_domain_features):
    return _main("demo")


def _config(path: Path) -> Path:
    raw = {
        "name": "tiny-demo",
        "model": dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=[8, 16], layers_per_block=1,
                      attention_resolutions=[4], attention_head_dim=4, norm_num_groups=4, num_classes=10,
                      width_choices=[0.25, 0.5, 1.0], channel_divisor=2),
        "data": {"name": "digits"},
        "diffusion": {"num_train_timesteps": 100},
        "train": dict(batch_size=8, max_steps=6, full_width_steps=2, sandwich_widths=3, warmup_steps=1,
                      checkpoint_every=3, sample_every=3, sample_images=10, sample_steps=3, log_every=1),
        "sampling": {"num_inference_steps": 6, "batch_size": 16},
        "search": dict(budget=0.5, metric="fidelity", allow_skip=True, population=4, generations=1,
                       num_samples=4, final_samples=6, top_k=1),
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def test_shortened_demo_writes_every_promised_file_and_reuses_finished_stages(tmp_path, demo_main, capsys,
                                                                               one_thread):
    config, out = _config(tmp_path / "demo.yaml"), tmp_path / "demo"
    args = ["--config", str(config), "--output-dir", str(out), "--eval-samples", "8", "--no-inception",
            "--no-progress", "--frontier-steps", "3", "6", "--frontier-budgets", "0.5", "--frontier-samples", "6"]
    assert demo_main(args) == 0
    for name in ("report.md", "report.json", "grid.png", "pareto.png", "schedule.png", "timings.json",
                 "search/schedule.json", "train/model/config.json", "frontier/frontier.json", "frontier_steps3.png",
                 "frontier_steps6.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert sorted(p.name for p in (out / "train/samples").glob("*.png"))[-1] == "step-00000006_w1.00.png"
    report = json.loads((out / "report.json").read_text())
    assert report["evaluation"]["step_aware"]["macs_ratio"] <= 0.5
    md = (out / "report.md").read_text()
    assert "full width" in md and "step-aware" in md and "grid.png" in md
    assert "## Frontier at the demo's size" in md and "domain FID at N = 6" in md and "DDSM widths only" in md
    assert "](frontier/steps6/benchmark.md)" in md                              # links point into frontier/
    assert "Full model, 6 steps: FID" in md and "(the budgets' reference)" in md
    assert all(line.count("Full model, 6 steps") <= 1 for line in md.splitlines())  # said once, not twice
    first = capsys.readouterr().out
    assert "done before, reused" not in first

    schedule_before = (out / "search/schedule.json").read_text()
    assert demo_main(args) == 0
    second = capsys.readouterr().out
    assert second.count("done before, reused") == 4                          # train, search, evaluate, frontier
    assert (out / "search/schedule.json").read_text() == schedule_before
    assert json.loads((out / "timings.json").read_text())["train"] > 0      # first run's stage times kept


def test_widths_cli_scores_every_width_against_the_full_one(tmp_path, fast_domain_features, capsys, one_thread):
    from ddsm.config import load_config

    config = _config(tmp_path / "demo.yaml")
    torch.manual_seed(0)
    load_config(config).build_model().save_pretrained(tmp_path / "run/model")
    main = _main("widths")
    out = tmp_path / "widths.json"
    args = ["--model", str(tmp_path / "run/model"), "--config", str(config), "--num-samples", "6", "--no-progress"]
    assert main(args + ["--fewer-steps", "3", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["label"] for r in rows] == ["width 1", "width 0.5", "width 0.25", "width 1, 3 steps"]
    assert rows[0]["ssim"] == pytest.approx(1.0) and all(r["ssim"] < 1 for r in rows[1:])
    assert rows[0]["macs_ratio"] == 1 and rows[-1]["macs_ratio"] == pytest.approx(0.5)
    assert rows[1]["macs_ratio"] < 1 and all(r["domain_fid"] > 0 for r in rows)
    assert "| width 0.25" in capsys.readouterr().out
    assert main(args + ["--fewer-steps", "6"]) == 2                             # not fewer than the 6 steps
    assert "expected step counts in 1..5" in capsys.readouterr().err


def test_widths_cli_puts_separately_trained_dense_models_beside_the_widths(tmp_path, fast_domain_features, capsys,
                                                                           one_thread):
    from ddsm.config import load_config

    config = _config(tmp_path / "demo.yaml")
    raw = yaml.safe_load(config.read_text())
    torch.manual_seed(0)
    load_config(config).build_model().save_pretrained(tmp_path / "run/model")
    small = dict(raw["model"], block_out_channels=[4, 8], norm_num_groups=2, width_choices=[1.0])
    load_config(config).__class__.from_dict(dict(raw, model=small)).build_model().save_pretrained(tmp_path / "d")
    other = dict(small, num_classes=None)
    load_config(config).__class__.from_dict(dict(raw, model=other)).build_model().save_pretrained(tmp_path / "u")
    main = _main("widths")
    out = tmp_path / "widths.json"
    args = ["--model", str(tmp_path / "run/model"), "--config", str(config), "--num-samples", "6", "--no-progress",
            "--fewer-steps", "3"]
    assert main(args + ["--dense", f"0.5={tmp_path / 'd'}", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    dense = rows[-1]
    assert dense["label"] == "dense 0.5 shape (separate)" and dense["width"] == 0.5 and dense["steps"] == 6
    assert 0 < dense["macs_ratio"] < 1 and dense["domain_fid"] > 0 and dense["ssim"] < 1
    assert "| dense 0.5 shape (separate)" in capsys.readouterr().out
    for bad in ("0.5", "half=x"):                                              # argparse: exit 2
        with pytest.raises(SystemExit, match="2"):
            main(args + ["--dense", bad])
        assert "expected WIDTH=DIR" in capsys.readouterr().err
    for bad, why in [(f"0.75={tmp_path / 'd'}", "0.75 is not one of the supernet's widths"),
                     (f"0.5={tmp_path / 'u'}", "num_classes=None, the supernet's is 10")]:
        assert main(args + ["--dense", bad]) == 2
        assert why in capsys.readouterr().err
