"""Scoring schedules: the quality metrics a search optimises and the report evaluate.py writes.

Metrics (lower is better, so a search can minimise any of them):

* ``domain_fid`` / ``domain_kid``: FID / KID on the features of a small classifier trained on the embedded data
  (fast; named e.g. ``mnist-5k-16px-cnn-v1-3fa2b1c0`` in every report, never to be read as Inception FID);
* ``inception_fid``: FID on the standard TF-Inception pool3 features (slow on a CPU);
* ``fidelity``: ``1 - SSIM`` to the full-width samples of the same seeds (what AdaptiveDiffusion reports).

Every candidate schedule is scored on the same seeds (common random numbers), so differences between candidates
come from the schedules, not from the noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..data import load_dataset
from ..runtime import model_device, runtime_record
from .metrics import (InceptionFeatures, extract_features, feature_stats, fidelity_summary, frechet_distance,
                      kernel_inception_distance, load_or_compute_reference_stats, load_or_train_domain_classifier,
                      weights_sha256)
from ..sampling import SampleResult, SkipPolicy, balanced_labels, build_scheduler, sample

__all__ = ["METRICS", "FeatureSpace", "ScheduleEvaluator", "balanced_labels", "evaluate_schedule",
           "write_report"]

METRICS = ("domain_fid", "domain_kid", "inception_fid", "fidelity", "teacher_fid")
"""Search metrics (lower is better): FID / KID to the real data in the data set's classifier features or in
Inception features; ``fidelity`` = 1 - SSIM to the full model's images of the same seeds; ``teacher_fid`` = FID in
the classifier's features between the candidate's and the full model's images of the same seeds (Flexiffusion's
teacher-referenced FID: a distribution shift away from the full model, with the seed noise shared by both sides)."""


@dataclass
class FeatureSpace:
    """A feature network plus the cached reference statistics of a real data split in its features.

    Args:
        net: the feature network (``DomainFeatures`` or ``InceptionFeatures``), with a ``name``.
        dataset: data set name (``ddsm.data``), split and resolution of the reference images.
        reference_samples: how many real images make the reference (None: the whole split).
        device: where the feature network runs (None: where it is); its features stay float32.
    """

    net: torch.nn.Module
    dataset: str
    split: str
    resolution: int
    channels: int
    reference_samples: Optional[int] = None
    root: Optional[str] = None
    batch_size: int = 64
    progress: bool = True
    device: Optional[torch.device] = None

    def __post_init__(self):
        self.net.to(self.device)

    @property
    def name(self) -> str:
        return self.net.name

    @cached_property
    def reference(self):
        """The reference statistics, cached under a key of the data (name, resolved root, split, resolution,
        channels, N, fingerprint) and the feature network (name, weights' sha256)."""
        data = load_dataset(self.dataset, split=self.split, image_size=self.resolution, channels=self.channels,
                            root=self.root)
        n = len(data) if self.reference_samples is None else min(self.reference_samples, len(data))
        key = dict(dataset=self.dataset, root=data.root, split=self.split, resolution=self.resolution,
                   channels=self.channels, num_samples=n, data=data.fingerprint(), features=self.name,
                   weights_sha256=weights_sha256(self.net))

        def compute():
            images = data.images[:n] if data.images is not None else torch.stack([data[i][0] for i in range(n)])
            return extract_features(self.net, images, batch_size=self.batch_size, progress=self.progress)

        return load_or_compute_reference_stats(key, compute, keep_features=True)

    def features(self, images: torch.Tensor) -> np.ndarray:
        return extract_features(self.net, images, batch_size=self.batch_size, progress=False)

    def fid(self, images: torch.Tensor) -> float:
        mu, sigma = feature_stats(self.features(images))
        ref = self.reference
        return float(frechet_distance(mu, sigma, ref.mu, ref.sigma))

    def fid_kid(self, images: torch.Tensor) -> Tuple[float, float]:
        feats = self.features(images)
        mu, sigma = feature_stats(feats)
        ref = self.reference
        kid, _ = kernel_inception_distance(feats, ref.features, subset_size=min(len(feats), 1000), num_subsets=20)
        return float(frechet_distance(mu, sigma, ref.mu, ref.sigma)), float(kid)

    def describe(self) -> dict:
        """Where the numbers of this space come from, for reports: the feature network, the reference images and,
        for a domain classifier, its held-out accuracy and which images it was measured on."""
        key = self.reference.key
        out = dict(features=self.name, reference_samples=key["num_samples"], reference_root=key["root"],
                   reference_split=key["split"])
        if not isinstance(self.net, InceptionFeatures):
            info = getattr(self.net, "info", {})
            out["classifier_accuracy"] = getattr(self.net, "test_accuracy", None)
            out["classifier_held_out"] = {k: v for k, v in info.get("held_out", {}).items() if k != "held_out"}
        return out

    @classmethod
    def domain(cls, dataset: str, resolution: int, channels: int, progress: bool = True, **kw) -> "FeatureSpace":
        """The data set's domain classifier (trained on ``kw["root"]``'s data, cached) and its reference."""
        net = load_or_train_domain_classifier(dataset, image_size=resolution, channels=channels,
                                              root=kw.get("root"), progress=progress)
        return cls(net, dataset, "train", resolution, channels, progress=progress, **kw)

    @classmethod
    def inception(cls, dataset: str, resolution: int, channels: int, weights: Optional[str] = None,
                  reference_samples: Optional[int] = 1000, progress: bool = True, **kw) -> "FeatureSpace":
        return cls(InceptionFeatures(weights), dataset, "train", resolution, channels,
                   reference_samples=reference_samples, batch_size=32, progress=progress, **kw)


class ScheduleEvaluator:
    """``evaluator(widths, n) -> (quality, unet_forwards)`` for the search: samples seeds ``seed .. seed+n-1`` with
    the per-step ``widths`` and scores them with ``metric``. Deterministic per (widths, n)."""

    def __init__(self, model, scheduler_name: str, scheduler_config: dict, num_steps: int, metric: str,
                 features: Optional[FeatureSpace] = None, seed: int = 0, guidance_scale: float = 1.0,
                 batch_size: int = 64, skip_policy: Optional[SkipPolicy] = None, autoencoder=None,
                 accelerator=None):
        if metric not in METRICS:
            raise ValueError(f"metric={metric!r}: expected one of {list(METRICS)}")
        if metric != "fidelity" and features is None:
            raise ValueError(f"metric={metric!r} needs a FeatureSpace")
        self.model, self.metric, self.features = model, metric, features
        self.scheduler_name, self.scheduler_config, self.num_steps = scheduler_name, dict(scheduler_config), num_steps
        self.seed, self.guidance_scale, self.batch_size = seed, guidance_scale, batch_size
        self.skip_policy, self.autoencoder, self.accelerator = skip_policy, autoencoder, accelerator
        self._full: Optional[torch.Tensor] = None
        self._full_stats: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}
        self._full_source: Optional["ScheduleEvaluator"] = None
        self.reference_forwards = 0  # UNet forwards spent on the full model's images (fidelity, teacher_fid)

    @property
    def metric_name(self) -> str:
        if self.metric == "fidelity":
            return "1 - SSIM to full-width samples"
        if self.metric == "teacher_fid":
            return f"FID to full-width samples ({self.features.name} features)"
        return f"{self.metric} ({self.features.name} features)"

    def sibling(self, metric: str, features: Optional[FeatureSpace] = None) -> "ScheduleEvaluator":
        """An evaluator of another ``metric`` with this one's sampler, seeds and settings, sharing this one's
        full-width images (sampled once for both; their forwards are counted here)."""
        other = ScheduleEvaluator(self.model, self.scheduler_name, self.scheduler_config, self.num_steps, metric,
                                  features, seed=self.seed, guidance_scale=self.guidance_scale,
                                  batch_size=self.batch_size, skip_policy=self.skip_policy,
                                  autoencoder=self.autoencoder, accelerator=self.accelerator)
        other._full_source = self
        return other

    def run(self, widths: Sequence[float], n: int, skip_policy: Optional[SkipPolicy] = None,
            start: int = 0) -> SampleResult:
        """Sample seeds ``seed + start .. seed + n - 1`` (labels by index, as for the whole range) with ``widths``."""
        scheduler = build_scheduler(self.scheduler_name, self.scheduler_config)
        labels = balanced_labels(self.model, n)
        return sample(self.model, scheduler, list(widths), seeds=range(self.seed + start, self.seed + n),
                      class_labels=None if labels is None else labels[start:], guidance_scale=self.guidance_scale,
                      batch_size=self.batch_size, skip_policy=skip_policy, autoencoder=self.autoencoder,
                      accelerator=self.accelerator, progress=False)

    def full_images(self, n: int) -> torch.Tensor:
        """Full-width samples of the first ``n`` seeds. Each image depends only on its seed and index, so the cache
        is a prefix that grows by sampling only the seeds it lacks (counted in :attr:`reference_forwards`)."""
        if self._full_source is not None:
            return self._full_source.full_images(n)
        have = 0 if self._full is None else len(self._full)
        if have < n:
            more = self.run([max(self.model.width_choices)] * self.num_steps, n, start=have)
            self.reference_forwards += int(more.computed.sum()) * (2 if self.guidance_scale != 1.0 else 1)
            self._full = more.images if self._full is None else torch.cat([self._full, more.images])
        return self._full[:n]

    def score(self, images: torch.Tensor) -> float:
        if self.metric == "fidelity":
            return 1.0 - fidelity_summary(images, self.full_images(len(images)))["ssim"]
        if self.metric == "domain_kid":
            return self.features.fid_kid(images)[1]
        if self.metric == "teacher_fid":
            n = len(images)
            if n not in self._full_stats:
                self._full_stats[n] = feature_stats(self.features.features(self.full_images(n)))
            mu, sigma = feature_stats(self.features.features(images))
            return float(frechet_distance(mu, sigma, *self._full_stats[n]))
        return self.features.fid(images)

    def __call__(self, widths: List[float], n: int) -> Tuple[float, int]:
        """``(quality, forwards)``: the forwards this call spent, the full model's reference images included when
        this call had to sample them (fidelity, teacher_fid: once per new seed), so a search's total is honest."""
        source = self._full_source or self
        before = source.reference_forwards
        result = self.run(widths, n, self.skip_policy)
        forwards = int(result.computed.sum()) * (2 if self.guidance_scale != 1.0 else 1)
        quality = self.score(result.images)
        return quality, forwards + source.reference_forwards - before


# ----------------------------------------------------------------------------------------------------------------
# The evaluation report of one schedule
# ----------------------------------------------------------------------------------------------------------------


def evaluate_schedule(model, schedule, *, num_samples: int, dataset: str, seed: int = 10_000,
                      inception: bool = True, inception_weights: Optional[str] = None, domain: bool = True,
                      scheduler_name: Optional[str] = None, scheduler_config: Optional[dict] = None,
                      guidance_scale: float = 1.0, batch_size: int = 64, skip_policy: Optional[SkipPolicy] = None,
                      autoencoder=None, accelerator=None, progress: bool = True, data_root: Optional[str] = None,
                      inception_reference_samples: Optional[int] = None) -> Tuple[dict, torch.Tensor, torch.Tensor]:
    """Sample ``num_samples`` seeds with the full width and with ``schedule`` (same seeds, same process, timed
    side by side) and measure both. Returns (report dict, full-width images, step-aware images)."""
    cfg = model.config
    name = scheduler_name or schedule.scheduler_class_name or "DDIMScheduler"
    sched_cfg = dict(scheduler_config or schedule.scheduler_config or {})
    scheduler = build_scheduler(name, sched_cfg)
    scheduler.set_timesteps(len(schedule))
    if schedule.scheduler_class_name and name != schedule.scheduler_class_name:
        schedule = schedule.remap(scheduler=scheduler)
    labels = balanced_labels(model, num_samples)
    seeds = range(seed, seed + num_samples)
    common = dict(seeds=seeds, class_labels=labels, guidance_scale=guidance_scale, batch_size=batch_size,
                  autoencoder=autoencoder, accelerator=accelerator, progress=progress)
    full_w = max(model.width_choices)
    sample(model, build_scheduler(name, sched_cfg), [full_w] * len(schedule), **dict(common, seeds=seeds[:2],
           class_labels=labels[:2] if labels else None, progress=False))  # warm-up: first-call overheads
    full = sample(model, build_scheduler(name, sched_cfg), [full_w] * len(schedule), **common)
    ours = sample(model, build_scheduler(name, sched_cfg), schedule, skip_policy=skip_policy, **common)
    res = cfg.sample_size if autoencoder is None else full.images.shape[-1]
    channels, device = full.images.shape[1], model_device(model)

    def block(r: SampleResult) -> dict:
        return dict(macs_per_image=r.macs_per_image, macs_ratio=r.macs_per_image / full.macs_per_image,
                    seconds_per_image=r.seconds_per_image, mean_computed_steps=float(r.computed.sum(1).mean()))

    report = dict(
        num_samples=num_samples, seeds=[seed, seed + num_samples - 1], scheduler=name, num_steps=len(schedule),
        dataset=dataset, resolution=res, widths=list(schedule.widths), guidance_scale=guidance_scale,
        skip_policy=None if skip_policy is None else dict(delta=skip_policy.delta,
                                                          max_consecutive=skip_policy.max_consecutive),
        full=block(full), step_aware=block(ours), speedup=full.seconds / ours.seconds,
        **runtime_record(model, accelerator),
        decode_macs_per_image=ours.decode_macs_per_image,
        fidelity=fidelity_summary(ours.images, full.images), metrics={})
    if domain:
        space = FeatureSpace.domain(dataset, res, channels, progress=progress, root=data_root, device=device)
        for tag, imgs in (("full", full.images), ("step_aware", ours.images)):
            fid, kid = space.fid_kid(imgs)
            report["metrics"][f"domain_fid_{tag}"] = fid
            report["metrics"][f"domain_kid_{tag}"] = kid
        report["metrics"].update({f"domain_{k}": v for k, v in space.describe().items()})
    if inception:
        space = FeatureSpace.inception(dataset, res, channels, weights=inception_weights, progress=progress,
                                       reference_samples=inception_reference_samples or max(1000, num_samples),
                                       root=data_root, device=device)
        for tag, imgs in (("full", full.images), ("step_aware", ours.images)):
            report["metrics"][f"inception_fid_{tag}"] = space.fid(imgs)
        report["metrics"].update({f"inception_{k}": v for k, v in space.describe().items()})
    return report, full.images, ours.images


def write_report(report: dict, full_images: torch.Tensor, ours_images: torch.Tensor, out_dir) -> Dict[str, Path]:
    """report.json, report.md and grid.png (full width vs step-aware, same seeds) in ``out_dir``."""
    from ..images import save_grids_side_by_side
    from ..utils import atomic_write, atomic_write_json

    out = Path(out_dir)
    n = min(32, len(full_images))
    grid = save_grids_side_by_side(
        [full_images[:n], ours_images[:n]],
        [f"full width ({report['full']['macs_ratio']:.2f} MACs)",
         f"step-aware ({report['step_aware']['macs_ratio']:.2f} MACs)"], out / "grid.png", nrow=8)
    report = dict(report, grid=str(grid))
    paths = dict(json=atomic_write_json(out / "report.json", report), grid=grid)
    paths["md"] = atomic_write(out / "report.md", report_markdown(report))
    return paths


def report_markdown(r: dict) -> str:
    m = r["metrics"]
    rows = [("MACs per image (UNet)", f"{r['full']['macs_per_image'] / 1e6:,.1f} M",
             f"{r['step_aware']['macs_per_image'] / 1e6:,.1f} M"),
            ("MACs ratio to full", "1.000", f"{r['step_aware']['macs_ratio']:.3f}"),
            ("wall-clock per image", f"{r['full']['seconds_per_image'] * 1e3:.1f} ms",
             f"{r['step_aware']['seconds_per_image'] * 1e3:.1f} ms")]
    if "domain_fid_full" in m:
        rows.append((f"domain FID ({m['domain_features']})", f"{m['domain_fid_full']:.3f}",
                     f"{m['domain_fid_step_aware']:.3f}"))
        rows.append((f"domain KID ({m['domain_features']})", f"{m['domain_kid_full']:.5f}",
                     f"{m['domain_kid_step_aware']:.5f}"))
    if "inception_fid_full" in m:
        rows.append((f"Inception FID ({m['inception_features']}, ref n={m['inception_reference_samples']})",
                     f"{m['inception_fid_full']:.3f}", f"{m['inception_fid_step_aware']:.3f}"))
    fid = r["fidelity"]
    lines = [
        "# Step-aware schedule report", "",
        f"{r['num_samples']} samples (seeds {r['seeds'][0]}..{r['seeds'][1]}), {r['scheduler']} with "
        f"{r['num_steps']} steps, data set {r['dataset']} at {r['resolution']} px. Both columns use the same seeds "
        "and were timed in the same process.", "",
        "| | full width | step-aware |", "|---|---:|---:|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows], "",
        f"**Speed-up** (wall clock, full / step-aware): {r['speedup']:.2f}x.", "",
        f"**Fidelity to the full model** (same seeds): PSNR {fid['psnr']:.2f} dB, SSIM {fid['ssim']:.4f} "
        f"(worst image {fid['ssim_min']:.4f}).", "",
        "FID at a few hundred samples reads high and is biased: compare schedules only at the same N and seeds. "
        "Domain FID/KID use a small classifier trained on the data set, not Inception.", "",
        *_classifier_note(m),
        f"Widths per step: `{' '.join(f'{w:g}' for w in r['widths'])}`", "",
        f"![full width vs step-aware]({Path(r['grid']).name})", "",
    ]
    return "\n".join(lines)


def _classifier_note(m: dict) -> List[str]:
    """Which images the domain classifier was scored on and the reference was computed from (a report paragraph)."""
    held = m.get("domain_classifier_held_out")
    if not held:
        return []
    acc = m.get("domain_classifier_accuracy")
    where = ("the data set's test split" if held["kind"] == "test-split" else
             f"{held['fraction']:.0%} of each class held out, seed {held['seed']}, list sha256 "
             f"{held['held_out_sha256'][:12]}; {held['overlap']}")
    return [f"Domain classifier `{m['domain_features']}`: held-out accuracy "
            f"{'n/a' if acc is None else f'{acc:.3f}'} on {held['num_held_out']} images ({where}), trained on "
            f"{held['num_train']}. Reference statistics: {m['domain_reference_samples']} images of the "
            f"{m['domain_reference_split']} split of {m['domain_reference_root'] or 'the packaged data'}.", ""]
