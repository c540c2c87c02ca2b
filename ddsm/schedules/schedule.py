"""Step-aware schedules: which width of the slimmable UNet runs at each sampling step.

A :class:`Schedule` is a small, validated, immutable value object. ``widths[i]`` is the width used at
``timesteps[i]`` (sampling order, noisiest first); ``0`` means *skip*: run no network and reuse the previous noise
prediction (never at the first step, which has nothing to reuse). It carries the fingerprint of the supernet it was
made for (``config_sha256`` of the model config), the scheduler it was made with, and optional MACs, metrics and
provenance. Its JSON form is the project's public schedule file (see DESIGN.md)::

    {
      "format": "ddsm-schedule", "version": 1,
      "model": {"config_sha256": "...", "width_choices": [0.25, 0.5, 0.75, 1.0]},
      "scheduler": {"class_name": "DDIMScheduler", "config": {...}, "num_inference_steps": 50},
      "timesteps": [980, 960, ..., 0],
      "widths": [0.5, 0.5, ..., 1.0],
      "macs": {"per_step": [...], "total": 0, "full": 0, "ratio": 0.5},
      "metrics": {"fid": 0.0, ...},
      "provenance": {"tool_version": "...", ...}
    }

``"scheduler"``, ``"macs"`` and ``"metrics"`` may be ``null`` (a schedule remapped onto bare timesteps is tied to no
scheduler; MACs and metrics are filled in by :meth:`Schedule.with_macs` / :meth:`Schedule.with_metrics`).

Typical use::

    scheduler = DDIMScheduler.from_config(cfg)
    scheduler.set_timesteps(50)
    schedule = Schedule.ramp(model, scheduler, small_width=0.5, large_width=1.0, fraction_small=0.4)
    schedule = schedule.with_macs(macs_table(model))
    schedule.save("schedule.json")
    ...
    schedule = Schedule.load("schedule.json", model)      # checks the model fingerprint
    schedule.check_scheduler(scheduler)                    # or schedule.remap(scheduler=other_scheduler)
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import inspect
import json
import math
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..version import __version__
from ..utils import PathLike, atomic_write, canonical_config, config_sha256

__all__ = [
    "FORMAT",
    "VERSION",
    "DDSM_OFFICIAL_LENGTH",
    "FingerprintMismatchWarning",
    "FrozenDict",
    "Schedule",
    "ScheduleError",
    "parse_ddsm_official",
]

FORMAT = "ddsm-schedule"
VERSION = 1
# DDSM's published schedules hold one width per DDPM timestep t = 0..T-1, with T = 1000.
DDSM_OFFICIAL_LENGTH = 1000
# A DDSM schedule file is ~5 kB; refuse anything absurdly large before parsing it.
_MAX_OFFICIAL_BYTES = 1 << 20

_TOP_KEYS = ("format", "version", "model", "scheduler", "timesteps", "widths", "macs", "metrics", "provenance")
_REQUIRED_TOP_KEYS = ("format", "version", "model", "timesteps", "widths")
_MODEL_KEYS = ("config_sha256", "width_choices")
_SCHEDULER_KEYS = ("class_name", "config", "num_inference_steps")
_MACS_KEYS = ("per_step", "total", "full", "ratio")

Number = Union[int, float]


class ScheduleError(ValueError):
    """A schedule (or schedule file) is invalid, or does not fit the model or scheduler it is used with."""


class FingerprintMismatchWarning(UserWarning):
    """A schedule was used with a model it was not made for, because the caller overrode the check on purpose."""


# ----------------------------------------------------------------------------------------------------------------
# Small conversion and checking helpers
# ----------------------------------------------------------------------------------------------------------------


class FrozenDict(dict):
    """A read-only ``dict``: the mappings inside a :class:`Schedule`. A real ``dict`` subclass (not a
    ``MappingProxyType``) so that ``json.dumps`` and diffusers' ``Scheduler.from_config`` accept it as is."""

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a Schedule is immutable: use with_macs / with_metrics / with_provenance for a changed copy")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only  # type: ignore

    def __reduce__(self) -> Tuple[type, Tuple[dict]]:  # pickle and copy rebuild it whole, never item by item
        return type(self), (dict(self),)


def _scalar(x: Any) -> Any:
    """numpy / torch 0-d scalars to Python numbers; anything else unchanged."""
    if isinstance(x, np.generic):
        return x.item()
    if getattr(x, "ndim", None) == 0 and hasattr(x, "item"):  # 0-d torch tensor or numpy array
        return x.item()
    return x


def _is_real(x: Any) -> bool:
    """An int or float, but not a bool (``True`` is an ``int`` in Python and must not pass for width 1)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _as_tuple(value: Any, name: str) -> tuple:
    """A list, tuple, numpy array or tensor as a tuple of Python scalars; strings and mappings are refused."""
    if isinstance(value, (str, bytes, Mapping)) or value is None:
        raise ScheduleError(f"{name} must be a list, got {type(value).__name__} {value!r:.80}")
    if hasattr(value, "tolist"):  # numpy array or torch tensor
        value = value.tolist()
    try:
        return tuple(_scalar(x) for x in value)
    except TypeError:
        raise ScheduleError(f"{name} must be a list, got {type(value).__name__} {value!r:.80}") from None


def _check_number(x: Any, name: str) -> Number:
    x = _scalar(x)
    if not _is_real(x):
        raise ScheduleError(f"{name} = {x!r} must be a number, got {type(x).__name__}")
    if isinstance(x, float) and not math.isfinite(x):
        raise ScheduleError(f"{name} = {x!r} is not finite")
    return x


def _freeze_json(value: Any, name: str) -> Any:
    """Check that ``value`` is JSON (str keys, finite numbers) and freeze it: mappings become :class:`FrozenDict`,
    lists become tuples. ``name`` is the field path used in error messages."""
    value = _scalar(value)
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ScheduleError(f"{name} = {value!r} is not finite (JSON cannot hold NaN or infinity)")
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ScheduleError(f"{name} has a non-string key {k!r} ({type(k).__name__}); JSON keys are strings")
            out[k] = _freeze_json(v, f"{name}.{k}")
        return FrozenDict(out)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(_freeze_json(v, f"{name}[{i}]") for i, v in enumerate(value))
    raise ScheduleError(f"{name} = {value!r:.80} has type {type(value).__name__}, which JSON cannot hold")


def _thaw(value: Any) -> Any:
    """Inverse of :func:`_freeze_json`: plain dicts and lists, ready for ``json.dumps``."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def _dumps(obj: Any, level: int = 0) -> str:
    """Pretty JSON with flat lists of numbers on one line, so a 1000-step schedule stays readable and diffable."""
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(k)}: {_dumps(v, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        items = [f"{inner}{_dumps(v, level + 1)}" for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj, allow_nan=False)


def _no_duplicate_keys(pairs: List[Tuple[str, Any]]) -> dict:
    keys = [k for k, _ in pairs]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ScheduleError(f"duplicate key(s) {dupes} in a JSON object")
    return dict(pairs)


def _fmt_width(w: float) -> str:
    return "skip" if w == 0 else repr(float(w))


def _nearest_index(old: np.ndarray, new: np.ndarray, candidates: Optional[np.ndarray] = None) -> np.ndarray:
    """For each value in ``new``, the index into ``old`` of the nearest value. Exact ties go to the smaller old
    value (less noise); equal old values (a scheduler may repeat a timestep) to the earliest step.
    ``candidates`` (a boolean mask over ``old``) restricts the choice."""
    idx = np.arange(len(old)) if candidates is None else np.flatnonzero(candidates)
    order = idx[np.lexsort((idx, old[idx]))]  # sorted by (timestep, step index): argmin's first hit wins ties
    dist = np.abs(new[:, None] - old[order][None, :])
    return order[np.argmin(dist, axis=1)]


def _model_info(model: Any) -> Tuple[Tuple[float, ...], str]:
    """(width_choices, config_sha256) of a model: anything with a ``.config`` mapping holding ``width_choices``."""
    config = getattr(model, "config", None)
    if not isinstance(config, Mapping):
        raise ScheduleError(f"model must have a .config mapping (a diffusers ModelMixin), got {type(model).__name__}")
    if "width_choices" not in config:
        raise ScheduleError(f"model.config has no 'width_choices' (keys: {sorted(config)})")
    choices = _as_tuple(config["width_choices"], "model.config['width_choices']")
    choices = tuple(float(_check_number(w, f"model.config['width_choices'][{i}]")) for i, w in enumerate(choices))
    return choices, config_sha256(config)


def _scheduler_config(scheduler: Any) -> dict:
    """The scheduler's public config as JSON. JSON cannot hold infinities; a non-finite value equal to the
    constructor's default (DPMSolver's ``lambda_min_clipped=-inf``) is left out, since ``from_config`` restores
    it; any other non-finite value is an error."""
    config = dict(canonical_config(scheduler.config))
    try:
        defaults = {k: p.default for k, p in inspect.signature(type(scheduler).__init__).parameters.items()}
    except (TypeError, ValueError):
        defaults = {}
    for key, value in list(config.items()):
        value = _scalar(value)
        if isinstance(value, float) and not math.isfinite(value):
            default = defaults.get(key, inspect.Parameter.empty)
            if isinstance(default, float) and (default == value or (math.isnan(default) and math.isnan(value))):
                del config[key]
            else:
                raise ScheduleError(
                    f"scheduler.config.{key} = {value!r} cannot be stored in JSON and is not the default "
                    f"({default!r}) of {type(scheduler).__name__}")
    return config


def _num_steps(scheduler: Any, num_inference_steps: Optional[int]) -> int:
    """Number of timesteps the scheduler will visit, calling ``set_timesteps(num_inference_steps)`` if given."""
    if num_inference_steps is not None:
        scheduler.set_timesteps(num_inference_steps)
    if getattr(scheduler, "num_inference_steps", None) is None:
        raise ScheduleError(
            f"{type(scheduler).__name__}.set_timesteps(n) has not been called: call it first, "
            "or pass num_inference_steps=n")
    return len(scheduler.timesteps)


def _scheduler_info(scheduler: Any, num_inference_steps: Optional[int]) -> Tuple[str, dict, int, tuple]:
    """(class name, config, num_inference_steps, timesteps) of a diffusers scheduler, calling
    ``set_timesteps(num_inference_steps)`` first when that is given."""
    _num_steps(scheduler, num_inference_steps)
    steps = scheduler.num_inference_steps
    timesteps = _as_tuple(scheduler.timesteps, "scheduler.timesteps")
    return type(scheduler).__name__, _scheduler_config(scheduler), int(steps), timesteps


# ----------------------------------------------------------------------------------------------------------------
# The DDSM official format
# ----------------------------------------------------------------------------------------------------------------


def parse_ddsm_official(text: Union[str, bytes]) -> Tuple[float, ...]:
    """Parse DDSM's published schedule: one Python list literal of widths indexed by DDPM timestep ``t = 0..999``
    (``[1, 1, ..., 0.75, ..., 0.5]``; whitespace, newlines and a trailing comma allowed).

    The text is read as data only (``json.loads``, then ``ast.literal_eval`` for Python-only syntax such as a
    trailing comma); nothing in it is executed (DDSM itself reads it back with ``eval``). Returns the widths as
    floats; membership in the model's width choices is checked by :meth:`Schedule.import_ddsm_official`.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if len(text) > _MAX_OFFICIAL_BYTES:
        raise ScheduleError(f"DDSM schedule text is {len(text)} characters; expected a list of "
                            f"{DDSM_OFFICIAL_LENGTH} widths (~5 kB)")
    try:
        values = json.loads(text)
    except ValueError:
        try:
            values = ast.literal_eval(text.strip())
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
            raise ScheduleError(
                "DDSM schedule text is not one list literal of numbers (it is parsed as data, never executed; "
                f"DDSM's search appends each result to search.txt, so keep only one list): "
                f"{type(e).__name__}: {e} (text starts {text.strip()[:60]!r})") from None
    if not isinstance(values, (list, tuple)):
        raise ScheduleError(f"DDSM schedule must be a list of widths, got {type(values).__name__}")
    if len(values) != DDSM_OFFICIAL_LENGTH:
        raise ScheduleError(f"DDSM schedule length: expected {DDSM_OFFICIAL_LENGTH} widths (one per DDPM timestep), "
                            f"got {len(values)}")
    out = []
    for t, w in enumerate(values):
        out.append(float(_check_number(w, f"DDSM schedule[t={t}]")))
    return tuple(out)


# ----------------------------------------------------------------------------------------------------------------
# The schedule
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """A width per sampling step for one slimmable supernet.

    Build one with :meth:`uniform`, :meth:`ramp`, :meth:`from_widths` or :meth:`import_ddsm_official`, or read
    one with :meth:`load`. Every construction validates (``ScheduleError`` naming the field and values); the
    object is immutable (tuples and read-only mappings inside), and ``with_*`` / :meth:`remap` return new ones.

    Args:
        timesteps: The scheduler's timesteps in sampling order (``scheduler.timesteps`` after ``set_timesteps``).
            All ints (DDPM, DDIM, DPM-Solver) or all floats (Euler with fractional timesteps); never mixed.
        widths: ``widths[i]`` is the width at ``timesteps[i]``: one of ``width_choices``, or 0 to skip the
            network and reuse the previous noise prediction (not allowed at step 0).
        width_choices: The supernet's width choices (``model.config["width_choices"]``), without duplicates.
        config_sha256: Fingerprint of the supernet's config (:func:`ddsm.utils.config_sha256`).
        scheduler_class_name: Class name of the diffusers scheduler (``None`` when tied to no scheduler).
        scheduler_config: That scheduler's config (public keys; ``None`` when tied to no scheduler).
        num_inference_steps: The step count given to ``set_timesteps``; must equal ``len(timesteps)``.
        macs: ``{"per_step", "total", "full", "ratio"}`` (see :meth:`with_macs`), or ``None``.
        metrics: Free-form JSON measured for this schedule (``fid``, ``fid_features``, ``num_samples``...), or None.
        provenance: Free-form JSON on how the schedule was made (``tool_version``, ``search`` settings...).
    """

    timesteps: Tuple[Number, ...]
    widths: Tuple[float, ...]
    width_choices: Tuple[float, ...]
    config_sha256: str
    scheduler_class_name: Optional[str] = None
    scheduler_config: Optional[Mapping[str, Any]] = field(default=None, hash=False)
    num_inference_steps: Optional[int] = None
    macs: Optional[Mapping[str, Any]] = field(default=None, hash=False)
    metrics: Optional[Mapping[str, Any]] = field(default=None, hash=False)
    provenance: Mapping[str, Any] = field(default_factory=dict, hash=False)

    # ------------------------------------------------------------------------------------------------ validation

    def __post_init__(self) -> None:
        # Normalise (lists -> tuples, numpy/torch scalars -> Python, ints -> float widths) while checking, so that
        # a Schedule built in code and one read from JSON compare equal.
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        # 1. width choices: finite, positive, no duplicates (0 is reserved for "skip").
        choices = _as_tuple(self.width_choices, "model.width_choices")
        if not choices:
            raise ScheduleError("model.width_choices is empty")
        for i, w in enumerate(choices):
            _check_number(w, f"model.width_choices[{i}]")
            if w <= 0:
                raise ScheduleError(f"model.width_choices[{i}] = {w!r} must be > 0 (0 means skip, it is not a width)")
        dupes = sorted(w for w, c in Counter(float(w) for w in choices).items() if c > 1)
        if dupes:
            raise ScheduleError(f"model.width_choices has duplicate value(s) {dupes}: {list(choices)}")
        choices = tuple(float(w) for w in choices)
        put("width_choices", choices)

        # 2. model fingerprint.
        sha = self.config_sha256
        if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
            raise ScheduleError(f"model.config_sha256 = {sha!r:.80} is not a sha256 hex digest (64 lowercase hex "
                                "characters, from ddsm.utils.config_sha256)")

        # 3. timesteps: non-empty, numbers, finite, all int or all float.
        timesteps = _as_tuple(self.timesteps, "timesteps")
        if not timesteps:
            raise ScheduleError("timesteps is empty: a schedule needs at least one step")
        for i, t in enumerate(timesteps):
            _check_number(t, f"timesteps[{i}]")
        kinds = {type(t) for t in timesteps}
        if len(kinds) > 1:
            i = next(i for i, t in enumerate(timesteps) if type(t) is not type(timesteps[0]))
            raise ScheduleError(
                f"timesteps[{i}] = {timesteps[i]!r} is {type(timesteps[i]).__name__} but timesteps[0] = "
                f"{timesteps[0]!r} is {type(timesteps[0]).__name__}: timesteps must be all int (DDPM, DDIM, "
                "DPM-Solver) or all float (Euler), as the scheduler gives them")
        put("timesteps", timesteps)

        # 4. widths: same length, numbers, finite, in width_choices or 0, no skip at step 0.
        widths = _as_tuple(self.widths, "widths")
        if len(widths) != len(timesteps):
            raise ScheduleError(f"len(widths) = {len(widths)} != len(timesteps) = {len(timesteps)}")
        for i, w in enumerate(widths):
            _check_number(w, f"widths[{i}]")
            if w != 0 and w not in choices:
                raise ScheduleError(f"widths[{i}] = {w!r} (timestep {timesteps[i]!r}) is not in model.width_choices "
                                    f"{list(choices)} and is not 0 (skip)")
        if widths[0] == 0:
            raise ScheduleError(f"widths[0] = {widths[0]!r} is a skip at step 0 (timestep {timesteps[0]!r}): the "
                                f"first step has no previous noise prediction to reuse; use one of {list(choices)}")
        widths = tuple(float(w) for w in widths)
        put("widths", widths)

        # 5. scheduler: all three fields or none.
        tied = (self.scheduler_class_name, self.scheduler_config, self.num_inference_steps)
        if any(v is not None for v in tied):
            if any(v is None for v in tied):
                raise ScheduleError(
                    "scheduler.class_name, scheduler.config and scheduler.num_inference_steps must be given together "
                    f"(got class_name={tied[0]!r}, config={'None' if tied[1] is None else '{...}'}, "
                    f"num_inference_steps={tied[2]!r})")
            name, config, steps = tied
            if not isinstance(name, str) or not name:
                raise ScheduleError(f"scheduler.class_name = {name!r} must be a non-empty string")
            if not isinstance(config, Mapping):
                raise ScheduleError(f"scheduler.config must be a mapping, got {type(config).__name__}")
            put("scheduler_config", _freeze_json(config, "scheduler.config"))
            steps = _scalar(steps)
            if not isinstance(steps, int) or isinstance(steps, bool):
                raise ScheduleError(f"scheduler.num_inference_steps = {steps!r} must be an int, "
                                    f"got {type(steps).__name__}")
            if steps != len(timesteps):
                raise ScheduleError(f"scheduler.num_inference_steps = {steps} != len(timesteps) = {len(timesteps)}")
            put("num_inference_steps", steps)

        # 6. free-form JSON parts.
        if self.metrics is not None:
            if not isinstance(self.metrics, Mapping):
                raise ScheduleError(f"metrics must be a mapping or None, got {type(self.metrics).__name__}")
            put("metrics", _freeze_json(self.metrics, "metrics"))
        provenance = {} if self.provenance is None else self.provenance
        if not isinstance(provenance, Mapping):
            raise ScheduleError(f"provenance must be a mapping, got {type(provenance).__name__}")
        put("provenance", _freeze_json(provenance, "provenance"))

        # 7. MACs: consistent with the widths.
        if self.macs is not None:
            put("macs", self._checked_macs(self.macs))

    def _checked_macs(self, macs: Any) -> Mapping[str, Any]:
        if not isinstance(macs, Mapping):
            raise ScheduleError(f"macs must be a mapping or None, got {type(macs).__name__}")
        missing = [k for k in _MACS_KEYS if k not in macs]
        if missing:
            raise ScheduleError(f"macs is missing key(s) {missing} (has {sorted(macs)})")
        frozen = _freeze_json(macs, "macs")  # extra keys (e.g. an autoencoder's decode cost) are kept as JSON
        per_step = _as_tuple(frozen["per_step"], "macs.per_step")
        if len(per_step) != len(self.widths):
            raise ScheduleError(f"len(macs.per_step) = {len(per_step)} != len(widths) = {len(self.widths)}")
        by_width: Dict[float, Number] = {}
        for i, (m, w) in enumerate(zip(per_step, self.widths)):
            _check_number(m, f"macs.per_step[{i}]")
            if m < 0:
                raise ScheduleError(f"macs.per_step[{i}] = {m!r} is negative")
            if w == 0 and m != 0:
                raise ScheduleError(f"macs.per_step[{i}] = {m!r} but widths[{i}] = 0 (skip) costs 0")
            if w in by_width and by_width[w] != m:
                j = self.widths.index(w)
                raise ScheduleError(f"macs.per_step[{i}] = {m!r} but macs.per_step[{j}] = {by_width[w]!r}, both at "
                                    f"width {w:g}: one width has one cost")
            by_width[w] = m
        total, full, ratio = (_check_number(frozen[k], f"macs.{k}") for k in ("total", "full", "ratio"))
        if not math.isclose(total, sum(per_step), rel_tol=1e-9, abs_tol=1e-9):
            raise ScheduleError(f"macs.total = {total!r} != sum(macs.per_step) = {sum(per_step)!r}")
        if full <= 0:
            raise ScheduleError(f"macs.full = {full!r} must be > 0 (full width at every step)")
        if not math.isclose(ratio, total / full, rel_tol=1e-9, abs_tol=1e-12):
            raise ScheduleError(f"macs.ratio = {ratio!r} != macs.total / macs.full = {total / full!r}")
        return frozen

    # ------------------------------------------------------------------------------------------------ basics

    def __len__(self) -> int:
        return len(self.timesteps)

    @property
    def is_tied(self) -> bool:
        """Whether the schedule records the scheduler (class, config, step count) it was made with."""
        return self.scheduler_class_name is not None

    def summary(self) -> str:
        """One line for CLIs: steps, scheduler, count per width, MACs ratio and scalar metrics."""
        counts = Counter(self.widths)
        order = sorted(counts, key=lambda w: (w == 0, -w))
        parts = [f"{len(self)} steps" + (f" ({self.scheduler_class_name})" if self.is_tied else "")]
        parts.append("widths " + ", ".join(f"{_fmt_width(w)} x{counts[w]}" for w in order))
        if self.macs is not None:
            parts.append(f"MACs {100 * self.macs['ratio']:.1f}% of full ({self.macs['total']:.4g} total)")
        if self.metrics:
            scalars = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                       for k, v in self.metrics.items() if _is_real(v)]
            if scalars:
                parts.append(", ".join(scalars))
        return "; ".join(parts)

    def __str__(self) -> str:
        return f"Schedule: {self.summary()}"

    # ------------------------------------------------------------------------------------------------ JSON

    def to_dict(self) -> Dict[str, Any]:
        """The schedule file's JSON object (plain dicts and lists), keys in the order of DESIGN.md."""
        scheduler = None
        if self.is_tied:
            scheduler = {"class_name": self.scheduler_class_name, "config": _thaw(self.scheduler_config),
                         "num_inference_steps": self.num_inference_steps}
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": {"config_sha256": self.config_sha256, "width_choices": list(self.width_choices)},
            "scheduler": scheduler,
            "timesteps": list(self.timesteps),
            "widths": [0 if w == 0 else w for w in self.widths],  # a skip is written as 0, as in DESIGN.md
            "macs": _thaw(self.macs),
            "metrics": _thaw(self.metrics),
            "provenance": _thaw(self.provenance),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Schedule":
        """Build and validate a schedule from the JSON object of a schedule file. Unknown keys are errors (a typo
        must not be ignored silently); ``scheduler``, ``macs``, ``metrics`` may be null or absent."""
        if not isinstance(data, Mapping):
            raise ScheduleError(f"a schedule must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_TOP_KEYS))
        if unknown:
            raise ScheduleError(f"unknown key(s) {unknown}; a schedule has {list(_TOP_KEYS)}")
        if data.get("format") != FORMAT:
            raise ScheduleError(f"format: expected {FORMAT!r}, got {data.get('format')!r}")
        version = data.get("version")
        if type(version) is not int or version != VERSION:
            raise ScheduleError(f"version: expected {VERSION!r}, got {version!r}")
        missing = [k for k in _REQUIRED_TOP_KEYS if k not in data]
        if missing:
            raise ScheduleError(f"missing key(s) {missing}")

        model = data["model"]
        if not isinstance(model, Mapping):
            raise ScheduleError(f"model must be an object, got {type(model).__name__}")
        if set(model) != set(_MODEL_KEYS):
            raise ScheduleError(f"model: expected keys {list(_MODEL_KEYS)}, got {sorted(model)}")

        scheduler = data.get("scheduler")
        if scheduler is None:
            tied: Dict[str, Any] = {}
        elif not isinstance(scheduler, Mapping):
            raise ScheduleError(f"scheduler must be an object or null, got {type(scheduler).__name__}")
        elif set(scheduler) != set(_SCHEDULER_KEYS):
            raise ScheduleError(f"scheduler: expected keys {list(_SCHEDULER_KEYS)}, got {sorted(scheduler)}")
        else:
            tied = {"scheduler_class_name": scheduler["class_name"], "scheduler_config": scheduler["config"],
                    "num_inference_steps": scheduler["num_inference_steps"]}
            if scheduler["config"] is None:
                raise ScheduleError("scheduler.config must be an object, got null")

        return cls(
            timesteps=data["timesteps"],
            widths=data["widths"],
            width_choices=model["width_choices"],
            config_sha256=model["config_sha256"],
            macs=data.get("macs"),
            metrics=data.get("metrics"),
            provenance=data.get("provenance", {}),
            **tied,
        )

    def to_json(self) -> str:
        """The schedule file's text (pretty, one line per flat list; strict JSON, no NaN)."""
        return _dumps(self.to_dict()) + "\n"

    @classmethod
    def from_json(cls, text: Union[str, bytes]) -> "Schedule":
        """Parse and validate a schedule file's text. Duplicate keys are errors."""
        try:
            data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            if isinstance(e, ScheduleError):
                raise
            raise ScheduleError(f"invalid JSON: {e}") from None
        return cls.from_dict(data)

    def save(self, path: PathLike) -> Path:
        """Write the schedule file atomically (a crash never leaves half a file) and return its path."""
        return atomic_write(path, self.to_json())

    @classmethod
    def load(cls, path: PathLike, model: Any = None, *, allow_fingerprint_mismatch: bool = False) -> "Schedule":
        """Read and validate a schedule file; with ``model``, also check that it was made for that model
        (see :meth:`check_model`). Every error names the file."""
        path = Path(path)
        text = path.read_bytes()
        try:
            schedule = cls.from_json(text)
            if model is not None:
                schedule.check_model(model, allow_fingerprint_mismatch=allow_fingerprint_mismatch)
        except ScheduleError as e:
            raise ScheduleError(f"{path}: {e}") from None
        return schedule

    # ------------------------------------------------------------------------------------------------ checks

    def check_model(self, model: Any, allow_fingerprint_mismatch: bool = False) -> None:
        """Check that this schedule was made for ``model`` (anything with ``.config`` holding ``width_choices``).

        A width the schedule uses but the model lacks is always an error. Different ``width_choices`` or a
        different ``config_sha256`` is an error unless ``allow_fingerprint_mismatch=True`` (on purpose: e.g. the
        same architecture retrained under another config), in which case a ``FingerprintMismatchWarning`` is
        issued.
        """
        model_choices, model_sha = _model_info(model)
        missing = sorted({w for w in self.widths if w != 0 and w not in model_choices})
        if missing:
            raise ScheduleError(f"widths use {missing}, which are not in the model's width_choices "
                                f"{list(model_choices)} (schedule's model.width_choices {list(self.width_choices)})")
        problems = []
        if set(self.width_choices) != set(model_choices):
            problems.append(f"model.width_choices: schedule has {list(self.width_choices)}, model has "
                            f"{list(model_choices)}")
        if self.config_sha256 != model_sha:
            problems.append(f"model.config_sha256: schedule has {self.config_sha256}, model has {model_sha}")
        if not problems:
            return
        message = "schedule was made for another model: " + "; ".join(problems)
        if not allow_fingerprint_mismatch:
            raise ScheduleError(message + " (pass allow_fingerprint_mismatch=True to use it anyway, on purpose)")
        warnings.warn(message + " (allowed by allow_fingerprint_mismatch=True)", FingerprintMismatchWarning,
                      stacklevel=2)

    def check_scheduler(self, scheduler: Any) -> None:
        """Check that ``scheduler`` (after ``set_timesteps``) will visit exactly this schedule's timesteps, in
        order; if not, :meth:`remap` the schedule onto it. The scheduler class itself is not compared: the same
        timesteps under another solver get the same widths."""
        actual = _as_tuple(scheduler.timesteps, "scheduler.timesteps")
        same = len(actual) == len(self.timesteps) and np.allclose(
            np.asarray(actual, dtype=np.float64), np.asarray(self.timesteps, dtype=np.float64), rtol=0, atol=1e-4)
        if not same:
            def brief(ts: Sequence[Number]) -> str:
                return f"{len(ts)} steps [{ts[0]:g} ... {ts[-1]:g}]" if ts else "0 steps"

            raise ScheduleError(
                f"timesteps: schedule has {brief(self.timesteps)}, {type(scheduler).__name__} has {brief(actual)}; "
                "call scheduler.set_timesteps with the schedule's step count, or use schedule.remap(scheduler=...)")

    # ------------------------------------------------------------------------------------------------ builders

    @classmethod
    def from_widths(cls, model: Any, scheduler: Any, widths: Sequence[float], *,
                    num_inference_steps: Optional[int] = None,
                    provenance: Optional[Mapping[str, Any]] = None) -> "Schedule":
        """A schedule with an arbitrary width per step, in sampling order.

        Args:
            model: The supernet (anything with ``.config`` holding ``width_choices``).
            scheduler: A diffusers scheduler on which ``set_timesteps`` was called, or pass ``num_inference_steps``
                to have it called here (this sets the scheduler's timesteps).
            widths: One width per step: a width choice, or 0 to skip (not at step 0).
            num_inference_steps: If given, ``scheduler.set_timesteps(num_inference_steps)`` is called first.
            provenance: Extra provenance entries (merged over ``tool_version`` and ``builder``).
        """
        return cls._build(model, scheduler, widths, num_inference_steps,
                          {"name": "from_widths"}, provenance)

    @classmethod
    def uniform(cls, model: Any, scheduler: Any, width: float, *, num_inference_steps: Optional[int] = None,
                provenance: Optional[Mapping[str, Any]] = None) -> "Schedule":
        """The same width at every step (``width=max(width_choices)`` is the full model)."""
        choices, _ = _model_info(model)
        if width not in choices:
            raise ScheduleError(f"width = {width!r} is not in the model's width_choices {list(choices)}")
        n = _num_steps(scheduler, num_inference_steps)
        return cls._build(model, scheduler, [width] * n, None, {"name": "uniform", "width": width}, provenance)

    @classmethod
    def ramp(cls, model: Any, scheduler: Any, small_width: float, large_width: float, fraction_small: float, *,
             num_inference_steps: Optional[int] = None,
             provenance: Optional[Mapping[str, Any]] = None) -> "Schedule":
        """T-Stitch style: the first ``fraction_small`` of the sampling steps (the noisy, high-t ones) at
        ``small_width``, the rest at ``large_width``. The number of small steps is ``fraction_small * n``
        rounded to the nearest integer, halves up (40% of 50 steps: 20; 25% of 50 steps: 13)."""
        choices, _ = _model_info(model)
        for name, w in (("small_width", small_width), ("large_width", large_width)):
            if w not in choices:
                raise ScheduleError(f"{name} = {w!r} is not in the model's width_choices {list(choices)}")
        if not (_is_real(fraction_small) and 0.0 <= fraction_small <= 1.0):
            raise ScheduleError(f"fraction_small = {fraction_small!r} must be a number in [0, 1]")
        n = _num_steps(scheduler, num_inference_steps)
        n_small = int(math.floor(fraction_small * n + 0.5 + 1e-9))  # slack: 0.29 * 50 is 14.4999... in floats
        widths = [small_width] * n_small + [large_width] * (n - n_small)
        builder = {"name": "ramp", "small_width": small_width, "large_width": large_width,
                   "fraction_small": fraction_small, "num_small_steps": n_small}
        return cls._build(model, scheduler, widths, None, builder, provenance)

    @classmethod
    def import_ddsm_official(cls, text_or_path: Union[str, bytes, os.PathLike], model: Any, scheduler: Any, *,
                             num_inference_steps: Optional[int] = None) -> "Schedule":
        """Import a schedule published by DDSM (Wang et al., ICLR 2024): a text file holding one Python list of
        1000 widths indexed by DDPM timestep ``t = 0..999`` (DDSM looks up ``strategy[int(t)]``).

        ``text_or_path``: a path (``os.PathLike``, or a ``str`` not starting with ``[``) or the text itself. The
        text is parsed as data, never executed. Every value must be one of the model's width choices. The
        schedule for ``scheduler``'s timesteps takes, at each timestep ``t``, the value at index ``t``; a
        fractional timestep (Euler) uses the nearest integer, halves down. The scheduler must have
        ``num_train_timesteps == 1000``.
        """
        if isinstance(text_or_path, os.PathLike) or (isinstance(text_or_path, str)
                                                     and not text_or_path.lstrip().startswith("[")):
            path = Path(text_or_path)
            if path.stat().st_size > _MAX_OFFICIAL_BYTES:
                raise ScheduleError(f"{path}: {path.stat().st_size} bytes is far too large for a DDSM schedule")
            text, source = path.read_bytes(), str(path)
        else:
            text, source = text_or_path, "<text>"
        raw = text if isinstance(text, bytes) else text.encode("utf-8")
        try:
            table = parse_ddsm_official(text)
            choices, _ = _model_info(model)
            for t, w in enumerate(table):
                if w not in choices:
                    raise ScheduleError(f"DDSM schedule[t={t}] = {w!r} is not in the model's width_choices "
                                        f"{list(choices)}")
        except ScheduleError as e:
            raise ScheduleError(f"{source}: {e}") from None

        _num_steps(scheduler, num_inference_steps)
        timesteps = _as_tuple(scheduler.timesteps, "scheduler.timesteps")
        train_steps = scheduler.config.get("num_train_timesteps", DDSM_OFFICIAL_LENGTH)
        if train_steps != len(table):
            raise ScheduleError(f"scheduler.config.num_train_timesteps = {train_steps} but the DDSM schedule has "
                                f"{len(table)} entries (one per DDPM timestep)")
        widths = []
        for i, t in enumerate(timesteps):
            index = math.ceil(t - 0.5)  # nearest integer, halves down (an integer timestep is itself)
            if not 0 <= index < len(table):
                raise ScheduleError(f"timesteps[{i}] = {t!r} is outside the DDSM schedule's range 0..{len(table) - 1}")
            widths.append(table[index])
        builder = {"name": "import_ddsm_official", "source": source,
                   "source_sha256": hashlib.sha256(raw).hexdigest()}
        return cls._build(model, scheduler, widths, None, builder, None)

    @classmethod
    def _build(cls, model: Any, scheduler: Any, widths: Sequence[float], num_inference_steps: Optional[int],
               builder: Mapping[str, Any], provenance: Optional[Mapping[str, Any]]) -> "Schedule":
        choices, sha = _model_info(model)
        name, config, steps, timesteps = _scheduler_info(scheduler, num_inference_steps)
        widths = _as_tuple(widths, "widths")
        if len(widths) != len(timesteps):
            raise ScheduleError(f"len(widths) = {len(widths)} != number of {name} timesteps = {len(timesteps)} "
                                f"(num_inference_steps = {steps})")
        return cls(timesteps=timesteps, widths=widths, width_choices=choices, config_sha256=sha,
                   scheduler_class_name=name, scheduler_config=config, num_inference_steps=steps,
                   provenance={"tool_version": __version__, "builder": dict(builder), **dict(provenance or {})})

    # ------------------------------------------------------------------------------------------------ transforms

    def remap(self, timesteps: Any = None, scheduler: Any = None) -> "Schedule":
        """The same schedule on other timesteps (another step count or scheduler), by nearest timestep.

        Rule: each new timestep takes the width of the nearest old timestep; an exact tie goes to the smaller old
        timestep (the less noisy one, which the larger width usually serves). If that makes new step 0 a skip, it
        takes instead the width of the nearest old non-skip timestep (same tie rule). Skips elsewhere are copied
        as they are, so on a finer grid one skip can become several consecutive ones.

        Give ``scheduler`` (after ``set_timesteps``) to tie the result to it, ``timesteps`` alone for an untied
        schedule, or both if they agree. MACs and metrics are dropped (they described the old schedule);
        provenance is kept, with ``remapped_from`` recording the source.
        """
        if scheduler is not None:
            name, config, steps, sched_ts = _scheduler_info(scheduler, None)
            if timesteps is not None and _as_tuple(timesteps, "timesteps") != sched_ts:
                raise ScheduleError(f"remap: timesteps ({len(_as_tuple(timesteps, 'timesteps'))} steps) differ "
                                    f"from {name}.timesteps ({len(sched_ts)} steps); pass one of them")
            new_ts = sched_ts
            tied: Dict[str, Any] = {"scheduler_class_name": name, "scheduler_config": config,
                                    "num_inference_steps": steps}
        elif timesteps is not None:
            new_ts, tied = _as_tuple(timesteps, "timesteps"), {}
        else:
            raise ScheduleError("remap needs timesteps or a scheduler")
        if not new_ts:
            raise ScheduleError("timesteps is empty: a schedule needs at least one step")
        for i, t in enumerate(new_ts):
            _check_number(t, f"timesteps[{i}]")

        old = np.asarray(self.timesteps, dtype=np.float64)
        new = np.asarray(new_ts, dtype=np.float64)
        old_widths = np.asarray(self.widths, dtype=np.float64)
        widths = [float(w) for w in old_widths[_nearest_index(old, new)]]
        if widths[0] == 0:
            widths[0] = float(old_widths[_nearest_index(old, new[:1], candidates=old_widths != 0)[0]])

        provenance = dict(_thaw(self.provenance))
        provenance["remapped_from"] = {"scheduler_class_name": self.scheduler_class_name, "num_steps": len(self),
                                       "timesteps_first_last": [self.timesteps[0], self.timesteps[-1]]}
        return Schedule(timesteps=new_ts, widths=widths, width_choices=self.width_choices,
                        config_sha256=self.config_sha256, provenance=provenance, **tied)

    def with_macs(self, table: Mapping[Any, Number]) -> "Schedule":
        """A copy with ``macs`` filled from a per-width table of MACs for one forward of one sample
        (:func:`ddsm.macs.macs_table`; keys may be floats or, as read from JSON, numeric strings):
        ``per_step`` (0 for a skip), ``total`` (their sum), ``full`` (the largest width at every step) and
        ``ratio = total / full``."""
        costs: Dict[float, Number] = {}
        for k, v in table.items():
            try:
                key = float(k)
            except (TypeError, ValueError):
                raise ScheduleError(f"MACs table key {k!r} is not a width") from None
            value = _check_number(v, f"MACs table[{k!r}]")
            if value < 0:
                raise ScheduleError(f"MACs table[{k!r}] = {value!r} is negative")
            costs[key] = value
        needed = sorted({w for w in self.widths if w != 0} | {max(self.width_choices)})
        missing = [w for w in needed if w not in costs]
        if missing:
            raise ScheduleError(f"MACs table has no entry for width(s) {missing} (has {sorted(costs)})")
        per_step = [costs[w] if w != 0 else 0 for w in self.widths]
        total = sum(per_step)
        full = costs[max(self.width_choices)] * len(self)
        if full <= 0:
            raise ScheduleError(f"MACs table[{max(self.width_choices)}] = {costs[max(self.width_choices)]!r}: the "
                                "full width must cost more than 0")
        macs = {"per_step": per_step, "total": total, "full": full, "ratio": total / full}
        return dataclasses.replace(self, macs=macs)

    def with_metrics(self, metrics: Mapping[str, Any]) -> "Schedule":
        """A copy whose metrics are the current ones updated with ``metrics`` (JSON values, finite numbers)."""
        return dataclasses.replace(self, metrics={**_thaw(self.metrics or {}), **dict(metrics)})

    def with_provenance(self, provenance: Mapping[str, Any]) -> "Schedule":
        """A copy whose provenance is the current one updated with ``provenance`` (top-level keys replaced)."""
        return dataclasses.replace(self, provenance={**_thaw(self.provenance), **dict(provenance)})
