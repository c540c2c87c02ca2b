"""Benchmark: the searched step-aware schedule against the other ways to spend less compute, at equal MACs budgets.

At every budget ``b`` (a fraction of the full model's UNet MACs: width 1.0 at all ``N`` steps), each method below is
sampled on the SAME evaluation seeds (held out from the search seeds: 10000.. by default) in one process, and
measured by the MACs it actually spent per image, FID (Inception and/or the domain features), fidelity to the full
model (PSNR / SSIM on the same seeds) and its wall-clock speed-up over the full model:

=====================  ==========================================================================================
``full``               width 1.0 at all ``N`` steps (sampled once; the reference for fidelity and speed-up)
``uniform``            the widest width ``w`` with ``MACs(w) <= b * MACs(1.0)``, at every step
``fewer_steps``        width 1.0 with ``floor(b * N)`` steps
``tstitch_supernet``   T-Stitch: the supernet's smallest width for the first steps, width 1.0 after; the fewest
                       small steps that meet the budget
``tstitch_dense``      the same ramp with a separately trained small dense model for the first steps
                       (:class:`StitchedUNet` routes a pseudo-width to it; its MACs table is passed explicitly)
``adaptive``           AdaptiveDiffusion skipping at width 1.0; ``delta`` bisected on calibration seeds so the
                       MACs actually spent meet the budget (:func:`tune_skip_delta`)
``stepsaver``          StepSaver per-class step counts (fit on calibration seeds; the threshold lowered on the
                       stored SSIM curves when needed to meet the budget)
``ddsm``               the searched schedule for this budget (its label says which search: widths + skips, or
                       widths only when that is the only kind given)
``ddsm_widths``        the schedule searched without skip genes (provenance ``search.allow_skip`` false), reported
                       only when schedules of the other kind are given too; at a fixed step count it isolates what
                       choosing widths per step adds to DDIM
``ddsm_adaptive``      a searched schedule plus AdaptiveDiffusion skipping: the schedule of the next larger budget
                       with ``delta`` tuned to this budget when one is available, else this budget's schedule with a
                       fixed ``delta`` (the extra saving is then reported as it comes)
=====================  ==========================================================================================

Methods whose cost depends on the data (skipping) are tuned on calibration seeds and measured on the evaluation
seeds; the report says when the evaluation seeds spent more than the budget (by how much, and whether it is within
one full-width step's MACs, ``1 / N`` of the full cost, the quantum of any step-based method).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..version import __version__
from ..schedules import Schedule
from ..baselines import StepSaver, StitchedUNet
from ..runtime import model_device, runtime_record
from .job import METHODS, BenchmarkJob
from .measure import BenchmarkMetrics, report_notes, row_report
from .methods import METHOD_RUNNERS, BenchmarkSampler, MethodContext, MethodRow
from .schedules import assign_schedules, on_benchmark_steps

__all__ = ["FORMAT", "VERSION", "run_benchmark"]

FORMAT = "ddsm-benchmark"
VERSION = 1


def run_benchmark(model, job: BenchmarkJob, *, schedules: Sequence[Tuple[str, Schedule]] = (), small_dense=None,
                  stepsaver: Optional[StepSaver] = None, autoencoder=None, model_path: Optional[str] = None,
                  accelerator=None, progress: bool = True) -> Tuple[dict, Dict[str, Any]]:
    """Sample and measure every method at every budget of ``job``; returns (report, artefacts).

    ``schedules`` are (path, Schedule) pairs (:func:`load_schedules`); ``small_dense`` a SlimmableUNet for the
    T-Stitch dense ramp (None: that method is reported unavailable); ``stepsaver`` a fitted StepSaver (None: fit
    one on the calibration seeds, returned in ``artefacts["stepsaver"]``). ``accelerator`` (seeds split across its
    processes, its mixed precision) goes to every sampling run; the feature networks run on ``model``'s device.
    """
    from tqdm.auto import tqdm

    from ..models import macs_table

    model = model.eval()
    table = {float(w): float(m) for w, m in macs_table(model).items()}
    full_w = max(model.width_choices)
    N = job.num_steps
    sampler = BenchmarkSampler(model, job, autoencoder, table, accelerator)
    stitched = StitchedUNet(model, small_dense.eval(), large_macs=table[full_w]) if small_dense is not None else None
    assignment = assign_schedules(schedules, job.budgets, table)
    checked = {e.path: on_benchmark_steps(e.schedule, job) for e in assignment.entries}
    # ddsm_widths only beside schedules of the other kind (then ddsm holds those, ddsm_widths the widths-only ones)
    methods = {m: run for m, run in METHOD_RUNNERS.items() if m != "ddsm_widths" or m in assignment.slots}

    # one unit per method and budget, plus the full model and StepSaver's labelling; the metrics get their own bar
    total = 1 + 1 + len(job.budgets) * len(methods)
    bar = tqdm(total=total, desc="sampling", unit="run", disable=not progress)

    def step(text: str):
        bar.set_postfix_str(text, refresh=True)

    step("warm-up, full model")
    sampler.sample([full_w] * N, calibration=True)  # first-call overheads out of the timings
    if stitched is not None:
        sampler.sample([stitched.small_width] + [full_w] * (N - 1), net=stitched, table=stitched.macs_table,
                       calibration=True)
    full = sampler.evaluate([full_w] * N)
    bar.update(1)

    weights = Counter(sampler.labels if sampler.labels is not None else [None] * job.num_samples)
    if stepsaver is None:
        step("StepSaver labelling")
        stepsaver = _fit_stepsaver(model, job, full_w, autoencoder, accelerator)
    bar.update(1)

    rows: Dict[float, List[MethodRow]] = {}
    for b in job.budgets:
        ctx = MethodContext(b, sampler, job, table, stitched, stepsaver, weights, assignment, checked)
        rows[b] = []
        for method, run in methods.items():
            step(f"budget {b:g}: {METHODS[method]}")
            rows[b].append(run(MethodRow(method, b, METHODS[method]), ctx))
            bar.update(1)

    bar.close()

    # the feature networks and their reference statistics, on the model's device
    metrics = BenchmarkMetrics(job, full.images, progress=progress, device=model_device(model))
    full_row = MethodRow("full", None, f"width {full_w:g}, {N} steps", params=dict(width=full_w, steps=N),
                         result=full)
    every_row = [full_row] + [r for b in job.budgets for r in rows[b]]
    measured = {id(r): row_report(r, full, metrics, job)
                for r in tqdm(every_row, desc="metrics", unit="run", disable=not progress)}
    report_rows = {b: [measured[id(r)] for r in rs] for b, rs in rows.items()}
    full_report = measured[id(full_row)]

    report = dict(
        format=FORMAT, version=VERSION, tool_version=__version__,
        model=dict(path=model_path, config_sha256=model.config_sha256, width_choices=list(model.width_choices),
                   macs_per_width={str(w): m for w, m in sorted(table.items())}),
        small_dense=_small_dense_record(stitched, small_dense),
        scheduler=job.scheduler_name, scheduler_config=dict(job.scheduler_config), num_steps=N,
        num_samples=job.num_samples,
        seeds=[job.seed, job.seed + job.num_samples - 1],
        calibration_seeds=[job.calibration_seed, job.calibration_seed + job.calibration_samples - 1],
        stepsaver_seeds=[job.calibration_seed, job.calibration_seed + job.stepsaver_samples - 1],
        dataset=job.dataset, resolution=int(full.images.shape[-1]), guidance_scale=job.guidance_scale,
        **runtime_record(model, accelerator), metrics=metrics.describe(), full=full_report,
        budgets=[dict(budget=b, methods=report_rows[b]) for b in job.budgets],
        job={k: v for k, v in asdict(job).items() if k != "scheduler_config"},
        stepsaver=dict(threshold=stepsaver.threshold, rule=stepsaver.rule, candidates=list(stepsaver.candidates),
                       reference_steps=stepsaver.reference_steps,
                       steps={str(c): s for c, s in stepsaver.steps.items()}),
    )
    report["notes"] = report_notes(report, job)
    return report, {"stepsaver": stepsaver}


def _fit_stepsaver(model, job: BenchmarkJob, width: float, autoencoder, accelerator) -> StepSaver:
    """StepSaver's per-class step counts, labelled at ``width`` on the first calibration seeds."""
    candidates = sorted({c for c in job.stepsaver_candidates if c <= job.num_steps} | {job.num_steps})
    return StepSaver.fit(model, job.scheduler_name, job.scheduler_config,
                         seeds=range(job.calibration_seed, job.calibration_seed + job.stepsaver_samples),
                         candidates=candidates, reference_steps=job.stepsaver_reference_steps,
                         threshold=job.stepsaver_threshold, width=width, guidance_scale=job.guidance_scale,
                         batch_size=job.batch_size, autoencoder=autoencoder, accelerator=accelerator,
                         progress=False)


def _small_dense_record(stitched: Optional[StitchedUNet], small_dense) -> Optional[dict]:
    """The small dense model of the T-Stitch ramp in the report (None when none was given)."""
    if stitched is None:
        return None
    return dict(macs=stitched.small_macs, macs_ratio=stitched.small_macs / stitched.large_macs,
                config_sha256=small_dense.config_sha256)
