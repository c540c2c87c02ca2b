"""Each method's row at one budget: its setting for the budget, a label and note, and its images sampled on the
evaluation seeds by a shared :class:`BenchmarkSampler` (identical runs are done once)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from ..sampling import SampleResult, SkipPolicy, balanced_labels, build_scheduler, sample
from ..schedules import Schedule
from ..baselines import (SkipTuning, StepSaver, StitchedUNet, fewer_steps_for_budget, ramp_for_budget,
                         sample_per_condition, tune_skip_delta, uniform_width_for_budget)
from .job import BenchmarkJob
from .schedules import ScheduleAssignment

__all__ = ["MethodRow", "BenchmarkSampler", "MethodContext", "METHOD_RUNNERS"]


@dataclass
class MethodRow:
    """One method at one budget: what it ran (``label``, ``params``) and how it went (``status``, ``note``,
    ``result``); :func:`ddsm.benchmark.measure.row_report` turns it into a report row."""

    method: str
    budget: Optional[float]
    label: str
    status: str = "ok"                     # ok | infeasible | unavailable
    note: str = ""
    params: Dict[str, Any] = field(default_factory=dict)
    result: Any = None                     # SampleResult or StepSaverSampleResult

    def unavailable(self, why: str, status: str = "unavailable") -> "MethodRow":
        self.status, self.note = status, why
        return self


class BenchmarkSampler:
    """Samples on the evaluation seeds with a shared scheduler setup; identical runs are done once.

    Args:
        model: The supernet (a SlimmableUNet).
        job: The benchmark's settings: seeds, scheduler, guidance, batch size.
        autoencoder: The latent decoder, or None for a pixel-space model.
        table: ``{width: MACs per forward}`` of ``model``.
        accelerator: An ``accelerate.Accelerator``: seeds split across its processes, its mixed precision.
    """

    def __init__(self, model, job: BenchmarkJob, autoencoder, table, accelerator=None):
        self.model, self.job, self.autoencoder, self.table = model, job, autoencoder, table
        self.accelerator = accelerator
        self.labels = balanced_labels(model, job.num_samples)
        self.cal_labels = balanced_labels(model, job.calibration_samples)
        self.cache: Dict[Any, Any] = {}

    def sample(self, widths: Sequence[float], *, net=None, skip: Optional[SkipPolicy] = None, table=None,
               calibration: bool = False) -> SampleResult:
        """Sample ``widths`` (one per step) on the evaluation seeds, or the calibration seeds, with ``net``
        (default: the supernet), skipping by ``skip`` and counting MACs with ``table`` (default: the supernet's)."""
        net = net if net is not None else self.model
        seeds = self.job.calibration_seeds if calibration else self.job.seeds
        labels = self.cal_labels if calibration else self.labels
        return sample(net, build_scheduler(self.job.scheduler_name, self.job.scheduler_config),
                      [float(w) for w in widths], seeds=seeds, class_labels=labels,
                      guidance_scale=self.job.guidance_scale, batch_size=self.job.batch_size, skip_policy=skip,
                      autoencoder=self.autoencoder, macs_table=table or self.table, accelerator=self.accelerator,
                      progress=False)

    def cached(self, key, make: Callable[[], Any]):
        """``make()``, called once per ``key``."""
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def evaluate(self, widths: Sequence[float], *, net=None, skip: Optional[SkipPolicy] = None, table=None):
        """:meth:`sample` on the evaluation seeds, once per distinct (network, widths, skip policy)."""
        key = (id(net), tuple(float(w) for w in widths),
               None if skip is None else (skip.delta, skip.max_consecutive, skip.min_computed))
        return self.cached(key, lambda: self.sample(widths, net=net, skip=skip, table=table))

    def calibration_ratio(self, widths: Sequence[float], policy: SkipPolicy) -> float:
        """The MACs ratio to the full model that ``widths`` skipping by ``policy`` spends on the calibration
        seeds."""
        r = self.sample(widths, skip=policy, calibration=True)
        return r.macs_per_image / r.full_macs_per_image


@dataclass
class MethodContext:
    """What every method's row function needs at one budget."""

    budget: float
    sampler: BenchmarkSampler
    job: BenchmarkJob
    table: Dict[float, float]
    stitched: Optional[StitchedUNet]
    stepsaver: StepSaver
    weights: Mapping[Any, float]                           # label frequencies of the evaluation images
    schedules: ScheduleAssignment                          # the searched schedules: which row, which budget
    checked: Dict[str, Tuple[Schedule, bool]]              # path -> (schedule on the benchmark's steps, remapped)

    @property
    def full_w(self) -> float:
        return max(self.table)

    @property
    def N(self) -> int:
        return self.job.num_steps

    def tune(self, widths: Sequence[float]) -> SkipTuning:
        return tune_skip_delta(lambda p: self.sampler.calibration_ratio(widths, p), self.budget,
                               max_consecutive=self.job.skip_max_consecutive, max_allowed_consecutive=self.N,
                               iterations=self.job.bisection_iterations)


def _uniform(row: MethodRow, ctx: MethodContext) -> MethodRow:
    table, full_w, small_w = ctx.table, ctx.full_w, min(ctx.table)
    w = uniform_width_for_budget(table, ctx.budget)
    if w is None:
        return row.unavailable(f"even the narrowest width {small_w:g} costs {table[small_w] / table[full_w]:.3f} "
                               "of full", "infeasible")
    row.label, row.params = f"uniform width {w:g}", dict(width=w, steps=ctx.N)
    row.note = f"widest width whose MACs fit: {w:g} ({table[w] / table[full_w]:.3f} of full per step)"
    row.result = ctx.sampler.evaluate([w] * ctx.N)
    return row


def _fewer_steps(row: MethodRow, ctx: MethodContext) -> MethodRow:
    k = fewer_steps_for_budget(ctx.N, ctx.budget)
    if k == 0:
        return row.unavailable(f"floor({ctx.budget:g} x {ctx.N}) = 0 steps", "infeasible")
    row.label, row.params = f"full width, {k} steps", dict(width=ctx.full_w, steps=k)
    row.note = f"floor({ctx.budget:g} x {ctx.N}) = {k} of {ctx.N} steps"
    row.result = ctx.sampler.evaluate([ctx.full_w] * k)
    return row


def _tstitch(row: MethodRow, ctx: MethodContext) -> MethodRow:
    dense = row.method == "tstitch_dense"
    if dense and ctx.stitched is None:
        return row.unavailable("no --small-dense model given")
    net = ctx.stitched if dense else None
    small, macs = (ctx.stitched.small_width, ctx.stitched.macs_table) if dense else (min(ctx.table), ctx.table)
    full_w, N = ctx.full_w, ctx.N
    n_small = ramp_for_budget(macs[small], macs[full_w], N, ctx.budget)
    if n_small is None:
        return row.unavailable(f"even all {N} steps on the small network cost {macs[small] / macs[full_w]:.3f} of "
                               "full", "infeasible")
    who = "the small dense model" if dense else f"width {small:g}"
    row.label = f"T-Stitch: {n_small}/{N} steps on {who}"
    row.params = dict(small_steps=n_small, steps=N, fraction_small=n_small / N,
                      small_macs_ratio=macs[small] / macs[full_w], **({} if dense else {"small_width": small}))
    row.note = f"first {n_small} of {N} steps on {who}, the rest at width {full_w:g}"
    row.result = ctx.sampler.evaluate([small] * n_small + [full_w] * (N - n_small), net=net,
                                     table=macs if dense else None)
    return row


def _adaptive(row: MethodRow, ctx: MethodContext) -> MethodRow:
    widths = [ctx.full_w] * ctx.N
    tuning = ctx.tune(widths)
    row.params = _tuning_params(tuning)
    row.label = f"AdaptiveDiffusion (delta {tuning.policy.delta:.3g}, C_max {tuning.policy.max_consecutive})"
    row.note = (f"delta bisected on {ctx.job.calibration_samples} calibration seeds: MACs ratio "
                f"{tuning.calibration_ratio:.3f} there")
    if not tuning.met:
        row.note += f"; the budget is out of reach (skipping whenever allowed, C_max {ctx.N})"
    row.result = ctx.sampler.evaluate(widths, skip=tuning.policy)
    return row


def _stepsaver(row: MethodRow, ctx: MethodContext) -> MethodRow:
    job, fitted = ctx.job, ctx.stepsaver
    if ctx.budget * ctx.N < 1:
        return row.unavailable(f"{ctx.budget:g} x {ctx.N} steps is below one step per image", "infeasible")
    chosen = fitted.for_budget(ctx.budget * ctx.N, ctx.weights, fill=job.stepsaver_fill_budget)
    info = chosen.provenance["budget"]
    row.label = f"StepSaver (mean {info['mean_steps']:.1f} steps)"
    row.params = dict(threshold=chosen.threshold, fitted_threshold=fitted.threshold, mode=info["mode"],
                      steps={str(c): s for c, s in chosen.steps.items()}, mean_steps=info["mean_steps"])
    row.note = {"kept": f"fitted counts (SSIM >= {chosen.threshold:.3f}) fit the budget",
                "lowered": f"threshold lowered {fitted.threshold:.3f} -> {chosen.threshold:.3f} to fit",
                "raised": f"threshold raised {fitted.threshold:.3f} -> {chosen.threshold:.3f} to fill",
                "scaled": info.get("note", "")}[info["mode"]]
    sampler = ctx.sampler
    key = ("stepsaver", tuple(sorted((str(c), s) for c, s in chosen.steps.items())))
    row.result = sampler.cached(key, lambda: sample_per_condition(
        sampler.model, job.scheduler_name, job.scheduler_config, chosen, seeds=job.seeds,
        class_labels=sampler.labels, width=ctx.full_w, guidance_scale=job.guidance_scale, batch_size=job.batch_size,
        autoencoder=sampler.autoencoder, macs_table=ctx.table, accelerator=sampler.accelerator))
    return row


_KIND_LABELS = {"skips": "DDSM widths + skips", "widths": "DDSM widths only",
                None: "DDSM searched schedule (allow_skip not recorded, no step skipped)"}


def _ddsm(row: MethodRow, ctx: MethodContext) -> MethodRow:
    """The searched schedule of this budget (``ddsm``; with widths-only schedules beside it, ``ddsm_widths`` is
    the widths-only one)."""
    entry = ctx.schedules.at(row.method, ctx.budget)
    if entry is None:
        kind = "widths-only schedule" if row.method == "ddsm_widths" else "schedule"
        return row.unavailable(f"no searched {kind} for this budget (give --schedule, or --schedules-dir with one "
                               "schedule per budget)")
    schedule, remapped = ctx.checked[entry.path]
    row.label = _KIND_LABELS[entry.kind]
    row.params = dict(schedule=entry.path, kind=entry.kind, remapped=remapped, widths=list(schedule.widths),
                      skipped_steps=sum(1 for w in schedule.widths if w == 0))
    row.note = "/".join(Path(entry.path).parts[-3:]) + (  # enough of the path to tell schedule.json files apart
        f", remapped onto {ctx.N} steps by nearest timestep" if remapped else "")
    row.result = ctx.sampler.evaluate(schedule.widths)
    return row


def _ddsm_adaptive(row: MethodRow, ctx: MethodContext) -> MethodRow:
    """The ``ddsm`` row's schedules plus AdaptiveDiffusion skipping."""
    b, job = ctx.budget, ctx.job
    larger = ctx.schedules.above("ddsm", b)
    here = ctx.schedules.at("ddsm", b)
    if larger:  # the next larger budget's schedule, skipping tuned down to this budget
        entry = larger[0]
        schedule, remapped = ctx.checked[entry.path]
        tuning = ctx.tune(schedule.widths)
        policy, params = tuning.policy, dict(_tuning_params(tuning), base_budget=entry.budget)
        row.note = (f"schedule for budget {entry.budget:g} + skipping, delta bisected to this budget on "
                    f"{job.calibration_samples} calibration seeds (ratio {tuning.calibration_ratio:.3f} there)")
        if not tuning.met:
            row.note += "; the budget is out of reach"
    elif here is not None:  # nothing to tune from: this budget's schedule with a fixed delta
        entry = here
        schedule, remapped = ctx.checked[entry.path]
        policy = SkipPolicy(delta=job.ddsm_skip_delta, max_consecutive=job.skip_max_consecutive)
        params = dict(delta=policy.delta, max_consecutive=policy.max_consecutive, base_budget=b, tuned=False)
        row.note = (f"this budget's schedule + skipping with fixed delta {policy.delta:g} (no schedule for a larger "
                    "budget to tune from)")
    else:
        return row.unavailable("no searched schedule for this budget or a larger one")
    row.label = f"DDSM + AdaptiveDiffusion (delta {policy.delta:.3g})"
    row.params = dict(params, schedule=entry.path, kind=entry.kind, remapped=remapped)
    row.result = ctx.sampler.evaluate(schedule.widths, skip=policy)
    return row


# in report order; tstitch_dense and tstitch_supernet share a function, so do ddsm and ddsm_widths
# (ddsm_widths is reported only beside schedules of the other kind: ScheduleAssignment.slots)
METHOD_RUNNERS: Dict[str, Callable[[MethodRow, MethodContext], MethodRow]] = {
    "uniform": _uniform, "fewer_steps": _fewer_steps, "tstitch_supernet": _tstitch, "tstitch_dense": _tstitch,
    "adaptive": _adaptive, "stepsaver": _stepsaver, "ddsm": _ddsm, "ddsm_widths": _ddsm,
    "ddsm_adaptive": _ddsm_adaptive,
}


def _tuning_params(t: SkipTuning) -> dict:
    """A tuned skip policy as a report row's ``params``."""
    return dict(delta=t.policy.delta, max_consecutive=t.policy.max_consecutive, calibration_ratio=t.calibration_ratio,
                tuned=True, met_on_calibration=t.met, trials=[list(x) for x in t.trials])
