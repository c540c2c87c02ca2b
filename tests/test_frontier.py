"""eval/frontier.py and ddsm.benchmark's frontier: two DDSM kinds per budget, searches saved and reused, one
benchmark per step count, the frontier's table and plots, and clear errors for bad input."""

import json
import re

import pytest
from diffusers import DDIMScheduler

from conftest import halved_tiny_unet, load_script, tiny_unet_kwargs
from ddsm import Schedule, SlimmableUNet
from ddsm.benchmark import BenchmarkError, BenchmarkJob, FrontierJob, assign_schedules, plan_schedules, schedule_kind
from ddsm.config import ExperimentConfig
from ddsm.models import macs_table
from ddsm.search import SearchJob

pytestmark = pytest.mark.usefixtures("one_thread")


_model = halved_tiny_unet


def _schedule(model, widths, budget=None, allow_skip=None):
    s = Schedule.from_widths(model, DDIMScheduler(), widths, num_inference_steps=len(widths))
    search = {}
    if budget is not None:
        search["budget"] = budget
    if allow_skip is not None:
        search["allow_skip"] = allow_skip
    return s.with_macs(macs_table(model)).with_provenance({"search": search}) if search else s


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("frontier")
    _model(0).save_pretrained(root / "run" / "model")
    ExperimentConfig.from_dict({"model": tiny_unet_kwargs()}).save(root / "run" / "config.yaml")
    _model(1, block_out_channels=(4, 8, 8), width_choices=(1.0,), norm_num_groups=2,
           attention_head_dim=4).save_pretrained(root / "small" / "model")
    return root


SMALL = ["--steps", "4", "6", "--budgets", "0.5", "0.7", "--reference-steps", "8", "--num-samples", "6",
         "--calibration-samples", "3", "--stepsaver-samples", "2", "--stepsaver-candidates", "2", "4",
         "--stepsaver-reference-steps", "8", "--metric", "fidelity", "--population", "4", "--generations", "1",
         "--search-samples", "2", "--final-samples", "4", "--top-k", "2", "--halving-eta", "2", "--no-inception",
         "--no-progress"]


# ------------------------------------------------------------------------------------------ two kinds per budget


def test_schedule_kind_and_two_schedules_per_budget():
    model = _model()
    table = macs_table(model)
    widths = _schedule(model, [0.25, 0.5, 0.5, 1.0], 0.5, allow_skip=False)
    skips = _schedule(model, [0.5, 0, 0.75, 1.0], 0.5, allow_skip=True)
    legacy_skip = _schedule(model, [0.5, 0, 0.75, 1.0], 0.5)
    legacy = _schedule(model, [0.25, 0.5, 0.5, 1.0], 0.5)
    assert [schedule_kind(s) for s in (widths, skips, legacy_skip, legacy)] == ["widths", "skips", "skips", None]
    with pytest.raises(BenchmarkError, match="allow_skip is false but step 1 is skipped"):
        schedule_kind(_schedule(model, [0.5, 0, 0.75, 1.0], 0.5, allow_skip=False), "x.json")

    both = assign_schedules([("w.json", widths), ("s.json", skips)], [0.5], table)
    assert both.slots == ("ddsm", "ddsm_widths")
    assert both.at("ddsm", 0.5).path == "s.json" and both.at("ddsm_widths", 0.5).path == "w.json"
    alone = assign_schedules([("w.json", widths)], [0.5], table)  # one kind only: it fills the ddsm row
    assert alone.slots == ("ddsm",) and alone.at("ddsm", 0.5).kind == "widths"
    with pytest.raises(BenchmarkError, match="two searched widths-only schedules for budget 0.5"):
        assign_schedules([("a.json", widths), ("b.json", widths), ("s.json", skips)], [0.5], table)
    with pytest.raises(BenchmarkError, match="two searched schedules for budget 0.5"):
        assign_schedules([("a.json", skips), ("b.json", legacy)], [0.5], table)


def _job(**kw):
    bench = BenchmarkJob(budgets=kw.pop("budgets", (0.5,)), num_samples=4, num_steps=4, calibration_samples=2,
                         stepsaver_reference_steps=8, inception=False)
    search = kw.pop("search", SearchJob(output="s.json", metric="fidelity", population=4, generations=1,
                                        num_samples=2, final_samples=2, top_k=1))
    return FrontierJob(benchmark=bench, search=search, steps=kw.pop("steps", (4,)), reference_steps=8, **kw)


def test_plan_marks_budgets_below_the_cheapest_schedule_infeasible(tmp_path):
    model = _model()
    plan = plan_schedules(model, _job(budgets=(0.01, 0.05, 0.5), steps=(4,)), tmp_path)
    source = {(p.budget, p.kind): p.source for p in plan}
    # width 0.25 costs more than 0.05 of full, so only a schedule that skips 3 of 4 steps fits 0.05
    assert source[(0.05, "widths")] == "infeasible" and source[(0.05, "skips")] == "search"
    assert source[(0.01, "skips")] == "infeasible" and source[(0.5, "widths")] == "search"
    assert "cheapest widths only schedule of 4 steps costs" in next(p.note for p in plan if p.source == "infeasible")


def test_config_segments_are_an_upper_bound_at_each_step_count(tmp_path):
    from ddsm.benchmark.frontier import segments_at

    search = SearchJob(output="s.json", metric="fidelity", population=4, generations=1, num_samples=2,
                       final_samples=2, top_k=1, segments=6)  # like a config's segments: 50 beside --steps 25 50
    assert [segments_at(search, n) for n in (4, 6, 12)] == [None, None, 6]
    assert segments_at(SearchJob(output="s.json"), 4) is None
    plan = plan_schedules(_model(), _job(steps=(4, 6), search=search), tmp_path)  # no "segments=6" error at 4 steps
    assert {p.source for p in plan} == {"search"} and len(plan) == 4


@pytest.mark.parametrize("kw, message", [
    (dict(steps=(1,)), "--steps 1: expected step counts that are ints >= 2"),
    (dict(steps=(4, 4)), "duplicates"),
    (dict(steps=()), "--steps is empty"),
    (dict(steps=(16,)), "reference must use at least as many steps"),
    (dict(search=SearchJob(output="s.json", mode="nsga2")), "expected 'single'"),
    (dict(search=SearchJob(output="s.json", population=1)), "population=1"),
    (dict(search=SearchJob(output="s.json", sample_seed=9_990, num_samples=20)), "overlap the evaluation seeds"),
])
def test_frontier_job_rejects_bad_settings(kw, message):
    with pytest.raises(ValueError, match=message):  # BenchmarkError, or SearchError for the search settings
        _job(**kw)


# ------------------------------------------------------------------------------------------------ end to end


def test_frontier_cli_end_to_end_resumes_and_reuses(run_dir, tmp_path, fast_domain_features, monkeypatch,
                                                    capsys):
    import ddsm.benchmark.frontier as frontier

    calls = {"search": 0, "benchmark": 0}
    real_search, real_benchmark = frontier.run_search, frontier.run_benchmark

    def counting_search(*a, **k):
        calls["search"] += 1
        return real_search(*a, **k)

    def crashing_benchmark(model, job, **k):  # the first run dies in the second step count's benchmark
        calls["benchmark"] += 1
        if crash and job.num_steps == 6:
            raise KeyboardInterrupt
        return real_benchmark(model, job, **k)

    monkeypatch.setattr(frontier, "run_search", counting_search)
    monkeypatch.setattr(frontier, "run_benchmark", crashing_benchmark)
    main = load_script("eval/frontier.py").main
    out = tmp_path / "out"
    args = ["--model", str(run_dir / "run" / "model"), "--small-dense", str(run_dir / "small" / "model"),
            "--output-dir", str(out), *SMALL]

    crash = True
    with pytest.raises(KeyboardInterrupt):
        main(args)
    assert calls == {"search": 8, "benchmark": 2}  # 2 step counts x 2 budgets x 2 kinds searched before the crash
    assert (out / "steps4" / "benchmark.json").is_file() and not (out / "steps6").exists()

    crash = False
    calls.update(search=0, benchmark=0)
    assert main(args) == 0
    assert calls == {"search": 0, "benchmark": 1}  # the searches and the finished step count reused
    for name in ("frontier.json", "frontier.md", "frontier_steps4.png", "frontier_steps6.png",
                 "reference_steps8.json", "steps6/benchmark.md", "steps6/benchmark.png"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in out.glob("frontier_steps*.png")) == ["frontier_steps4.png", "frontier_steps6.png"]
    schedules = sorted(out.glob("searches/steps*/budget*/*/schedule.json"))
    assert len(schedules) == 8
    for path in schedules:
        s = json.loads(path.read_text())
        assert s["provenance"]["search"]["allow_skip"] == (path.parent.name == "skips")
        assert s["provenance"]["search"]["halving_eta"] == 2 and s["provenance"]["search"]["rungs"][-1] == 4
        assert len(s["widths"]) == int(path.parents[2].name[len("steps"):])
        if path.parent.name == "widths":
            assert 0 not in s["widths"]
    mtimes = {p: p.stat().st_mtime_ns for p in schedules + [out / "steps4" / "benchmark.json"]}

    report = json.loads((out / "frontier.json").read_text())
    assert report["format"] == "ddsm-frontier" and report["steps"] == [4, 6] and report["budgets"] == [0.5, 0.7]
    assert report["quality"]["key"] == "domain_fid" and report["quality"]["num_samples"] == 6
    assert report["reference"]["steps"] == 8 and report["reference"]["fid"] is not None
    for block in report["step_counts"]:
        methods = {m["method"]: m for m in block["methods"]}
        for method in ("uniform", "fewer_steps", "tstitch_supernet", "tstitch_dense", "adaptive", "stepsaver",
                       "ddsm_widths", "ddsm", "ddsm_adaptive"):
            for p in methods[method]["points"]:
                assert p["status"] == "ok" and p["fid"] is not None and 0 < p["macs_ratio"] <= 1, (method, p)
        assert {p["kind"] for p in methods["ddsm"]["points"]} == {"skips"}
        assert {p["kind"] for p in methods["ddsm_widths"]["points"]} == {"widths"}
    bench = json.loads((out / "steps4" / "benchmark.json").read_text())
    rows = {r["method"] for r in bench["budgets"][0]["methods"]}
    assert {"ddsm", "ddsm_widths", "ddsm_adaptive"} <= rows

    md = (out / "frontier.md").read_text()
    assert "| DDSM widths only |" in md and "| DDSM widths + skips |" in md
    assert "## DDIMScheduler, 4 steps" in md and "## DDIMScheduler, 6 steps" in md
    assert "| method | budget 0.5 | budget 0.7 |" in md
    assert "FID: domain FID (random-conv-test-features" in md and "N = 6 samples per method" in md
    assert "Full model, 8 steps: FID" in md and "Inception FID was not computed" in md
    assert "| steps | budget | kind | MACs ratio | steps per width (skipped) |" in md
    for x in report["searches"]:  # one row per schedule: its steps per width add up to its step count
        row = next(line for line in md.splitlines()
                   if line.startswith(f"| {x['steps']} | {x['budget']:g} | "
                                      f"{'widths + skips' if x['kind'] == 'skips' else 'widths only'} |"))
        genes = row.split("|")[5]
        counts = [int(n) for n in re.findall(r": (\d+)", genes)]
        assert sum(counts) == x["steps"], row
        assert ("skipped" in genes) == (0.0 in x["widths"]), row

    calls.update(search=0, benchmark=0)
    capsys.readouterr()
    assert main(args) == 0  # a third run: everything reused, nothing searched or sampled again
    assert calls == {"search": 0, "benchmark": 0}
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    assert "reusing" in capsys.readouterr().err

    # a finished step count made with other settings is not silently reused
    code = main([*args, "--num-samples", "8"])
    assert code == 2 and "num_samples 6 (this run: 8)" in capsys.readouterr().err and calls["benchmark"] == 0
    # a saved search made with other settings neither
    code = main([*args, "--generations", "2"])
    assert code == 2 and "generations 1 (this run: 2)" in capsys.readouterr().err

    # --no-search with the saved searches as --schedules-dir: all found there
    plan = plan_schedules(SlimmableUNet.from_pretrained(run_dir / "run" / "model"),
                          _job(budgets=(0.5, 0.7), steps=(4, 6), search=None), tmp_path / "elsewhere",
                          given=[(str(p), Schedule.load(p)) for p in schedules])
    assert {p.source for p in plan} == {"given"} and len(plan) == 8


@pytest.mark.parametrize("extra, message", [
    (["--budgets", "0"], "out of range"),
    (["--budgets", "1.5"], "out of range"),
    (["--steps", "1", "4"], "--steps 1: expected step counts that are ints >= 2"),
    (["--steps", "4", "4"], "duplicates"),
    (["--reference-steps", "1"], "--reference-steps 1"),
    (["--no-domain"], "leaves no FID"),
    (["--sample-seed", "9999"], "overlap the evaluation seeds"),
    (["--schedules-dir", "/nonexistent/dir"], "is not a directory"),
    (["--segments", "5"], "--segments 5 is above the smallest --steps 4"),
])
def test_frontier_cli_rejects_bad_arguments(run_dir, tmp_path, capsys, extra, message):
    code = load_script("eval/frontier.py").main(["--model", str(run_dir / "run" / "model"), "--output-dir",
                                                 str(tmp_path / "o"), *SMALL, *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err[-2000:]
    assert not (tmp_path / "o").exists()


def test_frontier_cli_no_search_names_the_missing_schedules(run_dir, tmp_path, capsys):
    model = SlimmableUNet.from_pretrained(run_dir / "run" / "model")
    _schedule(model, [0.5, 0, 0.75, 1.0], 0.5, allow_skip=True).save(tmp_path / "given" / "schedule.json")
    code = load_script("eval/frontier.py").main([
        "--model", str(run_dir / "run" / "model"), "--output-dir", str(tmp_path / "o"), *SMALL, "--no-search",
        "--schedules-dir", str(tmp_path / "given")])
    err = capsys.readouterr().err
    assert code == 2 and "--no-search: 7 schedules are missing: 4 steps, budget 0.5, widths only;" in err, err
    assert "search.allow_skip" in err and not (tmp_path / "o").exists()
