"""eval/benchmark.py and ddsm.benchmark: budget selections, delta bisection, stitching, the end-to-end run."""

import json
import math
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler

from conftest import halved_tiny_unet, tiny_unet_kwargs
from ddsm import Schedule
from ddsm.config import ExperimentConfig
from ddsm.benchmark import (BenchmarkError, BenchmarkJob, BenchmarkSampler, StitchedUNet, budget_status,
                            fewer_steps_for_budget, ramp_for_budget, tune_skip_delta, uniform_width_for_budget)
from ddsm.models import macs_table
from ddsm.sampling import sample

ROOT = Path(__file__).resolve().parents[1]
STEPS = 8


pytestmark = pytest.mark.usefixtures("one_thread")


def _script(path):
    """Import a CLI script as a module, to call its main(argv) in-process (no interpreter start-up)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(path).stem + "_cli", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_model = halved_tiny_unet


# --------------------------------------------------------------------------------------------------------- selections


def test_selections_fit_the_budget_and_are_the_largest_that_do():
    table = {0.25: 10.0, 0.5: 30.0, 0.75: 60.0, 1.0: 100.0}
    assert uniform_width_for_budget(table, 0.7) == 0.75
    assert uniform_width_for_budget(table, 0.6) == 0.75  # exactly at the budget counts as within
    assert uniform_width_for_budget(table, 0.59) == 0.5
    assert uniform_width_for_budget(table, 0.05) is None
    assert fewer_steps_for_budget(50, 0.3) == 15 and fewer_steps_for_budget(50, 0.29) == 14
    assert fewer_steps_for_budget(8, 0.1) == 0
    for budget in (0.3, 0.5, 0.7, 1.0):
        n = ramp_for_budget(10.0, 100.0, 50, budget)
        cost = lambda k: (k * 10.0 + (50 - k) * 100.0) / (50 * 100.0)  # noqa: E731
        assert cost(n) <= budget and (n == 0 or cost(n - 1) > budget)
    assert ramp_for_budget(10.0, 100.0, 50, 0.05) is None
    with pytest.raises(BenchmarkError, match="saves nothing"):
        ramp_for_budget(100.0, 100.0, 50, 0.5)
    assert budget_status(0.5, 0.5, 8) == "within"
    assert budget_status(0.6, 0.5, 8) == "over_within_one_step"
    assert budget_status(0.7, 0.5, 8) == "over"


def test_tune_skip_delta_on_a_stub_meets_the_budget():
    def measure(policy):  # MACs fall with delta (a step function, like real skipping), floor set by C_max
        floor = 1 / (policy.max_consecutive + 1)
        return max(floor, 1.0 - 0.1 * math.floor(10 * policy.delta))

    tuned = tune_skip_delta(measure, 0.55, max_consecutive=4, max_allowed_consecutive=50)
    assert tuned.met and tuned.calibration_ratio <= 0.55
    assert 0.45 <= tuned.policy.delta <= 0.5 * 1.01  # the smallest delta that gets there, to bisection precision
    assert tune_skip_delta(measure, 1.0).policy.delta == 0.0  # no skipping needed
    deep = tune_skip_delta(measure, 0.1, max_consecutive=4, max_allowed_consecutive=50)
    assert deep.met and deep.policy.max_consecutive >= 9  # C_max raised until the budget is reachable
    stuck = tune_skip_delta(measure, 0.1, max_consecutive=4, max_allowed_consecutive=4)
    assert not stuck.met and stuck.calibration_ratio == pytest.approx(0.2)


def test_delta_bisection_meets_the_budget_on_the_calibration_seeds():
    model = _model()
    job = BenchmarkJob(budgets=(0.6,), num_samples=2, num_steps=STEPS, calibration_samples=3,
                       stepsaver_reference_steps=STEPS, inception=False, domain=False)
    runner = BenchmarkSampler(model, job, None, macs_table(model))
    tuned = tune_skip_delta(lambda p: runner.calibration_ratio([1.0] * STEPS, p), 0.6,
                            max_allowed_consecutive=STEPS)
    assert tuned.met and 0 < tuned.policy.delta
    again = sample(model, DDIMScheduler(), 1.0, num_inference_steps=STEPS, seeds=job.calibration_seeds,
                   class_labels=runner.cal_labels, skip_policy=tuned.policy, progress=False)
    assert again.macs_per_image / again.full_macs_per_image <= 0.6


def test_stitched_unet_routes_widths_to_the_two_models():
    large, small = _model(0), _model(1, block_out_channels=(4, 8, 8), width_choices=(1.0,), norm_num_groups=2,
                                     attention_head_dim=4)
    net = StitchedUNet(large, small)
    s = net.small_width
    assert 0 < s < 1 and net.width_choices == (s, 1.0)
    assert net.macs_table == {s: macs_table(small)[1.0], 1.0: macs_table(large)[1.0]}
    x, t, y = torch.randn(2, 1, 16, 16), torch.tensor(500), torch.tensor([1, 2])
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, class_labels=y, width=s).sample, small(x, t, class_labels=y).sample)
        torch.testing.assert_close(net(x, t, class_labels=y, width=1.0).sample, large(x, t, class_labels=y).sample)
    out = sample(net, DDIMScheduler(), [s, s, 1.0, 1.0], seeds=[0], class_labels=[3], macs_table=net.macs_table,
                 progress=False)
    assert out.macs_per_image == 2 * net.macs_table[s] + 2 * net.macs_table[1.0]
    with pytest.raises(BenchmarkError, match="sample_size"):
        StitchedUNet(large, _model(1, sample_size=8, width_choices=(1.0,)))


# ------------------------------------------------------------------------------------------------------------ the CLI


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    model = _model(0)
    model.save_pretrained(root / "run" / "model")
    # config.yaml beside model/, where training writes it (the CLI never guesses one); defaults elsewhere
    ExperimentConfig.from_dict({"model": tiny_unet_kwargs()}).save(root / "run" / "config.yaml")
    _model(1, block_out_channels=(4, 8, 8), width_choices=(1.0,), norm_num_groups=2,
           attention_head_dim=4).save_pretrained(root / "small" / "model")
    table = macs_table(model)
    # stand-ins for the search's output: one schedule within the 0.5 budget, one for a larger budget
    for budget, widths in ((0.5, [0.25] * 3 + [0.5] * 3 + [1.0] * 2), (0.7, [0.5] * 4 + [1.0] * 4)):
        s = Schedule.from_widths(model, DDIMScheduler(), widths, num_inference_steps=STEPS).with_macs(table)
        assert s.macs["ratio"] <= budget
        s.with_provenance({"search": {"budget": budget}}).save(root / "searches" / f"b{budget}" / "schedule.json")
    return root


SMALL = ["--steps", str(STEPS), "--num-samples", "6", "--calibration-samples", "3", "--stepsaver-samples", "2",
         "--stepsaver-candidates", "2", "4", "6", "--stepsaver-reference-steps", "10", "--no-inception",
         "--no-progress"]


def test_benchmark_cli_end_to_end(run_dir, tmp_path, fast_domain_features):
    out = tmp_path / "out"
    code = _script("eval/benchmark.py").main([
        "--model", str(run_dir / "run" / "model"), "--schedules-dir", str(run_dir / "searches"), "--budgets", "0.5",
        "--small-dense", str(run_dir / "small" / "model"), "--output-dir", str(out), *SMALL])
    assert code == 0
    for name in ("benchmark.json", "benchmark.md", "benchmark.png", "stepsaver.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "benchmark.json").read_text())
    assert report["num_steps"] == STEPS and report["seeds"] == [10_000, 10_005]
    assert report["metrics"]["domain_features"] == "random-conv-test-features"
    assert report["metrics"]["inception_features"] is None
    rows = {r["method"]: r for r in report["budgets"][0]["methods"]}
    assert set(rows) == {"uniform", "fewer_steps", "tstitch_supernet", "tstitch_dense", "adaptive", "stepsaver",
                         "ddsm", "ddsm_adaptive"}
    assert all(r["status"] == "ok" for r in rows.values()), {m: r["note"] for m, r in rows.items()}
    one_step = 1 / STEPS
    for method, r in rows.items():
        assert r["macs_ratio"] <= 0.5 + one_step + 1e-9, method
        assert r["budget_status"] in ("within", "over_within_one_step")
        assert 0 < r["speedup"] and r["ssim"] <= 1 and r["domain_fid"] is not None
    for method in ("uniform", "fewer_steps", "tstitch_supernet", "tstitch_dense", "stepsaver", "ddsm"):
        assert rows[method]["budget_status"] == "within", method
    assert rows["fewer_steps"]["params"]["steps"] == 4 and rows["uniform"]["params"]["width"] == 0.5
    for method in ("adaptive", "ddsm_adaptive"):  # tuned on the calibration seeds: met there
        assert rows[method]["params"]["met_on_calibration"]
        assert rows[method]["params"]["calibration_ratio"] <= 0.5
    assert rows["ddsm_adaptive"]["params"]["base_budget"] == 0.7  # the larger budget's schedule, tuned down
    assert report["full"]["ssim"] == pytest.approx(1.0) and report["full"]["macs_ratio"] == 1.0

    md = (out / "benchmark.md").read_text()
    assert "## Budget 0.5" in md and "Where the searched schedule stands" in md
    assert md.count("- **") == len(rows) - 1  # one sentence per other method
    assert "Inception FID not computed" in md
    over = [r for r in rows.values() if r["budget_status"] != "within"]
    for r in over:  # said so in the output
        assert "over the budget" in r["note"] and any(r["label"] in n for n in report["notes"])


@pytest.mark.parametrize("args, message", [
    (["--budgets", "0"], "out of range"),
    (["--budgets", "1.5"], "out of range"),
    (["--budgets", "0.5", "--num-samples", "1"], "at least 2"),
    (["--budgets", "0.5", "--calibration-seed", "10003"], "overlap the evaluation seeds"),
    (["--budgets", "0.5", "--steps", "20"], "reference must use at least as many steps"),
    (["--schedule", "/nonexistent/schedule.json"], "does not exist"),
    (["--small-dense", "/nonexistent/small"], "--small-dense"),
])
def test_benchmark_cli_rejects_bad_arguments(run_dir, tmp_path, capsys, args, message):
    code = _script("eval/benchmark.py").main(["--model", str(run_dir / "run" / "model"), "--output-dir",
                                              str(tmp_path / "o"), *SMALL, *args])
    err = capsys.readouterr().err
    assert code != 0
    assert message in err, err[-2000:]
    assert not (tmp_path / "o").exists()


def test_benchmark_cli_rejects_missing_model_and_bad_inception_samples(tmp_path, run_dir, capsys):
    main = _script("eval/benchmark.py").main
    assert main(["--model", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "o")]) != 0
    assert "not a SlimmableUNet directory" in capsys.readouterr().err
    assert main(["--model", str(run_dir / "run" / "model"), "--num-samples", "4", "--inception-samples", "8",
                 "--output-dir", str(tmp_path / "o")]) != 0
    assert "--inception-samples 8" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: a budget that is not a number
        main(["--model", str(run_dir / "run" / "model"), "--budgets", "half"])
