"""Measuring the benchmark's rows: FID (domain and Inception features), fidelity to the full model, MACs spent
against the budget, and the report's notes."""

from __future__ import annotations

from typing import Dict, List

import numpy as np
import torch

from ..evaluation import FeatureSpace
from ..sampling import SampleResult
from ..baselines import StepSaverSampleResult
from .job import INCEPTION_IMAGES_PER_SECOND_CPU, METHODS, BenchmarkJob, budget_status
from .methods import MethodRow

__all__ = ["BenchmarkMetrics", "row_report", "report_notes"]


class BenchmarkMetrics:
    """FID on domain and Inception features and fidelity to the full model, computed once per distinct result.
    The feature networks run on ``device`` (default: the CPU), in float32."""

    def __init__(self, job: BenchmarkJob, full_images: torch.Tensor, progress: bool, device=None):
        self.job, self.full_images, self.progress = job, full_images, progress
        self.cache: Dict[int, dict] = {}
        res, channels = int(full_images.shape[-1]), int(full_images.shape[1])
        self.domain = (FeatureSpace.domain(job.dataset, res, channels, progress=progress, root=job.data_root,
                                           device=device) if job.domain else None)
        self.inception = None
        if job.inception:
            self.inception = FeatureSpace.inception(
                job.dataset, res, channels, weights=job.inception_weights, progress=progress, root=job.data_root,
                device=device,
                reference_samples=job.inception_reference_samples or max(1000, job.inception_samples))
        for space in (self.domain, self.inception):  # reference statistics now (cached), not inside the loop
            if space is not None:
                space.reference

    def describe(self) -> dict:
        """The feature spaces and sample counts behind the numbers, for the report's ``metrics`` (with each space's
        :meth:`~ddsm.evaluation.FeatureSpace.describe`: reference root, the classifier's held-out images...)."""
        out = dict(domain_features=None, domain_reference_samples=None, inception_features=None,
                   inception_samples=self.job.inception_samples if self.inception is not None else None,
                   inception_reference_samples=None,
                   fidelity="PSNR / SSIM to the full model's image of the same seed")
        for prefix, space in (("domain", self.domain), ("inception", self.inception)):
            if space is not None:
                out.update({f"{prefix}_{k}": v for k, v in space.describe().items()})
        return out

    def __call__(self, images: torch.Tensor) -> dict:
        """PSNR / SSIM to the full model's images and the FIDs of ``images`` (cached by tensor identity)."""
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


def row_report(row: MethodRow, full: SampleResult, metrics: BenchmarkMetrics, job: BenchmarkJob) -> dict:
    """``row`` as a report row: its setting and status, and when it ran, the MACs it spent (against its budget,
    said in the note when over), its speed-up over ``full`` and its ``metrics``."""
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


def report_notes(report: dict, job: BenchmarkJob) -> List[str]:
    """The report's notes: how to read budgets, FID and speed-ups, and every method that spent over its budget."""
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
    if r["method"] in ("ddsm", "ddsm_widths"):
        return "the schedule file itself costs this much (searched for another budget, or remapped onto N steps)"
    return "the budget cannot be met exactly"
