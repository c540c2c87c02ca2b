"""eval/gpu_check.py on a machine without CUDA (it skips), and its pure helpers on CPU arrays."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ddsm.gpu_check import SKIPPED, GpuCheckSettings, compare_images, run_gpu_check, summary_line, width_rows

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_without_cuda_prints_skipped_and_exits_0(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "eval/gpu_check.py"), "--output-dir", str(out)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == SKIPPED == "no CUDA: skipped"
    assert not out.exists()  # nothing run, nothing written
    bad = subprocess.run([sys.executable, str(ROOT / "eval/gpu_check.py"), "--time-limit", "0"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert bad.returncode == 2 and "--time-limit must be positive" in bad.stderr


def test_run_gpu_check_skips_without_cuda(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = run_gpu_check(GpuCheckSettings(output_dir=str(tmp_path / "out")))
    assert result == {"status": "skipped"} and summary_line(result) == SKIPPED
    assert not (tmp_path / "out").exists()


def test_compare_images_measures_the_difference_and_holds_the_bounds():
    a = np.zeros((2, 1, 4, 4), dtype=np.float32)
    b = a.copy()
    b[0, 0, 0, 0] = 0.2
    same = compare_images(a, a.copy(), max_abs=0.0, mean_abs=0.0)
    assert same["ok"] and same["max_abs_diff"] == same["mean_abs_diff"] == 0.0
    c = compare_images(a, b, max_abs=0.1)
    assert c["max_abs_diff"] == pytest.approx(0.2) and c["mean_abs_diff"] == pytest.approx(0.2 / 32) and not c["ok"]
    assert compare_images(a, b, mean_abs=0.01)["ok"] and not compare_images(a, b, mean_abs=0.001)["ok"]
    assert compare_images(a, torch.from_numpy(b).double(), max_abs=0.3)["ok"]  # any array-like, any float dtype
    b[1, 0, 1, 1] = np.nan
    assert not compare_images(a, b)["ok"]  # never ok with a NaN, bounds or not
    with pytest.raises(ValueError, match="shapes"):
        compare_images(a, a[:1])


def test_width_rows_put_time_ratios_beside_macs_ratios():
    rows = width_rows({1.0: 400, 0.5: 100, 0.25: 25},
                      {"fp32": {1.0: 0.004, 0.5: 0.002, 0.25: 0.0015}, "bf16": {1.0: 0.002, 0.5: 0.0015, 0.25: 0.001}})
    assert [r["width"] for r in rows] == [0.25, 0.5, 1.0]
    assert [r["macs_ratio"] for r in rows] == [0.0625, 0.25, 1.0]
    assert [r["time_ratio_fp32"] for r in rows] == pytest.approx([0.375, 0.5, 1.0])
    assert [r["time_ratio_bf16"] for r in rows] == pytest.approx([0.5, 0.75, 1.0])
    assert rows[2]["ms_fp32"] == pytest.approx(4.0) and rows[0]["ms_bf16"] == pytest.approx(1.0)


def _result(**kw):
    stages = {"train": dict(ok=True, seconds=10.0), "search": dict(ok=True, seconds=20.0)}
    comparisons = {"images_fp32": compare_images(np.zeros(4), np.full(4, 0.001), max_abs=0.05),
                   "images_bf16": compare_images(np.zeros(4), np.full(4, 0.01), mean_abs=0.05),
                   "forward_fp32": dict(max_rel_diff=3e-4, bound=1e-2, ok=True)}
    widths = width_rows({0.5: 1.0, 1.0: 4.0}, {"fp32": {0.5: 1.0, 1.0: 2.0}, "bf16": {0.5: 1.0, 1.0: 1.25}})
    return dict(dict(status="pass", device="NVIDIA H200", seconds=181.4, stages=stages, comparisons=comparisons,
                     widths=widths, json="runs/gpu_check/gpu_check.json"), **kw)


def test_summary_line_says_everything_in_one_line():
    line = summary_line(_result())
    assert "\n" not in line
    assert line.startswith("gpu-check PASS on NVIDIA H200 in 181 s; 2/2 stages ok")
    assert "fp32 images max |diff| 0.001 (<= 0.05)" in line and "bf16 mean |diff| 0.01 (<= 0.05)" in line
    assert "forward rel diff 0.0003" in line
    assert "width 0.5/1: MACs 0.25/1.00, time fp32 0.50/1.00, bf16 0.80/1.00" in line
    assert line.endswith("-> runs/gpu_check/gpu_check.json")


def test_summary_line_names_what_failed_and_survives_missing_parts():
    stages = {"train": dict(ok=True, seconds=1.0), "width_times": dict(ok=False, seconds=0.0,
                                                                       error="TimeoutError: not started")}
    line = summary_line(_result(status="fail", stages=stages, comparisons={}, widths=None))
    assert line.startswith("gpu-check FAIL") and "1/2 stages ok" in line
    assert "width_times: TimeoutError: not started" in line and "|diff|" not in line and "\n" not in line
