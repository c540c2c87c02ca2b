"""The schedule file format: its JSON text, and the checks of every field of a :class:`~ddsm.schedules.Schedule`,
each error a :class:`ScheduleError` naming the field and the values.

The checks are hand-written, not a pydantic model: every message the file format promises (``widths[2] = '0.5'
must be a number, got str``) would need its own pydantic validator and an error translation on top, so it would
be longer, not shorter.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any, Dict, List, Mapping, Tuple, Union

import numpy as np

from .diffusers_config import check_class_name, check_scheduler_section
from .errors import FingerprintMismatchWarning, ScheduleError

__all__ = [
    "FORMAT", "VERSION", "Number", "ScheduleError", "FingerprintMismatchWarning", "FrozenDict", "scalar",
    "is_real", "as_tuple", "check_number", "freeze_json", "thaw", "validate_fields", "fields_from_file", "load_json",
    "dump_json",
]

FORMAT = "ddsm-schedule"
VERSION = 1

TOP_KEYS = ("format", "version", "model", "scheduler", "timesteps", "widths", "macs", "metrics", "provenance")
REQUIRED_TOP_KEYS = ("format", "version", "model", "timesteps", "widths")
MODEL_KEYS = ("config_sha256", "width_choices")
SCHEDULER_KEYS = ("class_name", "config", "num_inference_steps")
MACS_KEYS = ("per_step", "total", "full", "ratio")

Number = Union[int, float]
FLOAT_MAX = 1.7976931348623157e308


class FrozenDict(dict):
    """A read-only ``dict``: the mappings inside a :class:`Schedule`. A real ``dict`` subclass (not a
    ``MappingProxyType``) so that ``json.dumps`` and diffusers' ``Scheduler.from_config`` accept it as is."""

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a Schedule is immutable: use with_macs / with_metrics / with_provenance for a changed copy")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only  # type: ignore

    def __reduce__(self) -> Tuple[type, Tuple[dict]]:  # pickle and copy rebuild it whole, never item by item
        return type(self), (dict(self),)


# ----------------------------------------------------------------------------------------------------------------
# Values
# ----------------------------------------------------------------------------------------------------------------


def scalar(x: Any) -> Any:
    """numpy / torch 0-d scalars to Python numbers; anything else unchanged."""
    if isinstance(x, np.generic):
        return x.item()
    if getattr(x, "ndim", None) == 0 and hasattr(x, "item"):  # 0-d torch tensor or numpy array
        return x.item()
    return x


def is_real(x: Any) -> bool:
    """An int or float, but not a bool (``True`` is an ``int`` in Python and must not pass for width 1)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def as_tuple(value: Any, name: str) -> tuple:
    """A list, tuple, numpy array or tensor as a tuple of Python scalars; strings and mappings are refused."""
    if isinstance(value, (str, bytes, Mapping)) or value is None:
        raise ScheduleError(f"{name} must be a list, got {type(value).__name__} {value!r:.80}")
    if hasattr(value, "tolist"):  # numpy array or torch tensor
        value = value.tolist()
    try:
        return tuple(scalar(x) for x in value)
    except TypeError:
        raise ScheduleError(f"{name} must be a list, got {type(value).__name__} {value!r:.80}") from None


def check_number(x: Any, name: str) -> Number:
    """``x`` as a Python number; a :class:`ScheduleError` naming ``name`` unless it is a finite int or float."""
    x = scalar(x)
    if not is_real(x):
        raise ScheduleError(f"{name} = {x!r:.80} must be a number, got {type(x).__name__}")
    if isinstance(x, float) and not math.isfinite(x):
        raise ScheduleError(f"{name} = {x!r} is not finite")
    if isinstance(x, int) and abs(x) > FLOAT_MAX:  # numpy, torch and float() would fail on it
        raise ScheduleError(f"{name} = {str(x)[:20]}... ({len(str(abs(x)))} digits) is too large for a float")
    return x


def freeze_json(value: Any, name: str) -> Any:
    """Check that ``value`` is JSON (str keys, finite numbers) and freeze it: mappings become :class:`FrozenDict`,
    lists become tuples. ``name`` is the field path used in error messages."""
    value = scalar(value)
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
            out[k] = freeze_json(v, f"{name}.{k}")
        return FrozenDict(out)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(freeze_json(v, f"{name}[{i}]") for i, v in enumerate(value))
    raise ScheduleError(f"{name} = {value!r:.80} has type {type(value).__name__}, which JSON cannot hold")


def thaw(value: Any) -> Any:
    """Inverse of :func:`freeze_json`: plain dicts and lists, ready for ``json.dumps``."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------------------------
# The fields of a Schedule, in the order they are checked
# ----------------------------------------------------------------------------------------------------------------


def validate_fields(s: Any) -> Dict[str, Any]:
    """Check every field of the schedule ``s`` and return them normalised (lists to tuples, numpy / torch scalars
    to Python, widths to floats, mappings frozen), so that a schedule built in code and one read from JSON compare
    equal."""
    choices = _width_choices(s.width_choices)
    _config_sha256(s.config_sha256)
    timesteps = _timesteps(s.timesteps)
    fields = {"width_choices": choices, "timesteps": timesteps, "widths": _widths(s.widths, timesteps, choices)}
    fields.update(_scheduler(s.scheduler_class_name, s.scheduler_config, s.num_inference_steps, timesteps))
    if s.metrics is not None:
        fields["metrics"] = _json_mapping(s.metrics, "metrics", "a mapping or None")
    fields["provenance"] = _json_mapping({} if s.provenance is None else s.provenance, "provenance", "a mapping")
    if s.macs is not None:
        fields["macs"] = _macs(s.macs, fields["widths"])
    return fields


def _width_choices(value: Any) -> Tuple[float, ...]:
    """Finite, positive, no duplicates (0 is reserved for "skip")."""
    choices = as_tuple(value, "model.width_choices")
    if not choices:
        raise ScheduleError("model.width_choices is empty")
    for i, w in enumerate(choices):
        check_number(w, f"model.width_choices[{i}]")
        if w <= 0:
            raise ScheduleError(f"model.width_choices[{i}] = {w!r} must be > 0 (0 means skip, it is not a width)")
    dupes = sorted(w for w, c in Counter(float(w) for w in choices).items() if c > 1)
    if dupes:
        raise ScheduleError(f"model.width_choices has duplicate value(s) {dupes}: {list(choices)}")
    return tuple(float(w) for w in choices)


def _config_sha256(sha: Any) -> None:
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        raise ScheduleError(f"model.config_sha256 = {sha!r:.80} is not a sha256 hex digest (64 lowercase hex "
                            "characters, from ddsm.utils.config_sha256)")


def _timesteps(value: Any) -> tuple:
    """Non-empty, finite numbers, all int or all float, in sampling order: never increasing. A timestep may repeat
    (Heun, KDPM2 and PNDM visit some twice; DPM-Solver rounds two to one) and float32 rounding may raise one by a
    hair (KDPM2-ancestral's 554.99994 before 555.0): increases up to 1e-4 relative are not errors."""
    timesteps = as_tuple(value, "timesteps")
    if not timesteps:
        raise ScheduleError("timesteps is empty: a schedule needs at least one step")
    for i, t in enumerate(timesteps):
        check_number(t, f"timesteps[{i}]")
    if len({type(t) for t in timesteps}) > 1:
        i = next(i for i, t in enumerate(timesteps) if type(t) is not type(timesteps[0]))
        raise ScheduleError(
            f"timesteps[{i}] = {timesteps[i]!r} is {type(timesteps[i]).__name__} but timesteps[0] = "
            f"{timesteps[0]!r} is {type(timesteps[0]).__name__}: timesteps must be all int (DDPM, DDIM, "
            "DPM-Solver) or all float (Euler), as the scheduler gives them")
    for i in range(1, len(timesteps)):
        if timesteps[i] - timesteps[i - 1] > 1e-4 * max(1.0, abs(timesteps[i - 1])):
            raise ScheduleError(
                f"timesteps[{i}] = {timesteps[i]!r} > timesteps[{i - 1}] = {timesteps[i - 1]!r}: timesteps are in "
                "sampling order, noisiest first (never increasing, as scheduler.timesteps)")
    return timesteps


def _widths(value: Any, timesteps: tuple, choices: Tuple[float, ...]) -> Tuple[float, ...]:
    """One per timestep, finite, in ``choices`` or 0 (skip), no skip at step 0."""
    widths = as_tuple(value, "widths")
    if len(widths) != len(timesteps):
        raise ScheduleError(f"len(widths) = {len(widths)} != len(timesteps) = {len(timesteps)}")
    for i, w in enumerate(widths):
        check_number(w, f"widths[{i}]")
        if w != 0 and w not in choices:
            raise ScheduleError(f"widths[{i}] = {w!r:.40} (timestep {timesteps[i]!r}) is not in model.width_choices "
                                f"{list(choices)} and is not 0 (skip)")
    if widths[0] == 0:
        raise ScheduleError(f"widths[0] = {widths[0]!r} is a skip at step 0 (timestep {timesteps[0]!r}): the "
                            f"first step has no previous noise prediction to reuse; use one of {list(choices)}")
    return tuple(float(w) for w in widths)


def _scheduler(name: Any, config: Any, steps: Any, timesteps: tuple) -> Dict[str, Any]:
    """All three scheduler fields or none; a supported class, a config it takes (see
    :mod:`~ddsm.schedules.diffusers_config`), frozen; the step count an int equal to the length."""
    if name is None and config is None and steps is None:
        return {}
    if name is None or config is None or steps is None:
        raise ScheduleError(
            "scheduler.class_name, scheduler.config and scheduler.num_inference_steps must be given together "
            f"(got class_name={name!r}, config={'None' if config is None else '{...}'}, "
            f"num_inference_steps={steps!r:.40})")
    check_class_name(name)
    if not isinstance(config, Mapping):
        raise ScheduleError(f"scheduler.config must be a mapping, got {type(config).__name__}")
    config = freeze_json(config, "scheduler.config")
    steps = scalar(steps)
    if not isinstance(steps, int) or isinstance(steps, bool):
        raise ScheduleError(f"scheduler.num_inference_steps = {steps!r:.80} must be an int, got "
                            f"{type(steps).__name__}")
    if steps != len(timesteps):
        raise ScheduleError(f"scheduler.num_inference_steps = {steps!r:.80} != len(timesteps) = {len(timesteps)}")
    check_scheduler_section(name, thaw(config), timesteps)
    return {"scheduler_config": config, "num_inference_steps": steps}


def _json_mapping(value: Any, name: str, expected: str) -> FrozenDict:
    if not isinstance(value, Mapping):
        raise ScheduleError(f"{name} must be {expected}, got {type(value).__name__}")
    return freeze_json(value, name)


def _macs(macs: Any, widths: Tuple[float, ...]) -> FrozenDict:
    """The four MACs keys, consistent with ``widths``: one cost per width, 0 at a skip, the sums and ratio right."""
    if not isinstance(macs, Mapping):
        raise ScheduleError(f"macs must be a mapping or None, got {type(macs).__name__}")
    missing = [k for k in MACS_KEYS if k not in macs]
    if missing:
        raise ScheduleError(f"macs is missing key(s) {missing} (has {sorted(macs)})")
    frozen = freeze_json(macs, "macs")  # extra keys (e.g. an autoencoder's decode cost) are kept as JSON
    per_step = as_tuple(frozen["per_step"], "macs.per_step")
    if len(per_step) != len(widths):
        raise ScheduleError(f"len(macs.per_step) = {len(per_step)} != len(widths) = {len(widths)}")
    _per_step_costs(per_step, widths)
    total, full, ratio = (check_number(frozen[k], f"macs.{k}") for k in ("total", "full", "ratio"))
    if not math.isclose(total, sum(per_step), rel_tol=1e-9, abs_tol=1e-9):
        raise ScheduleError(f"macs.total = {total!r} != sum(macs.per_step) = {sum(per_step)!r}")
    if full <= 0:
        raise ScheduleError(f"macs.full = {full!r} must be > 0 (full width at every step)")
    if not math.isclose(ratio, total / full, rel_tol=1e-9, abs_tol=1e-12):
        raise ScheduleError(f"macs.ratio = {ratio!r} != macs.total / macs.full = {total / full!r}")
    return frozen


def _per_step_costs(per_step: tuple, widths: Tuple[float, ...]) -> None:
    by_width: Dict[float, Number] = {}
    for i, (m, w) in enumerate(zip(per_step, widths)):
        check_number(m, f"macs.per_step[{i}]")
        if m < 0:
            raise ScheduleError(f"macs.per_step[{i}] = {m!r} is negative")
        if w == 0 and m != 0:
            raise ScheduleError(f"macs.per_step[{i}] = {m!r} but widths[{i}] = 0 (skip) costs 0")
        if w in by_width and by_width[w] != m:
            raise ScheduleError(f"macs.per_step[{i}] = {m!r} but macs.per_step[{widths.index(w)}] = "
                                f"{by_width[w]!r}, both at width {w:g}: one width has one cost")
        by_width[w] = m


# ----------------------------------------------------------------------------------------------------------------
# The file's JSON object
# ----------------------------------------------------------------------------------------------------------------


def fields_from_file(data: Any) -> Dict[str, Any]:
    """The :class:`Schedule` keyword arguments in a schedule file's JSON object, after checking its structure
    (keys, ``format``, ``version``); the values themselves are checked by :func:`validate_fields`. Unknown keys are
    errors (a typo must not be ignored silently); ``scheduler``, ``macs``, ``metrics`` may be null or absent."""
    if not isinstance(data, Mapping):
        raise ScheduleError(f"a schedule must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise ScheduleError(f"unknown key(s) {unknown}; a schedule has {list(TOP_KEYS)}")
    if data.get("format") != FORMAT:
        raise ScheduleError(f"format: expected {FORMAT!r}, got {data.get('format')!r:.80}")
    version = data.get("version")
    if type(version) is not int or version != VERSION:
        raise ScheduleError(f"version: expected {VERSION!r}, got {version!r:.80}")
    missing = [k for k in REQUIRED_TOP_KEYS if k not in data]
    if missing:
        raise ScheduleError(f"missing key(s) {missing}")
    model = _section(data["model"], "model", MODEL_KEYS, "an object")
    return {"timesteps": data["timesteps"], "widths": data["widths"], "width_choices": model["width_choices"],
            "config_sha256": model["config_sha256"], "macs": data.get("macs"), "metrics": data.get("metrics"),
            "provenance": data.get("provenance", {}), **_scheduler_from_file(data.get("scheduler"))}


def _section(value: Any, name: str, keys: Tuple[str, ...], expected: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ScheduleError(f"{name} must be {expected}, got {type(value).__name__}")
    if set(value) != set(keys):
        missing, unknown = [k for k in keys if k not in value], sorted(set(value) - set(keys))
        what = "; ".join([f"{name}.{k} is missing" for k in missing] + [f"{name}.{k} is unknown" for k in unknown])
        raise ScheduleError(f"{name}: expected keys {list(keys)}, got {sorted(value)} ({what})")
    return value


def _scheduler_from_file(scheduler: Any) -> Dict[str, Any]:
    if scheduler is None:
        return {}
    scheduler = _section(scheduler, "scheduler", SCHEDULER_KEYS, "an object or null")
    if scheduler["config"] is None:
        raise ScheduleError("scheduler.config must be an object, got null")
    return {"scheduler_class_name": scheduler["class_name"], "scheduler_config": scheduler["config"],
            "num_inference_steps": scheduler["num_inference_steps"]}


def load_json(text: Union[str, bytes]) -> Any:
    """The JSON value of a schedule file's text; invalid JSON, bytes that are not UTF-8 (JSON's encoding; a BOM is
    skipped) and duplicate keys are errors."""
    try:
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8-sig")  # strict: json.loads(bytes) would let encoded surrogates through
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        if isinstance(e, ScheduleError):
            raise
        raise ScheduleError(f"invalid JSON: {e}") from None
    except RecursionError:
        raise ScheduleError("invalid JSON: nested too deeply") from None


def _no_duplicate_keys(pairs: List[Tuple[str, Any]]) -> dict:
    keys = [k for k, _ in pairs]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ScheduleError(f"duplicate key(s) {dupes} in a JSON object")
    return dict(pairs)


def dump_json(obj: Any, level: int = 0) -> str:
    """Pretty JSON with flat lists of numbers on one line, so a 1000-step schedule stays readable and diffable."""
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(k)}: {dump_json(v, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        items = [f"{inner}{dump_json(v, level + 1)}" for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj, allow_nan=False)
