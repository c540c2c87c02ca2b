"""A benchmark run's settings (:class:`BenchmarkJob`), the methods it compares, and how a spent MACs ratio stands
against a budget."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Tuple

from ..baselines import DEFAULT_CANDIDATES, BenchmarkError

__all__ = ["METHODS", "BASELINES", "INCEPTION_IMAGES_PER_SECOND_CPU", "BenchmarkJob", "budget_status"]

METHODS = {
    "full": "full model",
    "uniform": "uniform narrower width",
    "fewer_steps": "fewer steps, full width",
    "tstitch_supernet": "T-Stitch ramp (supernet's small width)",
    "tstitch_dense": "T-Stitch ramp (small dense model)",
    "adaptive": "AdaptiveDiffusion skipping",
    "stepsaver": "StepSaver per-class steps",
    "ddsm": "searched DDSM schedule",
    "ddsm_widths": "DDSM widths only (searched without skips)",
    "ddsm_adaptive": "DDSM schedule + AdaptiveDiffusion",
}
BASELINES = [m for m in METHODS if m not in ("full", "ddsm", "ddsm_widths")]
INCEPTION_IMAGES_PER_SECOND_CPU = 6.0  # measured on this project's 2-core CPU machine


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
        for name, value in (("--steps ", self.num_steps), ("--batch-size ", self.batch_size),
                            ("--calibration-samples ", self.calibration_samples),
                            ("--stepsaver-samples ", self.stepsaver_samples),
                            ("bisection_iterations=", self.bisection_iterations),
                            ("--skip-max ", self.skip_max_consecutive)):
            if value < 1:
                raise BenchmarkError(f"{name}{value}: expected a positive int")
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


def budget_status(macs_ratio: float, budget: float, num_steps: int) -> str:
    """``"within"`` the budget, ``"over_within_one_step"`` (over by at most one full-width step, ``1/N``), or
    ``"over"``."""
    if macs_ratio <= budget * (1 + 1e-9):
        return "within"
    if macs_ratio <= budget + 1.0 / num_steps + 1e-9:
        return "over_within_one_step"
    return "over"
