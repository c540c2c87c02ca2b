"""A whole search run: build the space and the evaluator, evolve, score baselines, write every output.

Outputs in the output directory (``schedule.json``'s folder):

    schedule.json   the best schedule (ddsm-schedule format, MACs, metrics and provenance filled)
    pareto.json     every final candidate and the baselines (quality vs MACs), the rungs of the final choice
                    (successive halving: who was scored on which N) and the UNet forwards spent (the full model's
                    reference images of fidelity / teacher_fid included)
    pareto.png      the same as a plot, with the uniform-width and fewer-steps baselines
    schedule.png    width per step of the best schedule
    log.csv         one row per generation
    checkpoint.json the search state after the last finished generation, with the objective its scores were
                    measured under (--resume continues from it, and only for the same objective)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from ..version import __version__
from ..evaluation import METRICS, FeatureSpace, ScheduleEvaluator
from ..models import macs_table
from ..sampling import build_scheduler
from ..schedules import Schedule
from .evolution import SearchResult, SearchSettings, evolve
from .fingerprint import search_objective
from .space import SearchError, SearchSpace
from ..images import new_figure, save_figure
from ..runtime import model_device
from ..utils import atomic_write_json

__all__ = ["SearchJob", "run_search", "plot_pareto", "plot_schedule", "metric_features", "DDSM_SEARCH_FORWARDS"]

DDSM_SEARCH_FORWARDS = 500 * 4096 * 1000
"""UNet forwards of the DDSM paper's search (Wang et al., ICLR 2024): about 500 candidates x 4,096 images x 1,000
DDPM steps, ~2.0e9; printed beside a search's own count."""


@dataclass(frozen=True)
class SearchJob:
    """Everything a search run needs besides the model (the CLI fills it from flags and the config)."""

    output: str                        # path of the schedule JSON; other outputs go beside it
    budget: Optional[float] = 0.5      # fraction of the full-width MACs of the same scheduler and step count
    budget_macs: Optional[int] = None  # or an absolute MACs budget per image
    metric: str = "domain_fid"
    mode: str = "single"
    scheduler: str = "DDIMScheduler"
    num_steps: int = 50
    allow_skip: bool = False
    segments: Optional[int] = None
    population: int = 24
    generations: int = 12
    num_samples: int = 256
    final_samples: int = 1024
    top_k: int = 4
    halving_eta: int = 1               # >= 2: successive halving from num_samples to final_samples
    crossover_prob: float = 0.7
    mutation_prob: float = 0.3
    mutation_gene_prob: float = 0.1
    seed: int = 0
    sample_seed: int = 0               # search samples use seeds sample_seed .. sample_seed + N - 1
    dataset: str = "mnist-5k"
    data_root: Optional[str] = None
    guidance_scale: float = 1.0
    batch_size: int = 64
    baselines: bool = True
    resume: bool = False

    def __post_init__(self):
        if self.metric not in METRICS:
            raise SearchError(f"--metric {self.metric!r} is unknown; expected one of {list(METRICS)}")
        if self.budget_macs is None and (self.budget is None or not 0 < self.budget <= 1):
            raise SearchError(f"--budget {self.budget} is out of range: expected a fraction in (0, 1]")
        if self.budget_macs is not None and self.budget_macs <= 0:
            raise SearchError(f"--budget-macs {self.budget_macs}: expected a positive number of MACs")
        if self.num_steps <= 0:
            raise SearchError(f"--steps {self.num_steps}: expected a positive int")


def run_search(model, job: SearchJob, scheduler_config: dict, accelerator=None, autoencoder=None,
               progress: bool = True) -> dict:
    """Run ``job`` on ``model`` and write the outputs; returns a summary dict."""
    is_main = accelerator is None or accelerator.is_main_process
    out = Path(job.output)
    folder = out.parent
    table = macs_table(model)
    space = SearchSpace.build(table, job.num_steps, allow_skip=job.allow_skip, segments=job.segments)
    budget = int(job.budget_macs if job.budget_macs is not None else job.budget * space.full_cost)
    settings = SearchSettings(budget_macs=budget, mode=job.mode, population=job.population,
                              generations=job.generations, crossover_prob=job.crossover_prob,
                              mutation_prob=job.mutation_prob, mutation_gene_prob=job.mutation_gene_prob,
                              num_samples=job.num_samples, final_samples=job.final_samples, top_k=job.top_k,
                              seed=job.seed, halving_eta=job.halving_eta)
    cheapest = space.cost(space.cheapest())
    if budget < cheapest:
        raise SearchError(f"budget {budget} MACs ({budget / space.full_cost:.3f} of full) is below the cheapest "
                          f"schedule, {cheapest} MACs ({cheapest / space.full_cost:.3f} of full)")

    features = metric_features(job.metric, model, job.dataset, autoencoder=autoencoder, root=job.data_root,
                               progress=progress and is_main)
    evaluator = ScheduleEvaluator(model, job.scheduler, scheduler_config, job.num_steps, job.metric, features,
                                  seed=job.sample_seed, guidance_scale=job.guidance_scale,
                                  batch_size=job.batch_size, autoencoder=autoencoder, accelerator=accelerator)
    scheduler = build_scheduler(job.scheduler, scheduler_config)
    objective = search_objective(job, model, scheduler, features, autoencoder,
                                 mixed_precision=getattr(accelerator, "mixed_precision", "no"))
    start = time.perf_counter()
    result = evolve(space, evaluator, settings, checkpoint=folder / "checkpoint.json", resume=job.resume,
                    log_csv=folder / "log.csv", progress=progress and is_main, metric_name=evaluator.metric_name,
                    write=is_main, objective=objective)
    seconds = time.perf_counter() - start

    baselines = _baselines(space, evaluator, settings, progress and is_main) if job.baselines else []
    summary = _summary(result, baselines, seconds, job, evaluator)
    if is_main:
        schedule = Schedule.from_widths(model, scheduler, result.best.widths, num_inference_steps=job.num_steps)
        metrics = dict(metric=job.metric, value=result.best.quality, metric_name=evaluator.metric_name,
                       num_samples=result.best.num_samples, sample_seeds=[job.sample_seed,
                                                                          job.sample_seed + result.best.num_samples - 1])
        if job.metric in ("domain_fid", "inception_fid"):
            metrics.update(fid=result.best.quality, fid_features=features.name)
        provenance = dict(tool_version=__version__, search=dict(
            budget=job.budget if job.budget_macs is None else None, budget_macs=budget, seed=job.seed,
            generations=job.generations, population=job.population, mode=job.mode, metric=job.metric,
            evaluations=result.evaluations, memo_hits=result.memo_hits, unet_forwards=result.unet_forwards,
            seconds=seconds, halving_eta=job.halving_eta, rungs=[r.num_samples for r in result.rungs],
            allow_skip=job.allow_skip, segments=job.segments, num_samples=job.num_samples,
            final_samples=job.final_samples, top_k=job.top_k))
        schedule = schedule.with_macs(table).with_metrics(metrics).with_provenance(provenance)
        schedule.save(out)
        atomic_write_json(folder / "pareto.json", summary)
        plot_pareto(summary, folder / "pareto.png")
        plot_schedule(schedule, folder / "schedule.png")
    return summary


def metric_features(metric: str, model, dataset: str, autoencoder=None, root: Optional[str] = None,
                    progress: bool = True, **inception_kw) -> Optional[FeatureSpace]:
    """The feature space ``metric`` scores in (None for ``fidelity``), at the resolution and channels of the model's
    images (decoded ones for a latent model), on the model's device, its reference statistics computed or loaded
    now (before any clock starts). ``inception_kw`` go to :meth:`FeatureSpace.inception` (weights,
    reference_samples)."""
    if metric == "fidelity":
        return None
    channels = model.config.out_channels if autoencoder is None else autoencoder.config.out_channels
    res = model.config.sample_size * (1 if autoencoder is None else
                                      2 ** (len(autoencoder.config.block_out_channels) - 1))
    if metric == "inception_fid":
        features = FeatureSpace.inception(dataset, res, channels, progress=progress, root=root,
                                          device=model_device(model), **inception_kw)
    else:
        features = FeatureSpace.domain(dataset, res, channels, progress=progress, root=root,
                                       device=model_device(model))
    features.reference  # compute (or load) now
    return features


def _baselines(space: SearchSpace, evaluator: ScheduleEvaluator, settings: SearchSettings, progress: bool):
    """Uniform widths and fewer full-width steps, scored with the same metric, seeds and N as the final choice."""
    from tqdm.auto import tqdm

    n = settings.final_samples
    points = []
    widths = [w for w, _ in space.macs]
    full = space.macs[-1][1]
    jobs = [("uniform", f"uniform {w:g}", [w] * space.num_steps) for w in widths]
    for frac in (0.25, 0.5, 0.75):
        k = max(1, round(frac * space.num_steps))
        if k < space.num_steps:
            jobs.append(("fewer_steps", f"full width, {k} steps", [widths[-1]] * k))
    for kind, label, ws in tqdm(jobs, desc="baselines", disable=not progress, leave=False):
        q, _ = evaluator(ws, n)
        macs = sum(space.width_macs(w) for w in ws)
        points.append(dict(kind=kind, label=label, widths=ws, macs=macs, macs_ratio=macs / (full * space.num_steps),
                           quality=q, num_samples=n))
    return points


def _summary(result: SearchResult, baselines, seconds, job: SearchJob, evaluator) -> dict:
    full = result.space.full_cost

    def cand(c):
        return dict(widths=c.widths, macs=c.macs, macs_ratio=c.macs / full, quality=c.quality,
                    num_samples=c.num_samples)

    return dict(metric=job.metric, metric_name=evaluator.metric_name, mode=job.mode,
                budget_macs=result.settings.budget_macs, budget_ratio=result.settings.budget_macs / full,
                best=cand(result.best), front=[cand(c) for c in result.front], baselines=baselines,
                search_seconds=seconds, evaluations=result.evaluations, memo_hits=result.memo_hits,
                images_sampled=result.images_sampled, unet_forwards=result.unet_forwards,
                rungs=[r.to_dict(full) for r in result.rungs], ddsm_search_forwards=DDSM_SEARCH_FORWARDS,
                settings=asdict(result.settings), scheduler=job.scheduler, num_steps=job.num_steps)


def plot_pareto(summary: dict, path) -> Path:
    fig, ax = new_figure(figsize=(6.4, 4.4))
    front = sorted(summary["front"], key=lambda c: c["macs_ratio"])
    ax.plot([c["macs_ratio"] for c in front], [c["quality"] for c in front], "o-", color="tab:blue",
            label="searched" + (" (Pareto front)" if summary["mode"] == "nsga2" else " (top candidates)"))
    best = summary["best"]
    ax.plot([best["macs_ratio"]], [best["quality"]], "*", ms=16, color="tab:red", label="chosen schedule")
    styles = {"uniform": ("s", "tab:gray"), "fewer_steps": ("^", "tab:green")}
    for kind, (marker, color) in styles.items():
        pts = [b for b in summary["baselines"] if b["kind"] == kind]
        if pts:
            ax.plot([b["macs_ratio"] for b in pts], [b["quality"] for b in pts], marker, color=color, ls="none",
                    label="uniform width" if kind == "uniform" else "full width, fewer steps")
            for b in pts:
                ax.annotate(b["label"].replace("full width, ", ""), (b["macs_ratio"], b["quality"]), fontsize=7,
                            xytext=(4, 3), textcoords="offset points")
    ax.axvline(summary["budget_ratio"], color="tab:red", ls=":", lw=1, label="budget")
    ax.set_xlabel("MACs / full-width MACs (same scheduler)")
    ax.set_ylabel(summary["metric_name"] + " (lower is better)")
    ax.set_title(f"{summary['scheduler']}, {summary['num_steps']} steps")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_schedule(schedule: Schedule, path) -> Path:
    fig, ax = new_figure(figsize=(7, 3))
    steps = list(range(len(schedule)))
    ax.step(steps, schedule.widths, where="mid", color="tab:blue")
    ax.fill_between(steps, schedule.widths, step="mid", alpha=0.2)
    ax.set_yticks(sorted(set(schedule.width_choices) | {0.0}))
    ax.set_xlabel("sampling step (high noise -> low noise)")
    ax.set_ylabel("width")
    ratio = f", {schedule.macs['ratio']:.2f} of full MACs" if schedule.macs else ""
    ax.set_title(f"{schedule.scheduler_class_name or ''} {len(schedule)} steps{ratio}")
    sec = ax.secondary_xaxis("top", functions=(lambda s: s, lambda s: s))
    ticks = steps[:: max(1, len(steps) // 6)]
    sec.set_xticks(ticks)
    sec.set_xticklabels([f"t={schedule.timesteps[i]:g}" for i in ticks], fontsize=7)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
