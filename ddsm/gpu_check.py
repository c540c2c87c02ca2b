"""An unattended check of the toolkit on a CUDA GPU, in a few minutes (``make gpu-check``, ``eval/gpu_check.py``).

On a machine with CUDA it runs, in ``OUT`` (default ``runs/gpu_check``):

1. a short training run of a small copy of ``configs/mnist.yaml`` (dense steps, then the sandwich rule);
2. a short search of that model (domain-feature FID: the classifier runs on the GPU);
3. ``eval/sample.py`` on the same seeds on the GPU in fp32 and bf16 and on the CPU in fp32, the images compared
   (max and mean absolute difference, with tolerances), plus one UNet forward per width on both devices;
4. ``eval/evaluate.py`` on the GPU in fp32 and bf16 (domain and Inception FID, fidelity, MACs, speed-up);
5. the forward time of every width of the ``configs/cifar10.yaml`` model on the GPU (batch 64, fp32 and bf16
   autocast, median of CUDA-event timings) beside its MACs ratio.

Each stage runs the real command-line script in a subprocess (each builds its own accelerator; its output goes to
``OUT/logs/STAGE.log``) and may fail without stopping the others. The check writes ``OUT/gpu_check.json`` and
ends with one summary line. Without CUDA it does nothing and says ``no CUDA: skipped``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np
import torch

__all__ = ["SKIPPED", "GpuCheckSettings", "compare_images", "width_rows", "summary_line", "run_gpu_check"]

SKIPPED = "no CUDA: skipped"


@dataclass(frozen=True)
class GpuCheckSettings:
    """What the check runs, and the tolerances it holds the GPU to (first guesses: no GPU has run it yet)."""

    repo: str = "."                          # the folder holding train/, search/, eval/ and configs/
    output_dir: str = "runs/gpu_check"
    config: str = "configs/mnist.yaml"       # the model trained, searched, sampled and evaluated
    train_steps: int = 60                    # 20 dense, then the sandwich rule
    steps: int = 10                          # DDIM steps of search, sample and evaluate
    num_samples: int = 32                    # images per sample run, the same seeds on the CPU and the GPU
    eval_samples: int = 64
    inception: bool = True                   # Inception FID in the evaluations (1,000 reference images, cached)
    timing_config: str = "configs/cifar10.yaml"
    timing_batch: int = 64
    timing_repeats: int = 10
    fp32_max_abs: float = 0.05               # GPU fp32 vs CPU fp32 images in [-1, 1]: largest |difference|
    bf16_mean_abs: float = 0.05              # GPU bf16 vs CPU fp32 images: mean |difference|
    forward_rel: float = 1e-2                # one forward per width, GPU vs CPU: max |diff| / max |CPU output|
    time_limit: float = 300.0                # seconds for the whole check; stages past it are not started


def compare_images(reference, other, max_abs: Optional[float] = None, mean_abs: Optional[float] = None) -> dict:
    """Max and mean absolute difference of two image arrays of one shape, ``ok`` when within the given bounds."""
    a, b = np.asarray(reference, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare images of shapes {a.shape} and {b.shape}")
    diff = np.abs(a - b)
    out = dict(max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()), max_abs=max_abs, mean_abs=mean_abs)
    out["ok"] = bool(np.isfinite(diff).all() and (max_abs is None or out["max_abs_diff"] <= max_abs)
                     and (mean_abs is None or out["mean_abs_diff"] <= mean_abs))
    return out


def width_rows(macs: Mapping[float, float], seconds: Mapping[str, Mapping[float, float]]) -> List[dict]:
    """One row per width: its MACs ratio to the widest and, per precision in ``seconds``, its forward time (ms) and
    time ratio to the widest."""
    full = max(macs)
    rows = []
    for w in sorted(macs):
        row = dict(width=w, macs_ratio=macs[w] / macs[full])
        for precision, times in seconds.items():
            row[f"ms_{precision}"] = times[w] * 1e3
            row[f"time_ratio_{precision}"] = times[w] / times[full]
        rows.append(row)
    return rows


def summary_line(result: Mapping[str, Any]) -> str:
    """The check in one line: verdict, device, the stages that failed, the CPU-GPU differences, the widths."""
    if result["status"] == "skipped":
        return SKIPPED
    stages = result["stages"]
    failed = [f"{name}: {s['error']}" for name, s in stages.items() if not s["ok"]]
    parts = [f"gpu-check {result['status'].upper()} on {result['device']} in {result['seconds']:.0f} s",
             f"{sum(s['ok'] for s in stages.values())}/{len(stages)} stages ok"]
    cmp = result.get("comparisons", {})
    if "images_fp32" in cmp:
        c = cmp["images_fp32"]
        parts.append(f"GPU vs CPU fp32 images max |diff| {c['max_abs_diff']:.2g} (<= {c['max_abs']:g})")
    if "images_bf16" in cmp:
        c = cmp["images_bf16"]
        parts.append(f"bf16 mean |diff| {c['mean_abs_diff']:.2g} (<= {c['mean_abs']:g})")
    if "forward_fp32" in cmp:
        parts.append(f"forward rel diff {cmp['forward_fp32']['max_rel_diff']:.2g}")
    rows = result.get("widths") or []
    if rows:
        parts.append("width " + "/".join(f"{r['width']:g}" for r in rows) + ": MACs "
                     + "/".join(f"{r['macs_ratio']:.2f}" for r in rows) + ", time fp32 "
                     + "/".join(f"{r['time_ratio_fp32']:.2f}" for r in rows)
                     + (", bf16 " + "/".join(f"{r['time_ratio_bf16']:.2f}" for r in rows)
                        if "time_ratio_bf16" in rows[0] else ""))
    return "; ".join(parts + failed) + f" -> {result['json']}"


class _Check:
    """Runs the stages in order, each timed and caught, within the settings' time limit."""

    def __init__(self, s: GpuCheckSettings):
        self.s, self.repo, self.out = s, Path(s.repo).resolve(), Path(s.output_dir).resolve()
        self.start = time.perf_counter()
        self.stages: Dict[str, dict] = {}

    def left(self) -> float:
        return self.s.time_limit - (time.perf_counter() - self.start)

    def stage(self, name: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, its time and success recorded under ``name`` (None when it fails or there is no time left)."""
        began, value = time.perf_counter(), None
        try:
            if self.left() <= 0:
                raise TimeoutError(f"not started: the {self.s.time_limit:.0f} s limit was reached")
            value = fn()
            self.stages[name] = dict(ok=True)
        except Exception as e:  # one failing stage must not stop the others
            self.stages[name] = dict(ok=False, error=f"{type(e).__name__}: {str(e)[:300]}")
        self.stages[name]["seconds"] = time.perf_counter() - began
        print(f"[gpu-check] {name}: {'ok' if self.stages[name]['ok'] else self.stages[name]['error']} "
              f"({self.stages[name]['seconds']:.0f} s)", file=sys.stderr, flush=True)
        return value

    def script(self, name: str, args: List[str], cpu: bool = False) -> None:
        """Run a CLI script of the repository; raise with the log's last line when it fails."""
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(self.repo))
        if cpu:
            env["CUDA_VISIBLE_DEVICES"] = ""
        log = self.out / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as f:
            code = subprocess.run([sys.executable, *args], cwd=self.repo, env=env, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=max(1.0, self.left())).returncode
        if code != 0:
            last = (log.read_text().strip().splitlines() or ["(no output)"])[-1][-200:]
            raise RuntimeError(f"{args[0]} exited with {code}: {last} (see {log})")


def _small_config(s: GpuCheckSettings, path: Path) -> Path:
    """``s.config`` with a training run cut to ``s.train_steps`` steps (the first third dense)."""
    import yaml

    from .config import ExperimentConfig

    raw = yaml.safe_load((Path(s.repo) / s.config).read_text())
    raw["train"] = dict(raw.get("train") or {}, max_steps=s.train_steps, full_width_steps=s.train_steps // 3,
                        warmup_steps=10, checkpoint_every=s.train_steps, sample_every=s.train_steps,
                        sample_images=10, sample_steps=s.steps)
    return ExperimentConfig.from_dict(dict(raw, name="gpu-check")).save(path)


def _expect(path: Path, **want) -> dict:
    """The JSON file at ``path``, checked to hold ``want`` (``device="cuda"`` matches ``cuda:N``)."""
    data = json.loads(path.read_text())
    for key, value in want.items():
        got = str(data.get(key))
        if got != value and not got.startswith(f"{value}:"):
            raise AssertionError(f"{path.name}: {key} is {got!r}, expected {value!r}")
    return data


def _forward_diff(model_dir: Path, bound: float, device: str = "cuda") -> dict:
    """One UNet forward per width on the CPU and on ``device``, same inputs: the largest difference relative to the
    CPU's largest output, ``ok`` when within ``bound``."""
    from .models import SlimmableUNet

    cpu = SlimmableUNet.from_pretrained(model_dir).eval()
    gpu = SlimmableUNet.from_pretrained(model_dir).eval().to(device)
    cfg, g = cpu.config, torch.Generator().manual_seed(0)
    x = torch.randn(8, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=g)
    t = torch.linspace(999, 0, 8).long()
    rel = {}
    with torch.no_grad():
        for w in cpu.width_choices:
            a = cpu(x, t, width=w).sample
            b = gpu(x.to(device), t.to(device), width=w).sample.cpu()
            rel[float(w)] = float((a - b).abs().max() / a.abs().max())
    return dict(per_width=rel, max_rel_diff=max(rel.values()), bound=bound, ok=bool(max(rel.values()) <= bound))


def _gpu_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``fn()`` on the GPU, timed with CUDA events after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return float(np.median(times))


def _width_times(s: GpuCheckSettings) -> List[dict]:
    """Forward time per width of the timing config's model on the GPU (fp32 and bf16 autocast) and MACs ratio."""
    from .config import load_config
    from .models import macs_table

    model = load_config(Path(s.repo) / s.timing_config).build_model().eval().cuda()
    cfg, g = model.config, torch.Generator().manual_seed(0)
    x = torch.randn(s.timing_batch, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=g).cuda()
    t = torch.randint(0, 1000, (s.timing_batch,), generator=g).cuda()
    macs = macs_table(model)

    def forward(w: float, autocast: Callable[[], Any]):
        with autocast():
            return model(x, t, width=w).sample

    precisions = (("fp32", contextlib.nullcontext), ("bf16", functools.partial(torch.autocast, "cuda", torch.bfloat16)))
    with torch.no_grad():
        seconds = {p: {w: _gpu_seconds(functools.partial(forward, w, autocast), s.timing_repeats) for w in macs}
                   for p, autocast in precisions}
    return width_rows(macs, seconds)


def _sample_stages(c: _Check, model: Path, schedule: Path) -> Dict[str, dict]:
    """eval/sample.py on the same seeds on the GPU (fp32, bf16) and the CPU (fp32); the images compared."""
    s, images = c.s, {}
    for tag, precision, cpu in (("gpu_fp32", "no", False), ("gpu_bf16", "bf16", False), ("cpu_fp32", "no", True)):
        def run(tag=tag, precision=precision, cpu=cpu, folder=c.out / f"sample_{tag}"):
            c.script(f"sample_{tag}", ["eval/sample.py", "--model", str(model), "--schedule", str(schedule),
                                       "--num-samples", str(s.num_samples), "--mixed-precision", precision,
                                       "--output-dir", str(folder)], cpu=cpu)
            _expect(folder / "sample.json", device="cpu" if cpu else "cuda", mixed_precision=precision)
            return np.load(folder / "samples.npz")["images"]

        images[tag] = c.stage(f"sample_{tag}", run)
    comparisons = {}
    for tag, key, bound in (("gpu_fp32", "images_fp32", dict(max_abs=s.fp32_max_abs)),
                            ("gpu_bf16", "images_bf16", dict(mean_abs=s.bf16_mean_abs))):
        if images[tag] is not None and images["cpu_fp32"] is not None:
            comparisons[key] = compare_images(images["cpu_fp32"], images[tag], **bound)
    forward = c.stage("forward_cpu_vs_gpu", lambda: _forward_diff(model, s.forward_rel))
    if forward is not None:
        comparisons["forward_fp32"] = forward
    return comparisons


def _evaluate_stages(c: _Check, model: Path, schedule: Path) -> Dict[str, Optional[dict]]:
    """eval/evaluate.py on the GPU in fp32 and bf16: its metrics, fidelity and speed-up per precision."""
    reports = {}
    for precision in ("no", "bf16"):
        def run(precision=precision, folder=c.out / f"evaluate_{precision}"):
            c.script(f"evaluate_{precision}", ["eval/evaluate.py", "--model", str(model), "--schedule", str(schedule),
                                               "--num-samples", str(c.s.eval_samples), "--mixed-precision", precision,
                                               "--output-dir", str(folder)]
                     + ([] if c.s.inception else ["--no-inception"]))
            report = _expect(folder / "report.json", device="cuda", mixed_precision=precision)
            if not all(np.isfinite(v) for v in report["metrics"].values() if isinstance(v, float)):
                raise AssertionError(f"non-finite metrics: {report['metrics']}")
            return dict(metrics=report["metrics"], speedup=report["speedup"], fidelity=report["fidelity"])

        reports[precision] = c.stage(f"evaluate_{precision}", run)
    return reports


def run_gpu_check(s: GpuCheckSettings = GpuCheckSettings()) -> dict:
    """Run the check (see the module docstring) and write ``OUT/gpu_check.json``; ``status`` is ``"skipped"``
    without CUDA (nothing is run or written), else ``"pass"`` or ``"fail"``."""
    if not torch.cuda.is_available():
        return dict(status="skipped")
    from .utils import atomic_write_json

    c = _Check(s)
    run, model, schedule = c.out / "train", c.out / "train" / "model", c.out / "search" / "schedule.json"
    c.stage("train", lambda: c.script("train", ["train/train_slimmable.py", "--config", str(
        _small_config(s, c.out / "gpu_check.yaml")), "--output-dir", str(run), "--no-progress"]))
    c.stage("search", lambda: c.script("search", [
        "search/evolve.py", "--model", str(model), "--budget", "0.6", "--metric", "domain_fid", "--steps",
        str(s.steps), "--segments", str(s.steps), "--population", "6", "--generations", "2", "--num-samples", "16",
        "--final-samples", "32", "--top-k", "2", "--output", str(schedule)]))
    comparisons = _sample_stages(c, model, schedule)
    reports = _evaluate_stages(c, model, schedule)
    widths = c.stage("width_times", lambda: _width_times(s))
    ok = all(st["ok"] for st in c.stages.values()) and all(v["ok"] for v in comparisons.values())
    result = dict(format="ddsm-gpu-check", version=1, status="pass" if ok else "fail",
                  device=torch.cuda.get_device_name(0), torch=torch.__version__, seconds=time.perf_counter() - c.start,
                  tf32=dict(cudnn=torch.backends.cudnn.allow_tf32, matmul=torch.backends.cuda.matmul.allow_tf32),
                  stages=c.stages, comparisons=comparisons, evaluate=reports, widths=widths, settings=asdict(s),
                  json=str(c.out / "gpu_check.json"))
    atomic_write_json(c.out / "gpu_check.json", result)
    return result
