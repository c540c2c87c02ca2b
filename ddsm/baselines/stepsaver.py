"""StepSaver: predict, per condition, the fewest sampling steps that keep the output close to a many-step reference.

StepSaver (step-count prediction per prompt) labels every condition with its *minimum step count*: the condition is
sampled at a many-step reference (e.g. 100 DDIM steps) and at each candidate count (5, 8, 10, ..., 50) with the
same seeds, and the label is the smallest candidate count whose mean SSIM to the reference is at least a threshold
(:mod:`ddsm.baselines.stepsaver_curves`). A small predictor then maps a condition to its count:

* class labels: a lookup table (label -> count);
* an embedding vector per condition (optional, given by the user, e.g. a text embedding of the class name): a k-NN
  or ridge regressor on the labelled conditions' embeddings, whose prediction is rounded *up* to a step count in
  use (so an unseen condition gets at least as many steps as its neighbours suggest).

A condition that never meets the threshold gets the largest candidate (``met: false`` in its record).

Typical use::

    saver = StepSaver.fit(model, "DDIMScheduler", scheduler_config, seeds=range(20_000, 20_008),
                          reference_steps=100, candidates=(5, 8, 10, 15, 20, 25, 30, 40, 50), threshold=0.9)
    saver.save("stepsaver.json")
    saver = StepSaver.load("stepsaver.json")
    saver.recommend_steps(3)                                     # steps for class 3
    result = sample_per_condition(model, "DDIMScheduler", scheduler_config, saver, seeds=..., class_labels=...)
    result.macs_per_image                                        # MACs actually spent (each class its own count)
    saver.schedule_for(3, schedule, "DDIMScheduler", scheduler_config)   # a width schedule on class 3's steps

:meth:`StepSaver.for_budget` picks the threshold (from the stored SSIM curves, no new sampling) that keeps the
mean step count over a label mix within a budget, for comparing StepSaver with other methods at equal MACs.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from ..version import __version__
from ..utils import PathLike, atomic_write_json
from .stepsaver_curves import (DEFAULT_CANDIDATES, RULES, Condition, StepSaverError, check_candidates,
                               condition_key, label_curves, min_steps, ssim_curves)

__all__ = ["FORMAT", "VERSION", "PREDICTORS", "StepSaver", "knn_predict", "ridge_predict", "remap_to_steps"]

FORMAT = "ddsm-stepsaver"
VERSION = 1
PREDICTORS = ("knn", "ridge")


@dataclass(frozen=True)
class StepSaver:
    """Per-condition minimum step counts and a predictor from condition to step count.

    Args:
        candidates: The candidate step counts (sorted, positive).
        threshold: Mean SSIM to the reference that a count must reach.
        curves: ``{condition: {steps: mean SSIM}}`` measured by :func:`ssim_curves` (kept, so the threshold can
            be changed later without sampling again).
        steps: ``{condition: step count}``: the lookup table (labelled from the curves).
        rule: Labelling rule, ``"stays"`` or ``"first"`` (see :func:`min_steps`).
        embeddings: Optional ``{condition: vector}`` (same length for all) for the embedding predictor.
        predictor: ``"knn"`` or ``"ridge"``: how an embedding is mapped to a step count.
        k: Neighbours for k-NN (capped at the number of conditions).
        ridge_alpha: L2 penalty of ridge regression (on standardised embeddings).
        reference_steps: The reference step count the curves were measured against.
        width: The width the network ran at while labelling.
        scheduler: ``{"class_name", "config"}`` of the scheduler the counts were found with.
        provenance: Free-form JSON (tool version, seeds, budget selection...).
    """

    candidates: Tuple[int, ...]
    threshold: float
    curves: Mapping[Condition, Mapping[int, float]]
    steps: Mapping[Condition, int]
    rule: str = "stays"
    embeddings: Optional[Mapping[Condition, Tuple[float, ...]]] = None
    predictor: str = "knn"
    k: int = 3
    ridge_alpha: float = 1.0
    reference_steps: Optional[int] = None
    width: Optional[float] = None
    scheduler: Optional[Mapping[str, Any]] = None
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        put("candidates", check_candidates(self.candidates))
        if self.rule not in RULES:
            raise StepSaverError(f"rule={self.rule!r}: expected one of {list(RULES)}")
        if self.predictor not in PREDICTORS:
            raise StepSaverError(f"predictor={self.predictor!r}: expected one of {list(PREDICTORS)}")
        if not (isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold)):
            raise StepSaverError(f"threshold={self.threshold!r}: expected a finite number")
        if not isinstance(self.k, int) or self.k <= 0:
            raise StepSaverError(f"k={self.k!r}: expected a positive int")
        if not self.ridge_alpha >= 0:
            raise StepSaverError(f"ridge_alpha={self.ridge_alpha!r}: expected >= 0")
        steps = {condition_key(c): int(s) for c, s in self.steps.items()}
        if not steps:
            raise StepSaverError("steps is empty: no condition was labelled")
        bad = {c: s for c, s in steps.items() if s <= 0}
        if bad:
            raise StepSaverError(f"steps must be positive ints, got {bad}")
        if None in steps and len(steps) > 1:
            raise StepSaverError("steps mixes None (unconditional) with class labels")
        put("steps", steps)
        curves = {condition_key(c): {int(s): float(v) for s, v in curve.items()} for c, curve in self.curves.items()}
        missing = sorted(set(steps) - set(curves), key=str)
        if missing:
            raise StepSaverError(f"curves has no entry for condition(s) {missing}")
        put("curves", curves)
        if self.embeddings is not None:
            emb = {condition_key(c): tuple(float(x) for x in np.asarray(v, dtype=np.float64).ravel())
                   for c, v in self.embeddings.items()}
            missing = sorted(set(steps) - set(emb), key=str)
            if missing:
                raise StepSaverError(f"embeddings has no vector for condition(s) {missing}")
            dims = {len(v) for v in emb.values()}
            if len(dims) != 1 or 0 in dims:
                raise StepSaverError(f"embeddings must all have the same non-zero length, got lengths {sorted(dims)}")
            if not all(math.isfinite(x) for v in emb.values() for x in v):
                raise StepSaverError("embeddings contain NaN or inf")
            put("embeddings", {c: emb[c] for c in steps})

    # ------------------------------------------------------------------------------------------------ building

    @classmethod
    def from_curves(cls, curves: Mapping[Condition, Mapping[int, float]], threshold: float, *,
                    rule: str = "stays", candidates: Optional[Sequence[int]] = None, **kwargs) -> "StepSaver":
        """Label every condition of ``curves`` with :func:`min_steps` (the largest candidate when none meets the
        threshold) and build the predictor. ``candidates`` default to the counts in the curves."""
        counts = sorted({int(s) for curve in curves.values() for s in curve})
        candidates = check_candidates(candidates if candidates is not None else counts)
        steps = label_curves(curves, threshold, rule, candidates)
        return cls(candidates=candidates, threshold=float(threshold), curves=curves, steps=steps, rule=rule,
                   **kwargs)

    @classmethod
    def fit(cls, model, scheduler_name: str, scheduler_config: Mapping[str, Any], *, seeds: Sequence[int],
            candidates: Sequence[int] = DEFAULT_CANDIDATES, reference_steps: int = 100, threshold: float = 0.9,
            rule: str = "stays", conditions: Optional[Sequence[Condition]] = None,
            embeddings: Optional[Mapping[Condition, Sequence[float]]] = None, predictor: str = "knn", k: int = 3,
            ridge_alpha: float = 1.0, width: Optional[float] = None, guidance_scale: float = 1.0,
            batch_size: int = 64, autoencoder=None, accelerator=None, progress: bool = True) -> "StepSaver":
        """Measure the SSIM curves of every condition on ``model`` (:func:`ssim_curves`) and label them."""
        seeds = [int(s) for s in seeds]
        width = float(width) if width is not None else max(model.width_choices)
        start = time.perf_counter()
        curves = ssim_curves(model, scheduler_name, scheduler_config, seeds=seeds, candidates=candidates,
                             reference_steps=reference_steps, conditions=conditions, width=width,
                             guidance_scale=guidance_scale, batch_size=batch_size, autoencoder=autoencoder,
                             accelerator=accelerator, progress=progress)
        provenance = dict(tool_version=__version__, config_sha256=getattr(model, "config_sha256", None),
                          seeds=[seeds[0], seeds[-1]], samples_per_condition=len(seeds),
                          guidance_scale=guidance_scale, fit_seconds=time.perf_counter() - start)
        scheduler = dict(class_name=scheduler_name, config=json.loads(json.dumps(dict(scheduler_config),
                                                                                 default=_json_default)))
        return cls.from_curves(curves, threshold, rule=rule, candidates=candidates, embeddings=embeddings,
                               predictor=predictor, k=k, ridge_alpha=ridge_alpha, reference_steps=reference_steps,
                               width=width, scheduler=scheduler, provenance=provenance)

    def with_threshold(self, threshold: float) -> "StepSaver":
        """The same curves labelled at another threshold (no sampling)."""
        steps = label_curves(self.curves, threshold, self.rule, self.candidates)
        return replace(self, threshold=float(threshold), steps=steps)

    # ------------------------------------------------------------------------------------------------ predicting

    @property
    def conditions(self) -> List[Condition]:
        return list(self.steps)

    @property
    def step_options(self) -> Tuple[int, ...]:
        """Counts a prediction can be rounded up to: the candidates and every count in the table."""
        return tuple(sorted(set(self.candidates) | set(self.steps.values())))

    def recommend_steps(self, condition: Any) -> int:
        """The step count for ``condition``: a class label (or None for an unconditional model) is looked up in the
        table; a vector (list / array / tensor of floats) goes through the embedding predictor (k-NN or ridge),
        rounded up to a step count in use."""
        if condition is None or isinstance(condition, (int, np.integer)) or (
                getattr(condition, "ndim", None) == 0 and not isinstance(condition, float)):
            key = condition_key(condition)
            if key not in self.steps:
                raise StepSaverError(f"condition {key!r} was not labelled; labelled conditions: "
                                     f"{sorted(self.steps, key=str)} (pass an embedding vector for an unseen one)")
            return self.steps[key]
        return self.predict_embedding(condition)

    def predict_embedding(self, embedding: Any) -> int:
        """Step count for an embedding vector (seen or unseen), rounded up to a step count in use."""
        if self.embeddings is None:
            raise StepSaverError("this StepSaver has no embeddings: fit it with embeddings={label: vector} to "
                                 "predict from a vector")
        x = np.asarray(embedding.detach().cpu() if torch.is_tensor(embedding) else embedding,
                       dtype=np.float64).ravel()
        conds = self.conditions
        X = np.array([self.embeddings[c] for c in conds], dtype=np.float64)  # (K, D)
        y = np.array([self.steps[c] for c in conds], dtype=np.float64)       # (K,)
        if x.shape[0] != X.shape[1]:
            raise StepSaverError(f"embedding has {x.shape[0]} values; the fitted embeddings have {X.shape[1]}")
        if not np.isfinite(x).all():
            raise StepSaverError("embedding contains NaN or inf")
        if self.predictor == "knn":
            value = knn_predict(X, y, x, self.k)
        else:
            value = ridge_predict(X, y, x, self.ridge_alpha)
        options = self.step_options
        value = min(max(value, options[0]), options[-1])
        return next(s for s in options if s >= value - 1e-9)

    def mean_steps(self, weights: Optional[Mapping[Condition, float]] = None) -> float:
        """Mean step count over conditions weighted by ``weights`` (default: equal)."""
        weights = {condition_key(c): float(w) for c, w in (weights or {c: 1.0 for c in self.steps}).items()}
        missing = sorted(set(weights) - set(self.steps), key=str)
        if missing:
            raise StepSaverError(f"weights name condition(s) {missing} that were not labelled")
        total = sum(weights.values())
        if total <= 0:
            raise StepSaverError("weights sum to zero")
        return sum(w * self.steps[c] for c, w in weights.items()) / total

    # ------------------------------------------------------------------------------------------------ budgets

    def for_budget(self, max_mean_steps: float, weights: Optional[Mapping[Condition, float]] = None,
                   fill: bool = False) -> "StepSaver":
        """A StepSaver whose weighted mean step count is at most ``max_mean_steps``, chosen on the stored curves.

        If the fitted counts fit, they are kept (``fill=True``: the threshold is *raised* as far as the budget
        allows instead). Otherwise the threshold is lowered to the highest value whose counts fit. If even the
        smallest candidate everywhere does not fit, every condition gets ``floor(max_mean_steps)`` steps (a count
        outside the candidates, whose SSIM was not measured). The choice is recorded in ``provenance["budget"]``.
        """
        if not max_mean_steps >= 1:
            raise StepSaverError(f"max_mean_steps={max_mean_steps!r}: a budget below one step per image cannot be "
                                 "met")
        weights = weights or {c: 1.0 for c in self.steps}
        fitted = self.mean_steps(weights)
        levels = sorted({v for curve in self.curves.values() for v in curve.values()} | {self.threshold})
        fits = [t for t in levels if self.with_threshold(t).mean_steps(weights) <= max_mean_steps + 1e-9]
        if fitted <= max_mean_steps + 1e-9 and not fill:
            chosen, mode = self, "kept"
        elif fits:  # the highest threshold whose counts fit: raised (fill) or lowered (over budget)
            t = max(fits)
            chosen = self.with_threshold(t)
            mode = "kept" if t == self.threshold else ("raised" if t > self.threshold else "lowered")
        else:
            count = int(math.floor(max_mean_steps + 1e-9))
            chosen = replace(self, steps={c: count for c in self.steps})
            mode = "scaled"
        record = dict(max_mean_steps=float(max_mean_steps), fitted_threshold=self.threshold,
                      fitted_mean_steps=fitted, threshold=chosen.threshold, mean_steps=chosen.mean_steps(weights),
                      mode=mode)
        if mode == "scaled":
            record["note"] = (f"even {self.candidates[0]} steps everywhere exceeds the budget: every condition "
                              f"gets {int(math.floor(max_mean_steps + 1e-9))} steps (SSIM not measured there)")
        return replace(chosen, provenance={**dict(self.provenance), "budget": record})

    # ------------------------------------------------------------------------------------------------ schedules

    def schedule_for(self, condition: Any, schedule, scheduler_name: str, scheduler_config: Mapping[str, Any]):
        """``schedule`` (a :class:`ddsm.schedules.Schedule`) remapped by nearest timestep onto the recommended step
        count of ``condition`` with the given scheduler (:func:`remap_to_steps`)."""
        return remap_to_steps(schedule, self.recommend_steps(condition), scheduler_name, scheduler_config)

    # ------------------------------------------------------------------------------------------------ JSON

    def to_dict(self) -> Dict[str, Any]:
        records = []
        for c in self.conditions:
            met = min_steps(self.curves[c], self.threshold, self.rule) is not None
            records.append(dict(label=c, steps=self.steps[c], met=met,
                                ssim={str(s): v for s, v in sorted(self.curves[c].items())},
                                embedding=None if self.embeddings is None else list(self.embeddings[c])))
        return {"format": FORMAT, "version": VERSION, "threshold": self.threshold, "rule": self.rule,
                "candidates": list(self.candidates), "reference_steps": self.reference_steps, "width": self.width,
                "scheduler": None if self.scheduler is None else dict(self.scheduler),
                "predictor": {"kind": self.predictor, "k": self.k, "ridge_alpha": self.ridge_alpha},
                "conditions": records, "provenance": dict(self.provenance)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "StepSaver":
        if not isinstance(data, Mapping):
            raise StepSaverError(f"a StepSaver file must hold a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise StepSaverError(f"format: expected {FORMAT!r}, got {data.get('format')!r}")
        if data.get("version") != VERSION:
            raise StepSaverError(f"version: expected {VERSION}, got {data.get('version')!r}")
        for key in ("threshold", "candidates", "conditions", "predictor"):
            if key not in data:
                raise StepSaverError(f"missing key {key!r}")
        records = data["conditions"]
        if not isinstance(records, list) or not records:
            raise StepSaverError("conditions must be a non-empty list")
        curves, steps, embeddings = {}, {}, {}
        for i, r in enumerate(records):
            if not isinstance(r, Mapping) or not {"label", "steps", "ssim"} <= set(r):
                raise StepSaverError(f"conditions[{i}] must be an object with label, steps and ssim")
            c = condition_key(r["label"])
            if c in steps:
                raise StepSaverError(f"conditions[{i}]: label {c!r} appears twice")
            steps[c] = r["steps"]
            if not isinstance(r["steps"], int) or isinstance(r["steps"], bool):
                raise StepSaverError(f"conditions[{i}].steps = {r['steps']!r}: expected an int")
            try:
                curves[c] = {int(s): float(v) for s, v in r["ssim"].items()}
            except (AttributeError, TypeError, ValueError):
                raise StepSaverError(f"conditions[{i}].ssim must map step counts to numbers") from None
            if r.get("embedding") is not None:
                embeddings[c] = r["embedding"]
        if embeddings and len(embeddings) != len(steps):
            raise StepSaverError("either every condition has an embedding or none does")
        pred = data["predictor"]
        if not isinstance(pred, Mapping) or "kind" not in pred:
            raise StepSaverError("predictor must be an object with a 'kind'")
        return cls(candidates=data["candidates"], threshold=data["threshold"], curves=curves, steps=steps,
                   rule=data.get("rule", "stays"), embeddings=embeddings or None, predictor=pred["kind"],
                   k=pred.get("k", 3), ridge_alpha=pred.get("ridge_alpha", 1.0),
                   reference_steps=data.get("reference_steps"), width=data.get("width"),
                   scheduler=data.get("scheduler"), provenance=data.get("provenance") or {})

    def save(self, path: PathLike) -> Path:
        """Write the StepSaver as JSON, atomically."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: PathLike) -> "StepSaver":
        """Read and validate a StepSaver JSON file; errors name the file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"StepSaver file {str(path)!r} does not exist")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except ValueError as e:  # JSONDecodeError and StepSaverError
            raise StepSaverError(f"{path}: {e}") from None


def knn_predict(X: np.ndarray, y: np.ndarray, x: np.ndarray, k: int) -> float:
    """The mean of ``y`` over the ``k`` rows of ``X`` nearest to ``x`` (Euclidean; ``k`` capped at the rows)."""
    # not sklearn's KNeighborsRegressor: it breaks distance ties in no set order, here the earlier condition wins
    nearest = np.argsort(np.linalg.norm(X - x[None], axis=1), kind="stable")[:min(k, len(X))]
    return float(y[nearest].mean())


def ridge_predict(X: np.ndarray, y: np.ndarray, x: np.ndarray, alpha: float) -> float:
    """Ridge regression of ``y`` on the standardised rows of ``X``, with an intercept, evaluated at ``x``.

    A coordinate constant over the rows (up to rounding) is centred but not scaled (scikit-learn's StandardScaler).
    """
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), Ridge(alpha=alpha, solver="svd")).fit(X, y)
    return float(model.predict(x[None])[0])


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (tuple, set)):
        return list(x)
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def remap_to_steps(schedule, num_steps: int, scheduler_name: str, scheduler_config: Mapping[str, Any]):
    """``schedule`` moved onto ``num_steps`` steps of the named scheduler, by nearest timestep
    (:meth:`ddsm.schedules.Schedule.remap`)."""
    from ..sampling import build_scheduler

    scheduler = build_scheduler(scheduler_name, dict(scheduler_config))
    scheduler.set_timesteps(int(num_steps))
    return schedule.remap(scheduler=scheduler)
