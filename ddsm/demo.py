"""The whole pipeline on the embedded data, stage by stage: train -> search -> evaluate -> report.

Each stage is skipped when its final output already exists (``force`` redoes everything), and training and
search resume from their checkpoints when a previous run was interrupted, so a second ``make demo`` is quick and a
killed one loses little.

    OUT/train/      the training run (model/, scheduler/, config.yaml, log.jsonl, samples/*.png, checkpoints/)
    OUT/search/     schedule.json, pareto.json/png, schedule.png, log.csv, checkpoint.json
    OUT/frontier/   every peer method against DDSM (widths only, widths + skips) over step counts x budgets at
                    the demo's own small N, domain FID: frontier.md/json, frontier_steps{S}.png (eval/frontier.py)
    OUT/            report.md (the numbers and what they mean), report.json, grid.png (full vs step-aware,
                    same seeds), pareto.png, schedule.png, frontier_steps{S}.png, timings.json
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from .utils import atomic_write, atomic_write_json

__all__ = ["DemoSettings", "run_demo"]


@dataclass(frozen=True)
class DemoSettings:
    config: str = "configs/mnist.yaml"
    output_dir: str = "runs/demo"
    max_steps: Optional[int] = None        # training steps (default: the config's)
    eval_samples: int = 250                # images per run in the final evaluation (held-out seeds)
    inception_reference: int = 500         # real images for the Inception reference statistics
    inception: bool = False                # Inception FID in the final evaluation too (slow on a CPU)
    frontier: bool = True                  # the frontier stage (small searches, domain FID only)
    frontier_steps: Tuple[int, ...] = (25,)
    frontier_budgets: Tuple[float, ...] = (0.35, 0.5, 0.7)
    frontier_samples: int = 100            # held-out images per method and point
    force: bool = False
    progress: bool = True


def _stage(name: str, done: Callable[[], bool], run: Callable[[], None], timings: Dict[str, float],
           force: bool) -> None:
    if done() and not force:
        print(f"[demo] {name}: done before, reused (make demo FORCE=1 redoes it)")
        timings[name] = 0.0
        return
    print(f"[demo] {name} ...")
    start = time.perf_counter()
    run()
    timings[name] = time.perf_counter() - start
    print(f"[demo] {name}: {timings[name] / 60:.1f} min")


def run_demo(s: DemoSettings) -> Path:
    import torch

    from .config import load_config
    from .evaluation import evaluate_schedule, write_report
    from .schedules import Schedule
    from .search import SearchJob, run_search
    from .models import SlimmableUNet
    from .runtime import make_accelerator

    out = Path(s.output_dir)
    train_dir, search_dir = out / "train", out / "search"
    config = load_config(s.config)
    timings: Dict[str, float] = {}
    total = time.perf_counter()

    def train():
        from .training import SlimmableTrainer

        if s.force and train_dir.exists():
            shutil.rmtree(train_dir)
        resume = (train_dir / "checkpoints").is_dir()
        SlimmableTrainer(config, train_dir, resume=resume, max_steps=s.max_steps, progress=s.progress).train()

    _stage("train", lambda: (train_dir / "model" / "config.json").is_file(), train, timings, s.force)
    model_dir = train_dir / "model"
    accelerator = make_accelerator()  # search and evaluation on CUDA when there is a GPU
    model = SlimmableUNet.from_pretrained(model_dir).eval().to(accelerator.device)
    cfg = config  # search, sampling and data settings come from the demo's config file, not the training run's
    sc, smp = cfg.search, cfg.sampling

    def search():
        job = SearchJob(output=str(search_dir / "schedule.json"), budget=sc.budget, metric=sc.metric,
                        scheduler=smp.scheduler, num_steps=smp.num_inference_steps, allow_skip=sc.allow_skip,
                        segments=sc.segments, population=sc.population, generations=sc.generations,
                        num_samples=sc.num_samples, final_samples=sc.final_samples, top_k=sc.top_k,
                        halving_eta=sc.halving_eta,
                        crossover_prob=sc.crossover_prob, mutation_prob=sc.mutation_prob,
                        mutation_gene_prob=sc.mutation_gene_prob, seed=sc.seed, dataset=cfg.data.name,
                        data_root=cfg.data.root, guidance_scale=smp.guidance_scale, batch_size=smp.batch_size,
                        resume=not s.force and (search_dir / "checkpoint.json").is_file())
        run_search(model, job, cfg.diffusion.scheduler_config(), accelerator=accelerator, progress=s.progress)

    _stage("search", lambda: (search_dir / "schedule.json").is_file(), search, timings, s.force)
    schedule = Schedule.load(search_dir / "schedule.json", model=model)

    def evaluate():
        report, full, ours = evaluate_schedule(
            model, schedule, num_samples=s.eval_samples, dataset=cfg.data.name, inception=s.inception,
            guidance_scale=smp.guidance_scale, batch_size=smp.batch_size, progress=s.progress,
            data_root=cfg.data.root, inception_reference_samples=s.inception_reference, accelerator=accelerator)
        write_report(report, full, ours, out / "eval")

    _stage("evaluate", lambda: (out / "eval" / "report.json").is_file(), evaluate, timings, s.force)
    if s.frontier:
        _stage("frontier", lambda: (out / "frontier" / "frontier.json").is_file(),
               lambda: _run_frontier(model, cfg, s, out / "frontier", accelerator), timings, s.force)
        for png in sorted((out / "frontier").glob("frontier_steps*.png")):
            shutil.copyfile(png, out / png.name)
    for name in ("pareto.png", "schedule.png"):
        shutil.copyfile(search_dir / name, out / name)
    shutil.copyfile(out / "eval" / "grid.png", out / "grid.png")
    widths_png = _latest_width_grids(train_dir)
    timings["total_this_run"] = time.perf_counter() - total
    previous = json.loads((out / "timings.json").read_text()) if (out / "timings.json").is_file() else {}
    merged = {k: (v if v > 0 or k not in previous else previous[k]) for k, v in timings.items()}
    atomic_write_json(out / "timings.json", merged)
    report = json.loads((out / "eval" / "report.json").read_text())
    pareto = json.loads((search_dir / "pareto.json").read_text())
    train_log = _final_losses(train_dir / "log.jsonl")
    frontier_md = (out / "frontier" / "frontier.md") if s.frontier else None
    atomic_write(out / "report.md", _demo_markdown(report, pareto, schedule, merged, train_log, widths_png,
                                                   torch.get_num_threads())
                 + _frontier_section(frontier_md, s))
    atomic_write_json(out / "report.json", dict(evaluation=report, search=pareto, timings=merged,
                                                final_losses=train_log))
    print(f"[demo] wrote {out / 'report.md'}")
    return out / "report.md"


def _run_frontier(model, cfg, s: DemoSettings, out: Path, accelerator) -> None:
    """eval/frontier.py at the demo's size: every method at ``frontier_steps`` x ``frontier_budgets`` on
    ``frontier_samples`` held-out seeds, domain FID only, DDSM schedules from small searches (population 6, one
    generation, 32 images, the best two re-scored on 64) with the config's metric."""
    from .benchmark import BenchmarkJob, FrontierJob, run_frontier
    from .search import SearchJob

    smp, sc = cfg.sampling, cfg.search
    bench = BenchmarkJob(budgets=tuple(s.frontier_budgets), num_samples=s.frontier_samples, seed=10_000,
                         num_steps=min(s.frontier_steps), scheduler_name=smp.scheduler,
                         scheduler_config=cfg.diffusion.scheduler_config(), dataset=cfg.data.name,
                         data_root=cfg.data.root, guidance_scale=smp.guidance_scale, batch_size=smp.batch_size,
                         inception=False)
    search = SearchJob(output="schedule.json", budget=max(s.frontier_budgets), metric=sc.metric, mode="single",
                       scheduler=smp.scheduler, num_steps=min(s.frontier_steps), population=6, generations=1,
                       num_samples=32, final_samples=64, top_k=2, seed=sc.seed, dataset=cfg.data.name,
                       data_root=cfg.data.root, guidance_scale=smp.guidance_scale, batch_size=smp.batch_size,
                       baselines=False)
    job = FrontierJob(benchmark=bench, search=search, steps=tuple(s.frontier_steps),
                      reference_steps=max(s.frontier_steps), force=s.force)
    run_frontier(model, job, out, scheduler_config=cfg.diffusion.scheduler_config(), accelerator=accelerator,
                 progress=s.progress, log=lambda line: print(f"[demo] {line}", flush=True))


def _frontier_section(frontier_md: Optional[Path], s: DemoSettings) -> str:
    """The frontier's tables for report.md, its headings one level down, under a label that says how small it is."""
    if frontier_md is None or not frontier_md.is_file():
        return ""
    body = frontier_md.read_text().replace("](", "](frontier/").replace("](frontier/http", "](http")
    body = "\n".join(("#" + line) if line.startswith("#") else line for line in body.splitlines()
                     if not line.startswith("# "))
    plots = " ".join(f"![frontier, {n} steps](frontier_steps{n}.png)" for n in s.frontier_steps)
    return ("\n## Frontier at the demo's size\n\n"
            f"Every method at {len(s.frontier_budgets)} budgets x {len(s.frontier_steps)} step counts on "
            f"{s.frontier_samples} held-out seeds, **domain FID at N = {s.frontier_samples}** (not Inception, and far "
            "below the N >= 1,000 a frontier claim needs), DDSM schedules from deliberately small searches. It shows "
            "the shape of the comparison in minutes; `python eval/frontier.py` runs it at full size.\n\n"
            + plots + "\n\n" + body + "\n")


def _latest_width_grids(train_dir: Path) -> Optional[str]:
    samples = sorted((train_dir / "samples").glob("*.png")) if (train_dir / "samples").is_dir() else []
    return str(samples[-1].relative_to(train_dir.parent)) if samples else None


def _final_losses(log: Path) -> Dict[str, float]:
    if not log.is_file():
        return {}
    last = {}
    for line in log.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        last.update({k: v for k, v in row.items() if k.startswith("loss")})
    return last


def _demo_markdown(r: dict, pareto: dict, schedule, timings: dict, losses: dict, widths_png, threads: int) -> str:
    m = r["metrics"]
    best = pareto["best"]
    acc = m.get("domain_classifier_accuracy")
    widths = sorted(schedule.width_choices)
    lines = [
        "# ddsm demo: a step-aware slimmable UNet", "",
        f"One weight-shared UNet was trained at {len(widths)} widths ({', '.join(f'{w:g}' for w in widths)}) with "
        "the sandwich rule; an evolutionary search then "
        f"chose, for each of the {r['num_steps']} {r['scheduler']} steps, the width to run under a budget of "
        f"{pareto['budget_ratio']:.2f} of the full model's MACs. The table compares that step-aware schedule with "
        f"the full-width model on {r['num_samples']} held-out seeds (seeds the search never saw).", "",
        "| | full width | step-aware |", "|---|---:|---:|",
        f"| MACs per image | {r['full']['macs_per_image'] / 1e6:,.0f} M | {r['step_aware']['macs_per_image'] / 1e6:,.0f} M "
        f"({r['step_aware']['macs_ratio']:.2f}x) |",
        f"| wall clock per image ({threads} thread{'s' if threads > 1 else ''}) | {r['full']['seconds_per_image'] * 1e3:.1f} ms | "
        f"{r['step_aware']['seconds_per_image'] * 1e3:.1f} ms ({r['speedup']:.2f}x faster) |",
    ]
    if "domain_fid_full" in m:
        lines.append(f"| domain FID ({m['domain_features']}) | {m['domain_fid_full']:.2f} | "
                     f"{m['domain_fid_step_aware']:.2f} |")
    if "inception_fid_full" in m:
        lines.append(f"| Inception FID (ref n={m['inception_reference_samples']}) | {m['inception_fid_full']:.2f} | "
                     f"{m['inception_fid_step_aware']:.2f} |")
    lines += [
        f"| fidelity to full (PSNR / SSIM) | - | {r['fidelity']['psnr']:.2f} dB / {r['fidelity']['ssim']:.3f} |", "",
        "What the numbers mean: MACs count one UNet forward per step for one image (fvcore, attention included). "
        "FID at a few hundred samples is biased upwards; compare the two columns, not against published FIDs. "
        "Domain FID uses the features of a small classifier trained on the data set"
        + (f" (held-out accuracy {acc:.3f})" if acc is not None else "") + ", not Inception. Fidelity compares "
        "each image with the full model's image of the same seed.", "",
        f"Search: {pareto['evaluations']} candidate evaluations, {pareto['unet_forwards']:,} single-image UNet "
        f"forwards, {pareto['search_seconds'] / 60:.1f} min; metric {pareto['metric_name']} on "
        f"{best['num_samples']} samples: {best['quality']:.3f} at {best['macs_ratio']:.2f} of full MACs "
        "(DDSM's own search spent about 2e9 forwards).", "",
        "Baselines scored during the search (same metric, seeds and N):", "",
        "| baseline | MACs ratio | quality |", "|---|---:|---:|",
        *[f"| {b['label']} | {b['macs_ratio']:.2f} | {b['quality']:.3f} |" for b in pareto["baselines"]],
        f"| **searched schedule** | {best['macs_ratio']:.2f} | {best['quality']:.3f} |", "",
        "![full width vs step-aware, same seeds](grid.png)", "",
        "![quality vs MACs](pareto.png)", "",
        "![width per step](schedule.png)", "",
    ]
    if widths_png:
        lines += [f"Samples per width from the end of training: `{widths_png}`.", ""]
    if losses:
        lines += ["Final training losses: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(losses.items())), ""]
    lines += ["Stage times (min): " + ", ".join(f"{k} {v / 60:.1f}" for k, v in timings.items()), ""]
    return "\n".join(lines)
