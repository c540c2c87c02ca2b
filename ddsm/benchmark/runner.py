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
``ddsm``               the searched schedule for this budget
``ddsm_adaptive``      a searched schedule plus AdaptiveDiffusion skipping: the schedule of the next larger budget
                       with ``delta`` tuned to this budget when one is available, else this budget's schedule with a
                       fixed ``delta`` (the extra saving is then reported as it comes)
=====================  ==========================================================================================

Methods whose cost depends on the data (skipping) are tuned on calibration seeds and measured on the evaluation
seeds; the report says when the evaluation seeds spent more than the budget (by how much, and whether it is within
one full-width step's MACs, ``1 / N`` of the full cost, the quantum of any step-based method).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..version import __version__
from ..evaluation import FeatureSpace
from ..sampling import SampleResult, SkipPolicy, balanced_labels, build_scheduler, sample
from ..schedules import Schedule, ScheduleError
from ..baselines import DEFAULT_CANDIDATES, StepSaver, StepSaverSampleResult, sample_per_condition
from ..images import new_figure, save_figure
from ..utils import atomic_write, atomic_write_json

__all__ = ["METHODS", "BenchmarkError", "BenchmarkJob", "SkipTuning", "StitchedUNet", "budget_status",
           "uniform_width_for_budget", "fewer_steps_for_budget", "ramp_for_budget", "tune_skip_delta",
           "load_schedules", "assign_schedules", "resolve_sampler", "run_benchmark", "write_benchmark",
           "benchmark_markdown",
           "plot_benchmark"]

FORMAT = "ddsm-benchmark"
VERSION = 1

METHODS = {
    "full": "full model",
    "uniform": "uniform narrower width",
    "fewer_steps": "fewer steps, full width",
    "tstitch_supernet": "T-Stitch ramp (supernet's small width)",
    "tstitch_dense": "T-Stitch ramp (small dense model)",
    "adaptive": "AdaptiveDiffusion skipping",
    "stepsaver": "StepSaver per-class steps",
    "ddsm": "searched DDSM schedule",
    "ddsm_adaptive": "DDSM schedule + AdaptiveDiffusion",
}
BASELINES = [m for m in METHODS if m not in ("full", "ddsm")]
INCEPTION_IMAGES_PER_SECOND_CPU = 6.0  # measured on this project's 2-core CPU machine


class BenchmarkError(ValueError):
    """Benchmark arguments that cannot work (budget out of range, overlapping seeds, incompatible models...)."""


# ----------------------------------------------------------------------------------------------------------------
# The job
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchmarkJob:
    """Everything a benchmark run needs besides the models (the CLI fills it from flags and the run config)."""

    budgets: Tuple[float, ...] = (0.3, 0.5, 0.7)  # fractions of the full model's MACs, each in (0, 1]
    num_samples: int = 256                 # evaluation images per method
    seed: int = 10_000                     # evaluation seeds seed .. seed + num_samples - 1 (held out from search)
    num_steps: int = 50                    # N: the full model's step count
    scheduler_name: str = "DDIMScheduler"
    scheduler_config: Mapping[str, Any] = field(default_factory=dict)
    dataset: str = "mnist-5k"              # reference data for FID
    data_root: Optional[str] = None
    guidance_scale: float = 1.0
    batch_size: int = 64
    calibration_samples: int = 32          # seeds for tuning AdaptiveDiffusion's delta
    calibration_seed: int = 20_000         # calibration seeds start here (disjoint from the evaluation seeds)
    bisection_iterations: int = 12         # bisection steps on log(delta)
    skip_max_consecutive: int = 4          # AdaptiveDiffusion C_max (raised only if the budget needs it)
    ddsm_skip_delta: float = 0.01          # fixed delta for DDSM + skipping when no larger-budget schedule exists
    stepsaver_threshold: float = 0.9       # mean SSIM to the reference that a step count must keep
    stepsaver_reference_steps: int = 100
    stepsaver_candidates: Tuple[int, ...] = DEFAULT_CANDIDATES  # those above N are dropped, N is added
    stepsaver_samples: int = 8             # calibration seeds per class for StepSaver's labels
    stepsaver_fill_budget: bool = False    # raise StepSaver's threshold to use the whole budget
    domain: bool = True                    # domain-feature FID (fast)
    inception: bool = True                 # Inception FID (slow on a CPU: ~6 images/s)
    inception_samples: Optional[int] = None  # images per method for Inception FID (default: num_samples)
    inception_weights: Optional[str] = None
    inception_reference_samples: Optional[int] = None

    def __post_init__(self):
        budgets = tuple(float(b) for b in self.budgets)
        if not budgets:
            raise BenchmarkError("--budgets is empty: give at least one fraction in (0, 1]")
        for b in budgets:
            if not (math.isfinite(b) and 0 < b <= 1):
                raise BenchmarkError(f"--budgets {b:g} is out of range: expected fractions in (0, 1]")
        if len(set(budgets)) != len(budgets):
            raise BenchmarkError(f"--budgets {list(budgets)} has duplicates")
        object.__setattr__(self, "budgets", tuple(sorted(budgets)))
        if self.num_samples < 2:
            raise BenchmarkError(f"--num-samples {self.num_samples}: expected at least 2 (FID needs a covariance)")
        if self.num_steps < 1:
            raise BenchmarkError(f"--steps {self.num_steps}: expected a positive int")
        if self.batch_size < 1:
            raise BenchmarkError(f"--batch-size {self.batch_size}: expected a positive int")
        if self.calibration_samples < 1:
            raise BenchmarkError(f"--calibration-samples {self.calibration_samples}: expected a positive int")
        if self.stepsaver_samples < 1:
            raise BenchmarkError(f"--stepsaver-samples {self.stepsaver_samples}: expected a positive int")
        if self.bisection_iterations < 1:
            raise BenchmarkError(f"bisection_iterations={self.bisection_iterations}: expected a positive int")
        if self.skip_max_consecutive < 1:
            raise BenchmarkError(f"--skip-max {self.skip_max_consecutive}: expected a positive int")
        if not self.ddsm_skip_delta >= 0:
            raise BenchmarkError(f"--ddsm-skip-delta {self.ddsm_skip_delta}: expected a number >= 0")
        candidates = tuple(sorted({int(c) for c in self.stepsaver_candidates}))
        if not candidates or candidates[0] < 1:
            raise BenchmarkError(f"--stepsaver-candidates {list(self.stepsaver_candidates)}: expected positive ints")
        object.__setattr__(self, "stepsaver_candidates", candidates)
        if self.stepsaver_reference_steps < self.num_steps:
            raise BenchmarkError(f"--stepsaver-reference-steps {self.stepsaver_reference_steps} is below --steps "
                                 f"{self.num_steps}: the reference must use at least as many steps as the full model")
        inception_n = self.num_samples if self.inception_samples is None else self.inception_samples
        if self.inception and not 2 <= inception_n <= self.num_samples:
            raise BenchmarkError(f"--inception-samples {inception_n}: expected 2 .. --num-samples "
                                 f"({self.num_samples})")
        object.__setattr__(self, "inception_samples", inception_n)
        if self.inception_reference_samples is not None and self.inception_reference_samples < 2:
            raise BenchmarkError(f"--inception-reference-samples {self.inception_reference_samples}: expected >= 2")
        evaluation = range(self.seed, self.seed + self.num_samples)
        calibration = range(self.calibration_seed,
                            self.calibration_seed + max(self.calibration_samples, self.stepsaver_samples))
        if max(evaluation.start, calibration.start) < min(evaluation.stop, calibration.stop):
            raise BenchmarkError(
                f"calibration seeds {calibration.start}..{calibration.stop - 1} overlap the evaluation seeds "
                f"{evaluation.start}..{evaluation.stop - 1}: pass another --calibration-seed")
        object.__setattr__(self, "scheduler_config", dict(self.scheduler_config))

    @property
    def seeds(self) -> List[int]:
        return list(range(self.seed, self.seed + self.num_samples))

    @property
    def calibration_seeds(self) -> List[int]:
        return list(range(self.calibration_seed, self.calibration_seed + self.calibration_samples))


# ----------------------------------------------------------------------------------------------------------------
# Choosing each baseline's setting for a budget (pure functions on MACs)
# ----------------------------------------------------------------------------------------------------------------


def budget_status(macs_ratio: float, budget: float, num_steps: int) -> str:
    """``"within"`` the budget, ``"over_within_one_step"`` (over by at most one full-width step, ``1/N``), or
    ``"over"``."""
    if macs_ratio <= budget * (1 + 1e-9):
        return "within"
    if macs_ratio <= budget + 1.0 / num_steps + 1e-9:
        return "over_within_one_step"
    return "over"


def uniform_width_for_budget(table: Mapping[float, float], budget: float) -> Optional[float]:
    """The widest width whose MACs are at most ``budget`` times the full width's (None: even the narrowest is
    over)."""
    full = table[max(table)]
    fits = [float(w) for w, m in table.items() if m <= budget * full * (1 + 1e-12)]
    return max(fits) if fits else None


def fewer_steps_for_budget(num_steps: int, budget: float) -> int:
    """``floor(budget * N)``: the most full-width steps within the budget (0: the budget is below one step)."""
    return max((k for k in range(num_steps + 1) if k <= budget * num_steps * (1 + 1e-12)), default=0)


def ramp_for_budget(small_macs: float, full_macs: float, num_steps: int, budget: float) -> Optional[int]:
    """T-Stitch: the fewest small-model steps ``n`` (the first ones) such that
    ``n * small + (N - n) * full <= budget * N * full``; None when even ``n = N`` is over the budget."""
    if not small_macs < full_macs:
        raise BenchmarkError(f"the small model costs {small_macs:,.0f} MACs per forward, not less than the full "
                             f"model's {full_macs:,.0f}: stitching saves nothing")
    target = budget * num_steps * full_macs * (1 + 1e-12)
    return next((n for n in range(num_steps + 1) if n * small_macs + (num_steps - n) * full_macs <= target), None)


@dataclass(frozen=True)
class SkipTuning:
    """The outcome of :func:`tune_skip_delta`: the policy, the MACs ratio it spent on the calibration seeds,
    whether that met the budget, and every (delta, C_max, ratio) tried."""

    policy: SkipPolicy
    calibration_ratio: float
    met: bool
    trials: Tuple[Tuple[float, int, float], ...]


def tune_skip_delta(measure: Callable[[SkipPolicy], float], budget: float, *, max_consecutive: int = 4,
                    max_allowed_consecutive: Optional[int] = None, iterations: int = 12, delta_low: float = 1e-4,
                    delta_high: float = 1e3) -> SkipTuning:
    """The smallest AdaptiveDiffusion ``delta`` (to bisection precision) whose MACs ratio meets ``budget``.

    ``measure(policy)`` samples the calibration seeds with ``policy`` and returns the MACs ratio actually spent.

    1. ``delta = 0`` (almost never skips) meeting the budget needs no skipping: return it.
    2. Check that ``delta_high`` (skip whenever allowed) meets it; if not, double ``C_max`` (up to
       ``max_allowed_consecutive``, default the same) until it does, or give up (``met=False``, the cheapest policy).
    3. Bisect ``log(delta)`` in ``[delta_low, delta_high]`` for ``iterations`` steps, keeping the upper end meeting
       the budget; return the upper end. Larger delta skips more, so the MACs fall (not always strictly: skipping
       changes the trajectory), and the returned delta meets the budget on the calibration seeds by construction.
    """
    if not 0 < budget:
        raise BenchmarkError(f"budget {budget}: expected > 0")
    memo: Dict[Tuple[float, int], float] = {}

    def ratio(delta: float, c: int) -> float:
        if (delta, c) not in memo:
            memo[(delta, c)] = float(measure(SkipPolicy(delta=delta, max_consecutive=c)))
        return memo[(delta, c)]

    def done(delta: float, c: int, met: bool) -> SkipTuning:
        trials = tuple((d, cc, r) for (d, cc), r in memo.items())
        return SkipTuning(SkipPolicy(delta=delta, max_consecutive=c), ratio(delta, c), met, trials)

    c = max_consecutive
    cap = max(c, max_allowed_consecutive or c)
    if ratio(0.0, c) <= budget:
        return done(0.0, c, True)
    while ratio(delta_high, c) > budget:
        if c >= cap:
            return done(delta_high, c, False)
        c = min(cap, 2 * c)
    if ratio(delta_low, c) <= budget:
        return done(delta_low, c, True)
    lo, hi = math.log(delta_low), math.log(delta_high)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if ratio(math.exp(mid), c) <= budget:
            hi = mid
        else:
            lo = mid
    return done(delta_high if hi == math.log(delta_high) else math.exp(hi), c, True)


# ----------------------------------------------------------------------------------------------------------------
# T-Stitch with a separately trained model
# ----------------------------------------------------------------------------------------------------------------


class StitchedUNet(nn.Module):
    """Two different networks behind the SlimmableUNet call, for T-Stitch with a separately trained small model.

    ``model(x, t, class_labels=None, width=w)`` runs ``large`` at its full width when ``w == 1.0`` and ``small`` at
    its own largest width when ``w == small_width`` (a pseudo-width: by default the small model's MACs as a fraction
    of the large one's, rounded to 4 digits). ``width_choices`` is ``(small_width, 1.0)`` and :attr:`macs_table`
    holds both networks' MACs, to pass to :func:`ddsm.sampling.sample` explicitly (tracing the wrapper would count
    the wrong thing). Both networks must share the noise schedule they were trained with; that is not checked.
    """

    def __init__(self, large, small, large_macs: Optional[float] = None, small_macs: Optional[float] = None,
                 small_width: Optional[float] = None):
        super().__init__()
        from diffusers.configuration_utils import FrozenDict

        from ..models import macs_table

        lc, sc = large.config, small.config
        for key in ("in_channels", "out_channels", "sample_size"):
            if lc[key] != sc[key]:
                raise BenchmarkError(f"--small-dense model has {key}={sc[key]} but the supernet has {lc[key]}: "
                                     "the two networks must denoise the same tensors")
        if sc.get("num_classes") and sc.get("num_classes") != lc.get("num_classes"):
            raise BenchmarkError(f"--small-dense model has num_classes={sc.get('num_classes')} but the supernet has "
                                 f"{lc.get('num_classes')}")
        self.large, self.small = large, small
        self.large_width = max(large.width_choices)
        self.small_own_width = max(small.width_choices)
        self.large_macs = float(large_macs if large_macs is not None else macs_table(large)[self.large_width])
        self.small_macs = float(small_macs if small_macs is not None
                                else macs_table(small, [self.small_own_width])[self.small_own_width])
        if not self.small_macs < self.large_macs:
            raise BenchmarkError(f"--small-dense model costs {self.small_macs:,.0f} MACs per forward, not less than "
                                 f"the supernet's {self.large_macs:,.0f}: stitching saves nothing")
        token = small_width if small_width is not None else min(0.9999, max(1e-4, round(
            self.small_macs / self.large_macs, 4)))
        self.small_width = float(token)
        self.config = FrozenDict({**dict(lc), "width_choices": [self.small_width, self.large_width]})

    @property
    def width_choices(self) -> Tuple[float, ...]:
        return (self.small_width, self.large_width)

    @property
    def macs_table(self) -> Dict[float, float]:
        return {self.small_width: self.small_macs, self.large_width: self.large_macs}

    def forward(self, sample: torch.Tensor, timestep, class_labels: Optional[torch.Tensor] = None,
                width: float = 1.0, return_dict: bool = True):
        if width == self.large_width:
            return self.large(sample, timestep, class_labels=class_labels, width=self.large_width,
                              return_dict=return_dict)
        if width == self.small_width:
            labels = class_labels if self.small.config.get("num_classes") else None
            return self.small(sample, timestep, class_labels=labels, width=self.small_own_width,
                              return_dict=return_dict)
        raise ValueError(f"width {width!r} is neither the small model's pseudo-width {self.small_width} nor "
                         f"{self.large_width}")


# ----------------------------------------------------------------------------------------------------------------
# Searched schedules
# ----------------------------------------------------------------------------------------------------------------


def load_schedules(model, schedule: Optional[str] = None, schedules_dir: Optional[str] = None,
                   allow_fingerprint_mismatch: bool = False) -> List[Tuple[str, Schedule]]:
    """The searched schedules to benchmark: ``schedule`` and every ddsm-schedule JSON under ``schedules_dir``
    (other JSON files, e.g. pareto.json, are ignored). Each is checked against ``model``."""
    import json

    paths: List[Path] = []
    if schedule:
        if not Path(schedule).is_file():
            raise FileNotFoundError(f"--schedule {schedule!r} does not exist")
        paths.append(Path(schedule))
    if schedules_dir:
        folder = Path(schedules_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"--schedules-dir {schedules_dir!r} is not a directory")
        found = []
        for p in sorted(folder.rglob("*.json")):
            try:
                is_schedule = json.loads(p.read_text()).get("format") == "ddsm-schedule"
            except (ValueError, AttributeError, OSError):
                is_schedule = False
            if is_schedule and p.resolve() not in {q.resolve() for q in paths}:
                found.append(p)
        if not found:
            raise BenchmarkError(f"--schedules-dir {schedules_dir!r} holds no ddsm-schedule JSON file")
        paths += found
    return [(str(p), Schedule.load(p, model=model, allow_fingerprint_mismatch=allow_fingerprint_mismatch))
            for p in paths]


def schedule_budget(schedule: Schedule, table: Mapping[float, float]) -> Tuple[float, bool]:
    """(budget, declared): the search budget in the schedule's provenance, else its MACs ratio (declared=False)."""
    search = schedule.provenance.get("search") if schedule.provenance else None
    if isinstance(search, Mapping) and isinstance(search.get("budget"), (int, float)):
        return float(search["budget"]), True
    return float(schedule.with_macs(table).macs["ratio"]), False


def assign_schedules(schedules: Sequence[Tuple[str, Schedule]], budgets: Sequence[float],
                     table: Mapping[float, float]) -> Tuple[Dict[float, Tuple[str, Schedule]],
                                                            List[Tuple[float, str, Schedule]]]:
    """Which searched schedule stands for which budget.

    A schedule whose provenance names its search budget serves exactly that budget; one without serves the
    smallest requested budget at or above its MACs ratio. Returns ({budget: (path, schedule)}, every schedule with
    its budget, sorted by budget: the candidates for DDSM + skipping at smaller budgets).
    """
    by_budget: Dict[float, Tuple[str, Schedule]] = {}
    every = []
    for path, s in schedules:
        own, declared = schedule_budget(s, table)
        every.append((own, path, s))
        if declared:
            match = [b for b in budgets if math.isclose(b, own, abs_tol=1e-6)]
        else:
            match = [min((b for b in budgets if b >= own - 1e-9), default=None)]
        for b in match:
            if b is None:
                continue
            if b in by_budget:
                raise BenchmarkError(f"two searched schedules for budget {b:g}: {by_budget[b][0]} and {path}")
            by_budget[b] = (path, s)
    return by_budget, sorted(every, key=lambda e: e[0])


def resolve_sampler(model_dir, run_config, schedules: Sequence[Tuple[str, Schedule]] = (),
                    scheduler_name: Optional[str] = None,
                    num_steps: Optional[int] = None) -> Tuple[str, Dict[str, Any], int]:
    """(scheduler class name, scheduler config, N) for a benchmark run.

    The config comes from the first schedule's own scheduler config, else ``<run>/scheduler/`` beside the model
    folder, else the run config's diffusion section; the class from ``scheduler_name``, the schedule, or the run
    config's sampling section; N from ``num_steps``, the schedule, or the run config's sampling section.
    """
    import json

    first = schedules[0][1] if schedules else None
    beside = Path(model_dir).parent / "scheduler" / "scheduler_config.json"
    if first is not None and first.scheduler_config is not None:
        config = json.loads(json.dumps(first.scheduler_config))
    elif beside.is_file():
        config = json.loads(beside.read_text())
    else:
        config = run_config.diffusion.scheduler_config()
    name = scheduler_name or (first.scheduler_class_name if first is not None else None) or \
        run_config.sampling.scheduler
    build_scheduler(name, config)  # a clear error for an unknown class name
    steps = num_steps or (first.num_inference_steps if first is not None else None) or \
        run_config.sampling.num_inference_steps
    return name, config, int(steps)


# ----------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _Row:
    method: str
    budget: Optional[float]
    label: str
    status: str = "ok"                     # ok | infeasible | unavailable
    note: str = ""
    params: Dict[str, Any] = field(default_factory=dict)
    result: Any = None                     # SampleResult or StepSaverSampleResult

    def unavailable(self, why: str, status: str = "unavailable") -> "_Row":
        self.status, self.note = status, why
        return self


class _Runner:
    """Samples on the evaluation seeds with a shared scheduler setup; identical runs are done once."""

    def __init__(self, model, job: BenchmarkJob, autoencoder, table):
        self.model, self.job, self.autoencoder, self.table = model, job, autoencoder, table
        self.labels = balanced_labels(model, job.num_samples)
        self.cal_labels = balanced_labels(model, job.calibration_samples)
        self.cache: Dict[Any, Any] = {}

    def sample(self, widths: Sequence[float], *, net=None, skip: Optional[SkipPolicy] = None, table=None,
               calibration: bool = False) -> SampleResult:
        net = net if net is not None else self.model
        seeds = self.job.calibration_seeds if calibration else self.job.seeds
        labels = self.cal_labels if calibration else self.labels
        return sample(net, build_scheduler(self.job.scheduler_name, self.job.scheduler_config),
                      [float(w) for w in widths], seeds=seeds, class_labels=labels,
                      guidance_scale=self.job.guidance_scale, batch_size=self.job.batch_size, skip_policy=skip,
                      autoencoder=self.autoencoder, macs_table=table or self.table, progress=False)

    def cached(self, key, make: Callable[[], Any]):
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def evaluate(self, widths: Sequence[float], *, net=None, skip: Optional[SkipPolicy] = None, table=None):
        key = (id(net), tuple(float(w) for w in widths),
               None if skip is None else (skip.delta, skip.max_consecutive, skip.min_computed))
        return self.cached(key, lambda: self.sample(widths, net=net, skip=skip, table=table))

    def calibration_ratio(self, widths: Sequence[float], policy: SkipPolicy) -> float:
        r = self.sample(widths, skip=policy, calibration=True)
        return r.macs_per_image / r.full_macs_per_image


def run_benchmark(model, job: BenchmarkJob, *, schedules: Sequence[Tuple[str, Schedule]] = (), small_dense=None,
                  stepsaver: Optional[StepSaver] = None, autoencoder=None, model_path: Optional[str] = None,
                  progress: bool = True) -> Tuple[dict, Dict[str, Any]]:
    """Sample and measure every method at every budget of ``job``; returns (report, artefacts).

    ``schedules`` are (path, Schedule) pairs (:func:`load_schedules`); ``small_dense`` a SlimmableUNet for the
    T-Stitch dense ramp (None: that method is reported unavailable); ``stepsaver`` a fitted StepSaver (None: fit
    one on the calibration seeds, returned in ``artefacts["stepsaver"]``).
    """
    from tqdm.auto import tqdm

    from ..models import macs_table

    model = model.eval()
    table = {float(w): float(m) for w, m in macs_table(model).items()}
    full_w = max(model.width_choices)
    N = job.num_steps
    runner = _Runner(model, job, autoencoder, table)
    stitched = StitchedUNet(model, small_dense.eval(), large_macs=table[full_w]) if small_dense is not None else None
    by_budget, every_schedule = assign_schedules(schedules, job.budgets, table)
    checked = {path: _on_benchmark_steps(s, job) for _, path, s in every_schedule}

    # one unit per method and budget, plus the full model and StepSaver's labelling; the metrics get their own bar
    total = 1 + 1 + len(job.budgets) * len(_RUNNERS)
    bar = tqdm(total=total, desc="sampling", unit="run", disable=not progress)

    def step(text: str):
        bar.set_postfix_str(text, refresh=True)

    step("warm-up, full model")
    runner.sample([full_w] * N, calibration=True)  # first-call overheads out of the timings
    if stitched is not None:
        runner.sample([stitched.small_width] + [full_w] * (N - 1), net=stitched, table=stitched.macs_table,
                      calibration=True)
    full = runner.evaluate([full_w] * N)
    bar.update(1)

    artefacts: Dict[str, Any] = {}
    weights = Counter(runner.labels if runner.labels is not None else [None] * job.num_samples)
    if stepsaver is None:
        step("StepSaver labelling")
        candidates = sorted({c for c in job.stepsaver_candidates if c <= N} | {N})
        stepsaver = StepSaver.fit(model, job.scheduler_name, job.scheduler_config,
                                  seeds=range(job.calibration_seed, job.calibration_seed + job.stepsaver_samples),
                                  candidates=candidates, reference_steps=job.stepsaver_reference_steps,
                                  threshold=job.stepsaver_threshold, width=full_w,
                                  guidance_scale=job.guidance_scale, batch_size=job.batch_size,
                                  autoencoder=autoencoder, progress=False)
    artefacts["stepsaver"] = stepsaver
    bar.update(1)

    rows: Dict[float, List[_Row]] = {}
    for b in job.budgets:
        ctx = _Context(b, runner, job, table, stitched, stepsaver, weights, by_budget, every_schedule, checked)
        rows[b] = []
        for method, run in _RUNNERS.items():
            step(f"budget {b:g}: {METHODS[method]}")
            rows[b].append(run(_Row(method, b, METHODS[method]), ctx))
            bar.update(1)

    bar.close()

    metrics = _Metrics(job, full.images, progress=progress)  # feature networks and reference statistics
    full_row = _Row("full", None, f"width {full_w:g}, {N} steps", params=dict(width=full_w, steps=N), result=full)
    every_row = [full_row] + [r for b in job.budgets for r in rows[b]]
    measured = {id(r): _row_report(r, full, metrics, job)
                for r in tqdm(every_row, desc="metrics", unit="run", disable=not progress)}
    report_rows = {b: [measured[id(r)] for r in rs] for b, rs in rows.items()}
    full_report = measured[id(full_row)]

    report = dict(
        format=FORMAT, version=VERSION, tool_version=__version__,
        model=dict(path=model_path, config_sha256=model.config_sha256, width_choices=list(model.width_choices),
                   macs_per_width={str(w): m for w, m in sorted(table.items())}),
        small_dense=None if stitched is None else dict(macs=stitched.small_macs,
                                                       macs_ratio=stitched.small_macs / stitched.large_macs,
                                                       config_sha256=small_dense.config_sha256),
        scheduler=job.scheduler_name, scheduler_config=dict(job.scheduler_config), num_steps=N,
        num_samples=job.num_samples,
        seeds=[job.seed, job.seed + job.num_samples - 1],
        calibration_seeds=[job.calibration_seed, job.calibration_seed + job.calibration_samples - 1],
        stepsaver_seeds=[job.calibration_seed, job.calibration_seed + job.stepsaver_samples - 1],
        dataset=job.dataset, resolution=int(full.images.shape[-1]), guidance_scale=job.guidance_scale,
        metrics=metrics.describe(), full=full_report,
        budgets=[dict(budget=b, methods=report_rows[b]) for b in job.budgets],
        job={k: v for k, v in asdict(job).items() if k != "scheduler_config"},
        stepsaver=dict(threshold=stepsaver.threshold, rule=stepsaver.rule, candidates=list(stepsaver.candidates),
                       reference_steps=stepsaver.reference_steps,
                       steps={str(c): s for c, s in stepsaver.steps.items()}),
    )
    report["notes"] = _notes(report, job)
    return report, artefacts


def _on_benchmark_steps(schedule: Schedule, job: BenchmarkJob) -> Tuple[Schedule, bool]:
    """The schedule on the benchmark's scheduler timesteps (remapped by nearest timestep when they differ)."""
    scheduler = build_scheduler(job.scheduler_name, job.scheduler_config)
    scheduler.set_timesteps(job.num_steps)
    try:
        schedule.check_scheduler(scheduler)
        return schedule, False
    except ScheduleError:
        return schedule.remap(scheduler=scheduler), True


@dataclass
class _Context:
    """What every method's runner needs at one budget."""

    budget: float
    runner: "_Runner"
    job: BenchmarkJob
    table: Dict[float, float]
    stitched: Optional[StitchedUNet]
    stepsaver: StepSaver
    weights: Mapping[Any, float]                           # label frequencies of the evaluation images
    by_budget: Dict[float, Tuple[str, Schedule]]           # the searched schedule of each budget
    every_schedule: List[Tuple[float, str, Schedule]]      # all schedules with their budgets, ascending
    checked: Dict[str, Tuple[Schedule, bool]]              # path -> (schedule on the benchmark's steps, remapped)

    @property
    def full_w(self) -> float:
        return max(self.table)

    @property
    def N(self) -> int:
        return self.job.num_steps

    def tune(self, widths: Sequence[float]) -> SkipTuning:
        return tune_skip_delta(lambda p: self.runner.calibration_ratio(widths, p), self.budget,
                               max_consecutive=self.job.skip_max_consecutive, max_allowed_consecutive=self.N,
                               iterations=self.job.bisection_iterations)


def _uniform(row: _Row, ctx: _Context) -> _Row:
    table, full_w, small_w = ctx.table, ctx.full_w, min(ctx.table)
    w = uniform_width_for_budget(table, ctx.budget)
    if w is None:
        return row.unavailable(f"even the narrowest width {small_w:g} costs {table[small_w] / table[full_w]:.3f} "
                               "of full", "infeasible")
    row.label, row.params = f"uniform width {w:g}", dict(width=w, steps=ctx.N)
    row.note = f"widest width whose MACs fit: {w:g} ({table[w] / table[full_w]:.3f} of full per step)"
    row.result = ctx.runner.evaluate([w] * ctx.N)
    return row


def _fewer_steps(row: _Row, ctx: _Context) -> _Row:
    k = fewer_steps_for_budget(ctx.N, ctx.budget)
    if k == 0:
        return row.unavailable(f"floor({ctx.budget:g} x {ctx.N}) = 0 steps", "infeasible")
    row.label, row.params = f"full width, {k} steps", dict(width=ctx.full_w, steps=k)
    row.note = f"floor({ctx.budget:g} x {ctx.N}) = {k} of {ctx.N} steps"
    row.result = ctx.runner.evaluate([ctx.full_w] * k)
    return row


def _tstitch(row: _Row, ctx: _Context) -> _Row:
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
    row.result = ctx.runner.evaluate([small] * n_small + [full_w] * (N - n_small), net=net,
                                     table=macs if dense else None)
    return row


def _adaptive(row: _Row, ctx: _Context) -> _Row:
    widths = [ctx.full_w] * ctx.N
    tuning = ctx.tune(widths)
    row.params = _tuning_params(tuning)
    row.label = f"AdaptiveDiffusion (delta {tuning.policy.delta:.3g}, C_max {tuning.policy.max_consecutive})"
    row.note = (f"delta bisected on {ctx.job.calibration_samples} calibration seeds: MACs ratio "
                f"{tuning.calibration_ratio:.3f} there")
    if not tuning.met:
        row.note += f"; the budget is out of reach (skipping whenever allowed, C_max {ctx.N})"
    row.result = ctx.runner.evaluate(widths, skip=tuning.policy)
    return row


def _stepsaver(row: _Row, ctx: _Context) -> _Row:
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
    runner = ctx.runner
    key = ("stepsaver", tuple(sorted((str(c), s) for c, s in chosen.steps.items())))
    row.result = runner.cached(key, lambda: sample_per_condition(
        runner.model, job.scheduler_name, job.scheduler_config, chosen, seeds=job.seeds, class_labels=runner.labels,
        width=ctx.full_w, guidance_scale=job.guidance_scale, batch_size=job.batch_size,
        autoencoder=runner.autoencoder, macs_table=ctx.table))
    return row


def _ddsm(row: _Row, ctx: _Context) -> _Row:
    if ctx.budget not in ctx.by_budget:
        return row.unavailable("no searched schedule for this budget (give --schedule, or --schedules-dir with one "
                               "schedule per budget)")
    path, _ = ctx.by_budget[ctx.budget]
    schedule, remapped = ctx.checked[path]
    row.label = "DDSM searched schedule"
    row.params = dict(schedule=path, remapped=remapped, widths=list(schedule.widths))
    row.note = Path(path).name + (f", remapped onto {ctx.N} steps by nearest timestep" if remapped else "")
    row.result = ctx.runner.evaluate(schedule.widths)
    return row


def _ddsm_adaptive(row: _Row, ctx: _Context) -> _Row:
    b, job = ctx.budget, ctx.job
    larger = [(own, path) for own, path, _ in ctx.every_schedule if own > b + 1e-9]
    if larger:  # the next larger budget's schedule, skipping tuned down to this budget
        own, path = larger[0]
        schedule, remapped = ctx.checked[path]
        tuning = ctx.tune(schedule.widths)
        policy, params = tuning.policy, dict(_tuning_params(tuning), base_budget=own)
        row.note = (f"schedule for budget {own:g} + skipping, delta bisected to this budget on "
                    f"{job.calibration_samples} calibration seeds (ratio {tuning.calibration_ratio:.3f} there)")
        if not tuning.met:
            row.note += "; the budget is out of reach"
    elif b in ctx.by_budget:  # nothing to tune from: this budget's schedule with a fixed delta
        path, _ = ctx.by_budget[b]
        schedule, remapped = ctx.checked[path]
        policy = SkipPolicy(delta=job.ddsm_skip_delta, max_consecutive=job.skip_max_consecutive)
        params = dict(delta=policy.delta, max_consecutive=policy.max_consecutive, base_budget=b, tuned=False)
        row.note = (f"this budget's schedule + skipping with fixed delta {policy.delta:g} (no schedule for a larger "
                    "budget to tune from)")
    else:
        return row.unavailable("no searched schedule for this budget or a larger one")
    row.label = f"DDSM + AdaptiveDiffusion (delta {policy.delta:.3g})"
    row.params = dict(params, schedule=path, remapped=remapped)
    row.result = ctx.runner.evaluate(schedule.widths, skip=policy)
    return row


_RUNNERS: Dict[str, Callable[[_Row, _Context], _Row]] = {
    "uniform": _uniform, "fewer_steps": _fewer_steps, "tstitch_supernet": _tstitch, "tstitch_dense": _tstitch,
    "adaptive": _adaptive, "stepsaver": _stepsaver, "ddsm": _ddsm, "ddsm_adaptive": _ddsm_adaptive,
}


def _tuning_params(t: SkipTuning) -> dict:
    return dict(delta=t.policy.delta, max_consecutive=t.policy.max_consecutive, calibration_ratio=t.calibration_ratio,
                tuned=True, met_on_calibration=t.met, trials=[list(x) for x in t.trials])


class _Metrics:
    """FID on domain and Inception features and fidelity to the full model, computed once per distinct result."""

    def __init__(self, job: BenchmarkJob, full_images: torch.Tensor, progress: bool):
        self.job, self.full_images, self.progress = job, full_images, progress
        self.cache: Dict[int, dict] = {}
        res, channels = int(full_images.shape[-1]), int(full_images.shape[1])
        self.domain = (FeatureSpace.domain(job.dataset, res, channels, progress=progress, root=job.data_root)
                       if job.domain else None)
        self.inception = None
        if job.inception:
            self.inception = FeatureSpace.inception(
                job.dataset, res, channels, weights=job.inception_weights, progress=progress, root=job.data_root,
                reference_samples=job.inception_reference_samples or max(1000, job.inception_samples))
        for space in (self.domain, self.inception):  # reference statistics now (cached), not inside the loop
            if space is not None:
                space.reference

    def describe(self) -> dict:
        return dict(
            domain_features=None if self.domain is None else self.domain.name,
            domain_reference_samples=None if self.domain is None else self.domain.reference.key["num_samples"],
            inception_features=None if self.inception is None else self.inception.name,
            inception_samples=self.job.inception_samples if self.inception is not None else None,
            inception_reference_samples=(None if self.inception is None
                                         else self.inception.reference.key["num_samples"]),
            fidelity="PSNR / SSIM to the full model's image of the same seed")

    def __call__(self, images: torch.Tensor) -> dict:
        from ..evaluation.metrics import fidelity_summary

        key = id(images)
        if key not in self.cache:
            fid = fidelity_summary(images, self.full_images)
            out = dict(psnr=fid["psnr"], ssim=fid["ssim"], ssim_min=fid["ssim_min"], domain_fid=None,
                       inception_fid=None)
            if self.domain is not None:
                out["domain_fid"] = self.domain.fid(images)
            if self.inception is not None:
                out["inception_fid"] = self.inception.fid(images[: self.job.inception_samples])
            self.cache[key] = out
        return self.cache[key]


def _row_report(row: _Row, full: SampleResult, metrics: _Metrics, job: BenchmarkJob) -> dict:
    out = dict(method=row.method, name=METHODS[row.method], label=row.label, budget=row.budget, status=row.status,
               note=row.note, params=row.params)
    if row.result is None:
        return out
    r = row.result
    full_per_image = full.full_macs_per_image
    ratio = r.macs_per_image / full_per_image
    if isinstance(r, StepSaverSampleResult):
        mean_computed = float(np.mean(r.computed_steps))
    else:
        mean_computed = float(r.computed.sum(1).mean())
    out.update(macs_per_image=r.macs_per_image, macs_ratio=ratio, mean_computed_steps=mean_computed,
               seconds_per_image=r.seconds_per_image, speedup=full.seconds_per_image / r.seconds_per_image,
               **metrics(r.images))
    if row.budget is not None:
        out["budget_status"] = budget_status(ratio, row.budget, job.num_steps)
        if out["budget_status"] != "within":
            over = ratio - row.budget
            out["note"] = (out["note"] + "; " if out["note"] else "") + (
                f"spent {ratio:.4f} of full on the evaluation seeds, {over:.4f} over the budget ("
                + ("within one full-width step's MACs, 1/N = " if out["budget_status"] == "over_within_one_step"
                   else "more than one full-width step, 1/N = ") + f"{1 / job.num_steps:.4f})")
    return out


def _notes(report: dict, job: BenchmarkJob) -> List[str]:
    n = job.num_samples
    notes = [
        f"Budgets are fractions of the full model's UNet MACs ({job.num_steps} {job.scheduler_name} steps at width "
        "1.0). Every method samples the same evaluation seeds "
        f"{report['seeds'][0]}..{report['seeds'][1]} (held out from the search seeds, which start at 0); delta and "
        f"StepSaver are tuned on calibration seeds {report['calibration_seeds'][0]}.. (disjoint).",
        "FID at a few hundred samples reads high and is biased: compare methods only at the same N (here they "
        "share N and seeds). Domain FID uses a small classifier trained on the data set, not Inception.",
        "Wall-clock speed-ups are measured in this process, one method after the other, on a machine possibly "
        "shared with other work: read them as rough.",
    ]
    if job.inception:
        k = job.inception_samples
        notes.insert(1, f"Inception FID on the first {k} of {n} samples per method (--inception-samples). "
                        f"N >= 1000 is the real target; a CPU runs about {INCEPTION_IMAGES_PER_SECOND_CPU:.0f} "
                        "Inception images/s, so small N is the default here.")
    else:
        notes.insert(1, "Inception FID not computed (--no-inception). N >= 1000 is the real target; a CPU runs "
                        f"about {INCEPTION_IMAGES_PER_SECOND_CPU:.0f} Inception images/s.")
    over = [(b["budget"], r) for b in report["budgets"] for r in b["methods"]
            if r.get("budget_status") not in (None, "within")]
    for budget, r in over:
        size = ("by less than one full-width step's MACs (1/N)" if r["budget_status"] == "over_within_one_step"
                else "by more than one full-width step's MACs (1/N)")
        notes.append(f"Budget {budget:g}, {r['label']}: spent {r['macs_ratio']:.4f} of full MACs, over the budget "
                     f"{size}: {_over_cause(r)}.")
    return notes


def _over_cause(r: dict) -> str:
    """Why a method spent more than its budget (for the report's notes)."""
    params = r.get("params", {})
    if r["method"] in ("adaptive", "ddsm_adaptive") and params.get("tuned"):
        if not params.get("met_on_calibration"):
            return "even skipping whenever allowed cannot reach the budget"
        return "skipping is decided per sample, and delta was tuned on the calibration seeds, not on these"
    if r["method"] == "ddsm_adaptive":
        return "the schedule itself costs more than the budget, and skipping with a fixed delta saved less"
    if r["method"] == "ddsm":
        return "the schedule file itself costs this much (searched for another budget, or remapped onto N steps)"
    return "the budget cannot be met exactly"


# ----------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------


def _fmt(x: Optional[float], spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def _quality_key(report: dict) -> Optional[str]:
    m = report["metrics"]
    return "inception_fid" if m.get("inception_features") else ("domain_fid" if m.get("domain_features") else None)


def _quality_name(report: dict, key: Optional[str]) -> str:
    m = report["metrics"]
    return {"inception_fid": f"Inception FID (n={m.get('inception_samples')})",
            "domain_fid": f"domain FID ({m.get('domain_features')})"}.get(key, "SSIM")


def _comparison(ddsm: dict, other: dict, qkey: Optional[str], qname: str) -> str:
    """One sentence: where the searched schedule stands against ``other`` at the same budget."""
    if other["status"] != "ok":
        return f"- **{other['label']}**: not run at this budget ({other['note']}); the searched schedule stands alone."
    parts = []
    if qkey and ddsm.get(qkey) is not None and other.get(qkey) is not None:
        a, b = ddsm[qkey], other[qkey]
        verdict = "lower (better)" if a < b else ("higher (worse)" if a > b else "equal")
        parts.append(f"{verdict} {qname} ({a:.3f} vs {b:.3f})")
    a, b = ddsm["ssim"], other["ssim"]
    verdict = "higher (better)" if a > b else ("lower (worse)" if a < b else "equal")
    parts.append(f"{verdict} SSIM to the full model ({a:.3f} vs {b:.3f})")
    return (f"- **{other['label']}**: the searched schedule has " + " and ".join(parts)
            + f", spending {ddsm['macs_ratio']:.3f} vs {other['macs_ratio']:.3f} of full MACs.")


def benchmark_markdown(report: dict) -> str:
    """The benchmark as Markdown: a table per budget, then one sentence per method on where DDSM stands."""
    qkey = _quality_key(report)
    qname = _quality_name(report, qkey)
    m = report["metrics"]
    lines = [
        "# Step-aware schedule benchmark", "",
        f"{report['num_samples']} samples per method (seeds {report['seeds'][0]}..{report['seeds'][1]}), "
        f"{report['scheduler']} with {report['num_steps']} steps, data set {report['dataset']} at "
        f"{report['resolution']} px. All methods share the seeds and were sampled and timed in one process.", "",
        *[f"- {n}" for n in report["notes"]], "",
    ]
    head = ["method", "setting", "MACs / image", "MACs ratio", "budget", "speed-up", "PSNR", "SSIM"]
    if m.get("domain_features"):
        head.append("domain FID")
    if m.get("inception_features"):
        head.append(f"Inception FID (n={m['inception_samples']})")

    def cells(r: dict) -> List[str]:
        if r["status"] != "ok":
            return [r["name"], f"{r['status']}: {r['note']}"] + ["n/a"] * (len(head) - 2)
        status = {"within": "within", "over_within_one_step": "over (< 1 step)", "over": "**over**"}.get(
            r.get("budget_status"), "")
        row = [r["name"], r["label"], f"{r['macs_per_image'] / 1e6:,.2f} M", f"{r['macs_ratio']:.3f}", status,
               f"{r['speedup']:.2f}x", f"{r['psnr']:.2f}", f"{r['ssim']:.4f}"]
        if m.get("domain_features"):
            row.append(_fmt(r.get("domain_fid"), ".3f"))
        if m.get("inception_features"):
            row.append(_fmt(r.get("inception_fid"), ".3f"))
        return row

    for block in report["budgets"]:
        b = block["budget"]
        lines += [f"## Budget {b:g} of full MACs", "", "| " + " | ".join(head) + " |",
                  "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|",
                  "| " + " | ".join(cells(report["full"])) + " |"]
        lines += ["| " + " | ".join(cells(r)) + " |" for r in block["methods"]]
        lines.append("")
        notes = [r for r in block["methods"] if r["status"] == "ok" and r.get("note")]
        if notes:
            lines += [f"- {r['name']}: {r['note']}." for r in notes] + [""]
        ddsm = next((r for r in block["methods"] if r["method"] == "ddsm"), None)
        lines.append("**Where the searched schedule stands:**")
        lines.append("")
        if ddsm is None or ddsm["status"] != "ok":
            lines.append(f"- No searched schedule for budget {b:g} (give --schedule, or --schedules-dir with one "
                         "schedule per budget), so no method is compared with it here.")
        else:
            lines += [_comparison(ddsm, r, qkey, qname) for r in block["methods"] if r["method"] != "ddsm"]
        lines.append("")
    lines += ["![quality vs MACs](benchmark.png)", ""]
    return "\n".join(lines)


_STYLES = {"uniform": ("s", "tab:gray"), "fewer_steps": ("^", "tab:green"), "tstitch_supernet": ("v", "tab:orange"),
           "tstitch_dense": ("<", "tab:brown"), "adaptive": ("D", "tab:purple"), "stepsaver": ("P", "tab:cyan"),
           "ddsm": ("*", "tab:red"), "ddsm_adaptive": ("X", "tab:pink")}


def plot_benchmark(report: dict, path) -> Path:
    """Quality vs MACs ratio, one marker per method (joined across budgets): FID (Inception if computed, else
    domain) on the left when available, SSIM to the full model on the right."""
    qkey = _quality_key(report)
    panels = ([(qkey, _quality_name(report, qkey) + " (lower is better)")] if qkey else []) + [
        ("ssim", "SSIM to the full model (higher is better)")]
    fig, axes = new_figure(1, len(panels), figsize=(6.2 * len(panels), 4.6), squeeze=False)
    for ax, (key, name) in zip(axes[0], panels):
        full = report["full"]
        if full.get(key) is not None:
            ax.plot([1.0], [full[key]], "o", ms=9, color="black", label="full model")
        for method, (marker, color) in _STYLES.items():
            pts = sorted((r["macs_ratio"], r[key]) for b in report["budgets"] for r in b["methods"]
                         if r["method"] == method and r["status"] == "ok" and r.get(key) is not None)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, ls="-", lw=0.8,
                        ms=11 if method == "ddsm" else 7, label=METHODS[method])
        for b in report["budgets"]:
            ax.axvline(b["budget"], color="tab:red", ls=":", lw=0.8)
        ax.set_xlabel("MACs actually spent / full model's MACs")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{report['scheduler']}, {report['num_steps']} steps, {report['num_samples']} samples "
                 f"(dotted: budgets)", fontsize=10)
    return save_figure(fig, path)


def write_benchmark(report: dict, out_dir, artefacts: Optional[Mapping[str, Any]] = None) -> Dict[str, Path]:
    """benchmark.json, benchmark.md and benchmark.png in ``out_dir`` (each written atomically), and
    stepsaver.json when a StepSaver was fitted."""
    out = Path(out_dir)
    paths = dict(json=atomic_write_json(out / "benchmark.json", report),
                 md=atomic_write(out / "benchmark.md", benchmark_markdown(report)),
                 png=plot_benchmark(report, out / "benchmark.png"))
    if artefacts and artefacts.get("stepsaver") is not None:
        paths["stepsaver"] = artefacts["stepsaver"].save(out / "stepsaver.json")
    return paths
