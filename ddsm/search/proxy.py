"""Is the search's score a trustworthy proxy? Rank correlation of search scores with a held-out FID.

For each of a list of diverse schedules (:func:`~.diverse.diverse_schedules`):

* the search's score(s): each metric of ``metrics`` computed exactly as a search computes it (the same
  :class:`~ddsm.evaluation.ScheduleEvaluator`, seeds ``search_seed .. + N - 1``), at each N of ``search_samples``
  (the images of the smaller N are a prefix of the larger: seeds and labels depend only on the index);
* the held-out score: ``heldout_metric`` (Inception FID by default) on ``heldout_samples`` images of the disjoint
  seeds ``heldout_seed ..``;

then Spearman's rank correlation of each search score with the held-out one over the schedules, and what each
costs (UNet forwards, seconds). Rows are written atomically to the output JSON after each schedule; a rerun with the
same settings skips the finished ones (and computes only what is missing, e.g. a metric added to ``metrics``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from ..evaluation import METRICS, ScheduleEvaluator
from ..models import macs_table
from ..sampling import build_scheduler
from ..utils import atomic_write_json, canonical_config, config_sha256
from ..version import __version__
from .diverse import diverse_schedules
from .fingerprint import state_dict_sha256
from .job import metric_features
from .space import SearchError, SearchSpace

__all__ = ["ProxyCheckJob", "run_proxy_check", "spearman", "proxy_summary", "PROXY_FORMAT", "TRUST_THRESHOLD"]

PROXY_FORMAT = "ddsm-proxy-check"
TRUST_THRESHOLD = 0.8      # Spearman rho a proxy must reach ...
TRUST_MIN_SCHEDULES = 20   # ... over at least this many schedules ...
TRUST_HELDOUT = ("inception_fid", 1000)  # ... against Inception FID on at least this many held-out images


@dataclass(frozen=True)
class ProxyCheckJob:
    """Settings of a proxy check (the CLI fills them from flags and the run's config)."""

    output: str                                     # the JSON file (rows, summary); plot and table beside it
    metrics: Tuple[str, ...] = ("fidelity", "teacher_fid", "domain_fid")
    search_samples: Tuple[int, ...] = (256,)        # N of the search scores (each N a column per metric)
    search_seed: int = 0                            # search seeds: search_seed .. + N - 1 (as search/evolve.py)
    heldout_metric: str = "inception_fid"
    heldout_samples: int = 1000
    heldout_seed: int = 10_000                      # held-out seeds: heldout_seed .. + M - 1 (as eval/evaluate.py)
    num_schedules: int = 24
    seed: int = 0                                   # of the random schedules
    min_ratio: float = 0.2                          # MACs-ratio range of ramps, fewer steps and random mixes
    max_ratio: float = 0.9
    scheduler: str = "DDIMScheduler"
    num_steps: int = 50
    dataset: str = "mnist-5k"
    data_root: Optional[str] = None
    guidance_scale: float = 1.0
    batch_size: int = 64
    inception_weights: Optional[str] = None
    inception_reference_samples: Optional[int] = None  # default max(1000, heldout_samples)

    def __post_init__(self):
        object.__setattr__(self, "metrics", tuple(self.metrics))
        object.__setattr__(self, "search_samples", tuple(sorted(set(int(n) for n in self.search_samples))))
        if not self.metrics:
            raise SearchError("--metrics: expected at least one search metric")
        for name in (*self.metrics, self.heldout_metric):
            if name not in METRICS:
                raise SearchError(f"metric {name!r} is unknown; expected one of {list(METRICS)}")
        if len(set(self.metrics)) != len(self.metrics):
            raise SearchError(f"--metrics {list(self.metrics)} names a metric twice")
        if not self.search_samples or min(self.search_samples) < 2:
            raise SearchError(f"--search-samples {list(self.search_samples)}: expected sample counts >= 2")
        if self.heldout_samples < 2:
            raise SearchError(f"--heldout-samples {self.heldout_samples}: expected >= 2 (1000 for a real check)")
        if self.num_schedules < 3:
            raise SearchError(f"--num-schedules {self.num_schedules}: a rank correlation needs at least 3 "
                              f"({TRUST_MIN_SCHEDULES} or more for a real check)")
        if not 0 < self.min_ratio < self.max_ratio <= 1:
            raise SearchError(f"MACs ratio range [{self.min_ratio}, {self.max_ratio}]: expected 0 < --min-ratio < "
                              "--max-ratio <= 1")
        if self.num_steps < 2:
            raise SearchError(f"--steps {self.num_steps}: expected at least 2 sampling steps")
        search = (self.search_seed, self.search_seed + max(self.search_samples))
        held = (self.heldout_seed, self.heldout_seed + self.heldout_samples)
        if search[0] < held[1] and held[0] < search[1]:
            raise SearchError(f"held-out seeds {held[0]}..{held[1] - 1} overlap the search seeds "
                              f"{search[0]}..{search[1] - 1}; the held-out score must use other seeds "
                              "(--heldout-seed)")


def spearman(x: Sequence[float], y: Sequence[float]) -> Tuple[Optional[float], Optional[float]]:
    """Spearman's rank correlation of ``x`` and ``y`` (average ranks for ties) and its two-sided p-value, from
    ``scipy.stats.spearmanr``; ``(None, None)`` with fewer than 3 pairs or a constant side."""
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None, None
    res = stats.spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


def _header(model, job: ProxyCheckJob, scheduler, autoencoder, mixed_precision: str) -> dict:
    """What a row's numbers depend on besides its schedule; a rerun reuses rows only under an equal header."""
    def fingerprint(m):
        return None if m is None else dict(config_sha256=config_sha256(m.config), weights_sha256=state_dict_sha256(m))

    header = dict(model=fingerprint(model), autoencoder=fingerprint(autoencoder), scheduler=type(scheduler).__name__,
                  scheduler_config=canonical_config(scheduler.config), num_steps=job.num_steps,
                  guidance_scale=float(job.guidance_scale), mixed_precision=str(mixed_precision),
                  dataset=job.dataset, data_root=job.data_root, search_seed=job.search_seed,
                  heldout=dict(metric=job.heldout_metric, num_samples=job.heldout_samples, seed=job.heldout_seed,
                               inception_weights=job.inception_weights,
                               inception_reference_samples=job.inception_reference_samples))
    return json.loads(json.dumps(header, sort_keys=True, default=str))


def _load_rows(path: Path, header: dict) -> Tuple[Dict[tuple, dict], dict]:
    """The rows of an earlier run of the same check (by widths) and its one-time costs; nothing when there is none.
    Raises when the file is another check's."""
    if not path.is_file():
        return {}, {}
    state = json.loads(path.read_text())
    if state.get("format") != PROXY_FORMAT:
        raise SearchError(f"{path} exists and is not a proxy-check file (format {state.get('format')!r}); "
                          "use another --output")
    old = state.get("header", {})
    diff = [k for k in sorted(set(old) | set(header)) if old.get(k) != header.get(k)]
    if diff:
        names = ", ".join(f"{k}={json.dumps(old.get(k))[:60]} (this run: {json.dumps(header.get(k))[:60]})"
                          for k in diff)
        raise SearchError(f"{path} holds a proxy check made with other settings: {names}; use another --output "
                          "or delete it")
    rows = {tuple(r["widths"]): r for r in state.get("rows", []) + state.get("other_rows", [])}
    return rows, state.get("reference_cost", {})


def run_proxy_check(model, job: ProxyCheckJob, scheduler_config: dict, accelerator=None, autoencoder=None,
                    progress: bool = True) -> dict:
    """Score ``job.num_schedules`` diverse schedules with the search metrics and the held-out one; returns the
    report (also written to ``job.output`` after every schedule, by the main process)."""
    is_main = accelerator is None or accelerator.is_main_process
    show = progress and is_main
    out = Path(job.output)
    table = macs_table(model)
    space = SearchSpace.build(table, job.num_steps, allow_skip=True)
    schedules = diverse_schedules(space, job.num_schedules, job.seed, job.min_ratio, job.max_ratio)
    scheduler = build_scheduler(job.scheduler, scheduler_config)
    header = _header(model, job, scheduler, autoencoder, getattr(accelerator, "mixed_precision", "no"))
    done, reference_cost = _load_rows(out, header)

    spaces: Dict[str, object] = {}  # one feature space per kind, shared by the metrics that use it
    inception_kw = dict(weights=job.inception_weights,
                        reference_samples=job.inception_reference_samples or max(1000, job.heldout_samples))

    def features(metric: str):
        if metric == "fidelity":
            return None
        kind = "inception" if metric == "inception_fid" else "domain"
        if kind not in spaces:
            spaces[kind] = metric_features(metric, model, job.dataset, autoencoder=autoencoder, root=job.data_root,
                                           progress=show, **(inception_kw if kind == "inception" else {}))
        return spaces[kind]

    common = dict(guidance_scale=job.guidance_scale, batch_size=job.batch_size, autoencoder=autoencoder,
                  accelerator=accelerator)
    base = ScheduleEvaluator(model, job.scheduler, scheduler_config, job.num_steps, job.metrics[0],
                             features(job.metrics[0]), seed=job.search_seed, **common)
    scorers = {m: base if m == job.metrics[0] else base.sibling(m, features(m)) for m in job.metrics}
    held = ScheduleEvaluator(model, job.scheduler, scheduler_config, job.num_steps, job.heldout_metric,
                             features(job.heldout_metric), seed=job.heldout_seed, **common)
    per_forward = 2 if job.guidance_scale != 1.0 else 1

    def reference(ev: ScheduleEvaluator, n: int, key: str) -> None:
        """The full model's images of ``ev``'s first ``n`` seeds (fidelity, teacher_fid), sampled once and timed
        apart: a one-time cost of the metric, not of each schedule."""
        before, start = ev.reference_forwards, time.perf_counter()
        ev.full_images(n)
        if ev.reference_forwards > before:
            old = reference_cost.get(key, dict(unet_forwards=0, seconds=0.0))
            reference_cost[key] = dict(num_samples=n, unet_forwards=old["unet_forwards"] + ev.reference_forwards
                                       - before, seconds=old["seconds"] + time.perf_counter() - start)

    rows: List[dict] = []
    bar = tqdm(schedules, desc="proxy check", disable=not show)
    for entry in bar:
        row = done.get(tuple(entry["widths"])) or dict(entry, proxies={}, heldout=None)
        row.update(kind=entry["kind"], label=entry["label"])
        keys = [(m, n) for n in job.search_samples for m in job.metrics if f"{m}@{n}" not in row["proxies"]]
        bar.set_postfix_str(f"{entry['label']}: search scores" if keys else entry["label"])
        if keys:
            if any(m in ("fidelity", "teacher_fid") for m, _ in keys):
                reference(base, max(n for _, n in keys), "search")
            images, seconds, forwards, have = None, 0.0, 0, 0
            for n in sorted({n for _, n in keys}):  # grow one image set: N's images are a prefix of larger N's
                start = time.perf_counter()
                more = base.run(row["widths"], n, start=have)
                seconds += time.perf_counter() - start
                images = more.images if images is None else torch.cat([images, more.images])
                forwards += int(more.computed.sum()) * per_forward
                have = n
                for m in [m for m, nn in keys if nn == n]:
                    start = time.perf_counter()
                    value = scorers[m].score(images)
                    row["proxies"][f"{m}@{n}"] = dict(value=value, num_samples=n, unet_forwards=forwards,
                                                      seconds=seconds + time.perf_counter() - start)
        if row["heldout"] is None:
            bar.set_postfix_str(f"{entry['label']}: held-out {job.heldout_metric} on {job.heldout_samples}")
            if job.heldout_metric in ("fidelity", "teacher_fid"):
                reference(held, job.heldout_samples, "heldout")
            start = time.perf_counter()
            value, forwards = held(row["widths"], job.heldout_samples)
            row["heldout"] = dict(value=value, num_samples=job.heldout_samples, unet_forwards=forwards,
                                  seconds=time.perf_counter() - start)
        rows.append(row)
        done[tuple(row["widths"])] = row
        report = _report(job, header, rows, schedules, done, reference_cost, spaces)
        if is_main:
            atomic_write_json(out, report)
    return _report(job, header, rows, schedules, done, reference_cost, spaces)


def _report(job, header, rows, schedules, done, reference_cost, spaces) -> dict:
    keys = {tuple(e["widths"]) for e in schedules}
    other = [r for k, r in done.items() if k not in keys]
    return dict(format=PROXY_FORMAT, version=1, tool_version=__version__, header=header,
                settings=dict(metrics=list(job.metrics), search_samples=list(job.search_samples),
                              num_schedules=job.num_schedules, seed=job.seed, min_ratio=job.min_ratio,
                              max_ratio=job.max_ratio),
                features={k: v.name for k, v in spaces.items()}, reference_cost=reference_cost,
                summary=proxy_summary(rows, job.metrics, job.search_samples, job.heldout_metric,
                                      job.heldout_samples),
                rows=rows, other_rows=other)


def proxy_summary(rows: List[dict], metrics: Sequence[str], search_samples: Sequence[int], heldout_metric: str,
                  heldout_samples: int) -> dict:
    """Spearman rho of each search score (metric at N) with the held-out score over ``rows``, whether it passes the
    trust bar (rho >= 0.8 over >= 20 schedules against Inception FID on >= 1000 held-out images), and the mean cost
    per schedule of each score, also as a fraction of the held-out score's."""
    ready = [r for r in rows if r.get("heldout") is not None]
    held = [r["heldout"]["value"] for r in ready]
    held_cost = dict(unet_forwards_per_schedule=_mean([r["heldout"]["unet_forwards"] for r in ready]),
                     seconds_per_schedule=_mean([r["heldout"]["seconds"] for r in ready]))
    bar_held = heldout_metric == TRUST_HELDOUT[0] and heldout_samples >= TRUST_HELDOUT[1]
    out = dict(heldout_metric=heldout_metric, heldout_samples=heldout_samples, schedules=len(ready),
               threshold=TRUST_THRESHOLD, min_schedules=TRUST_MIN_SCHEDULES, heldout_meets_bar=bar_held,
               proxies={}, heldout=held_cost)
    for n in search_samples:
        for m in metrics:
            key = f"{m}@{n}"
            pairs = [(r["proxies"][key], h) for r, h in zip(ready, held) if key in r["proxies"]]
            rho, p = spearman([a["value"] for a, _ in pairs], [h for _, h in pairs])
            cost = dict(unet_forwards_per_schedule=_mean([a["unet_forwards"] for a, _ in pairs]),
                        seconds_per_schedule=_mean([a["seconds"] for a, _ in pairs]))
            out["proxies"][key] = dict(
                metric=m, num_samples=n, schedules=len(pairs), spearman=rho, p_value=p,
                passes=(bar_held and rho is not None and rho >= TRUST_THRESHOLD
                        and len(pairs) >= TRUST_MIN_SCHEDULES), **cost,
                **{f"{k.split('_per_')[0]}_vs_heldout": _ratio(v, held_cost[k]) for k, v in cost.items()})
    return out


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or not b else a / b


def _mean(values: List[float]) -> Optional[float]:
    return float(sum(values) / len(values)) if values else None
