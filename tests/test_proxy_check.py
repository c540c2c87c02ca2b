"""The proxy check (eval/proxy_check.py): diverse schedules, Spearman, settings errors, end to end with resume."""

import json

import pytest

from conftest import halved_tiny_unet, load_script, tiny_unet_kwargs
from ddsm import SlimmableUNet
from ddsm.config import ExperimentConfig, load_config
from ddsm.evaluation import ScheduleEvaluator
from ddsm.search import (FAMILIES, ProxyCheckJob, SearchError, SearchSpace, diverse_schedules, proxy_markdown,
                         proxy_summary, spearman)

MACS = {0.25: 10, 0.5: 30, 0.75: 60, 1.0: 100}

pytestmark = pytest.mark.usefixtures("one_thread")


def test_spearman_of_a_known_permutation_and_ties():
    x = [1, 2, 3, 4, 5, 6]
    y = [2, 1, 4, 3, 6, 5]  # every neighbour pair swapped: d^2 = 1 each
    rho, p = spearman(x, y)
    assert rho == pytest.approx(1 - 6 * 6 / (6 * (36 - 1))) and 0 < p < 1
    assert spearman(x, x[::-1])[0] == pytest.approx(-1.0)
    assert spearman([10, 20, 30, 40], [0.1, 0.2, 0.3, 0.4])[0] == pytest.approx(1.0)  # ranks, not values
    # ties get average ranks: y ranks (1, 2.5, 2.5, 4) -> Pearson of ranks
    rho, _ = spearman([1, 2, 3, 4], [5, 7, 7, 9])
    assert rho == pytest.approx(0.9486832980505138)
    assert spearman([1, 2], [2, 1]) == (None, None)          # too few pairs
    assert spearman([1, 2, 3], [4, 4, 4]) == (None, None)    # a constant side has no ranking


def test_diverse_schedules_are_distinct_deterministic_and_cover_the_families():
    space = SearchSpace.build(MACS, num_steps=50, allow_skip=True)
    a = diverse_schedules(space, 24, seed=0)
    assert len(a) == 24 and len({tuple(e["widths"]) for e in a}) == 24
    assert a == diverse_schedules(space, 24, seed=0)
    assert a != diverse_schedules(space, 24, seed=1)  # the random families change with the seed
    assert a[:6] == diverse_schedules(space, 6, seed=0)  # a shorter list is a prefix
    assert {e["kind"] for e in a} == set(FAMILIES) and {e["kind"] for e in a[:6]} == set(FAMILIES)
    for e in a:
        assert len(e["widths"]) == 50 and e["widths"][0] != 0
        assert e["macs"] == space.cost(space.genome_of(e["widths"]))
        if e["kind"].startswith("mix"):
            assert 0.2 - 0.05 <= e["macs_ratio"] <= 0.9
    assert any(0 in e["widths"] for e in a if e["kind"] == "mix_skip")
    assert all(0 not in e["widths"] for e in a if e["kind"] == "mix")
    ratios = sorted(e["macs_ratio"] for e in a)
    assert ratios[0] < 0.3 and ratios[-1] >= 0.9  # spread over the range
    with pytest.raises(SearchError, match="distinct schedules"):
        diverse_schedules(SearchSpace.build({0.5: 1, 1.0: 2}, num_steps=2, allow_skip=True), 50)
    with pytest.raises(SearchError, match="ratio range"):
        diverse_schedules(space, 5, min_ratio=0.9, max_ratio=0.2)


def _rows(n, proxy_of_rank):
    """``n`` rows whose held-out score is the rank i and whose ``good@8`` score is ``proxy_of_rank(i)``."""
    return [dict(kind="mix", widths=[1.0], macs_ratio=0.5, proxies={
        "good@8": dict(value=proxy_of_rank(i), unet_forwards=80, seconds=1.0)},
        heldout=dict(value=float(i), unet_forwards=1000, seconds=20.0)) for i in range(n)]


def test_summary_trusts_only_a_high_rho_over_20_schedules_against_inception_at_1000():
    near = lambda i: i + (1.5 if i % 4 == 0 else 0)  # noqa: E731  (a few neighbours swapped)
    s = proxy_summary(_rows(20, near), ["good"], [8], "inception_fid", 1000)
    p = s["proxies"]["good@8"]
    assert 0.8 <= p["spearman"] < 1 and p["passes"] and p["schedules"] == 20
    assert p["unet_forwards_vs_heldout"] == pytest.approx(0.08) and p["seconds_vs_heldout"] == pytest.approx(0.05)
    assert not proxy_summary(_rows(19, near), ["good"], [8], "inception_fid", 1000)["proxies"]["good@8"]["passes"]
    assert not proxy_summary(_rows(20, near), ["good"], [8], "inception_fid", 999)["proxies"]["good@8"]["passes"]
    assert not proxy_summary(_rows(20, near), ["good"], [8], "domain_fid", 1000)["proxies"]["good@8"]["passes"]
    noisy = proxy_summary(_rows(20, lambda i: (i * 7) % 20), ["good"], [8], "inception_fid", 1000)
    assert not noisy["proxies"]["good@8"]["passes"]
    report = dict(summary=s, rows=_rows(20, near), features={}, reference_cost={},
                  header=dict(heldout=dict(metric="inception_fid", num_samples=1000, seed=10000),
                              scheduler="DDIMScheduler", num_steps=50, search_seed=0))
    text = proxy_markdown(report)
    assert "| good@8 | 20 | " in text and "| yes |" in text


@pytest.mark.parametrize("kw, message", [
    (dict(metrics=("lpips",)), "unknown"),
    (dict(metrics=()), "at least one"),
    (dict(metrics=("fidelity", "fidelity")), "twice"),
    (dict(heldout_metric="nope"), "unknown"),
    (dict(num_schedules=2), "at least 3"),
    (dict(search_samples=(1,)), ">= 2"),
    (dict(heldout_seed=100, search_samples=(256,)), "overlap the search seeds"),
])
def test_bad_proxy_settings_are_clear_errors(kw, message):
    with pytest.raises(SearchError, match=message):
        ProxyCheckJob(output="x.json", **kw)


@pytest.fixture
def tiny_run(tmp_path):
    model = halved_tiny_unet()
    model.save_pretrained(tmp_path / "model")
    ExperimentConfig.from_dict({"model": tiny_unet_kwargs()}).save(tmp_path / "experiment.yaml")
    return tmp_path


def test_proxy_check_cli_end_to_end_and_resumes(tiny_run, fast_domain_features, monkeypatch, capsys):
    out = tiny_run / "proxy" / "proxy.json"
    main = load_script("eval/proxy_check.py").main
    base = ["--model", str(tiny_run / "model"), "--config", str(tiny_run / "experiment.yaml"), "--output", str(out),
            "--steps", "4", "--num-schedules", "7", "--search-samples", "4", "8", "--heldout-metric", "domain_fid",
            "--heldout-samples", "8", "--batch-size", "8", "--no-progress"]
    assert main([*base, "--metrics", "fidelity", "teacher_fid"]) == 0
    printed = capsys.readouterr().out
    assert "Spearman" in printed and "fidelity@8" in printed
    report = json.loads(out.read_text())
    assert len(report["rows"]) == 7 and {r["kind"] for r in report["rows"]} == set(FAMILIES)
    assert set(report["summary"]["proxies"]) == {"fidelity@4", "teacher_fid@4", "fidelity@8", "teacher_fid@8"}
    for p in report["summary"]["proxies"].values():
        assert p["schedules"] == 7 and (p["spearman"] is None or -1 <= p["spearman"] <= 1)
        assert p["passes"] is False  # 7 schedules never make a trust claim
    row = report["rows"][0]
    steps = sum(1 for w in row["widths"] if w)
    assert row["proxies"]["fidelity@4"]["unet_forwards"] == 4 * steps
    assert row["proxies"]["fidelity@8"]["unet_forwards"] == 8 * steps
    assert row["heldout"]["unet_forwards"] == 8 * steps and row["heldout"]["num_samples"] == 8
    assert report["reference_cost"]["search"]["unet_forwards"] == 8 * 4  # full model, 8 seeds x 4 steps, once
    full = next(r for r in report["rows"] if r["widths"] == [1.0] * 4)  # the full model scores 0 against itself
    assert abs(full["proxies"]["fidelity@8"]["value"]) < 1e-4
    assert out.with_suffix(".md").is_file() and out.with_suffix(".png").is_file()

    # the same proxy as a search computes it: the evaluator's own call on the search seeds
    model = SlimmableUNet.from_pretrained(tiny_run / "model")
    cfg = load_config(tiny_run / "experiment.yaml")
    ev = ScheduleEvaluator(model, cfg.sampling.scheduler, cfg.diffusion.scheduler_config(), 4, "fidelity",
                           seed=0, batch_size=8)
    assert row["proxies"]["fidelity@8"]["value"] == pytest.approx(ev(row["widths"], 8)[0], abs=1e-6)

    # a rerun adds a metric: only that metric is computed; no held-out score is redone
    held_calls = []
    monkeypatch.setattr(ScheduleEvaluator, "__call__", lambda self, w, n: held_calls.append(n) or (0.0, 0))
    assert main([*base, "--metrics", "fidelity", "teacher_fid", "domain_fid"]) == 0
    again = json.loads(out.read_text())
    assert held_calls == [] and "domain_fid@8" in again["rows"][0]["proxies"]
    assert again["rows"][0]["proxies"]["fidelity@8"] == row["proxies"]["fidelity@8"]
    assert again["rows"][0]["heldout"] == row["heldout"]

    # other held-out settings do not mix with these rows
    capsys.readouterr()
    assert main([*base[:-4], "16", "--batch-size", "8", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "heldout" in err


@pytest.mark.parametrize("args, message", [
    (["--metrics", "lpips"], "unknown"),
    (["--heldout-seed", "0"], "overlap"),
    (["--num-schedules", "2"], "at least 3"),
    (["--min-ratio", "0.9", "--max-ratio", "0.5"], "ratio range"),
])
def test_proxy_check_cli_rejects_bad_flags(tiny_run, capsys, args, message):
    main = load_script("eval/proxy_check.py").main
    code = main(["--model", str(tiny_run / "model"), "--config", str(tiny_run / "experiment.yaml"), "--output",
                 str(tiny_run / "p.json"), "--steps", "4", "--heldout-metric", "fidelity", "--no-progress", *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tiny_run / "p.json").exists()
