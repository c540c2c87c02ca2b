"""The ``scheduler`` section of a schedule file, checked against diffusers itself: ``class_name`` one of the
schedulers the sampling loop supports (:data:`SCHEDULERS`), ``config`` a config that class is built from as meant.

The rules for ``scheduler.config`` (each broken one a :class:`ScheduleError` naming ``scheduler.config.<key>``, the
value found and what was expected):

* A key that a supported scheduler's ``__init__`` takes holds a value of a type that a supported scheduler declares
  for it (annotation, else default): a float setting takes an int too, a bool setting only ``true``/``false``, an int
  setting no float and no bool, a list setting a list of its item type, no NaN or infinity anywhere. The type is the
  union over the supported classes, so that one class's annotation slip (UniPC annotates ``sigma_max`` as a bool)
  does not refuse a value diffusers uses.
* Strings come from a known set where diffusers has one: the class's ``Literal`` annotation, else the values
  diffusers' schedulers test for (``beta_schedule``, ``prediction_type``, ``timestep_spacing``).
* A key the class does not take but another supported scheduler does is accepted (diffusers' ``from_config``
  ignores it): real configs carry them (Stable Diffusion's PNDM config has DDIM's ``clip_sample``), and a schedule is
  sampled with another class through ``--scheduler``. Keys starting with ``_`` (``_class_name``,
  ``_diffusers_version``) are diffusers' bookkeeping and accepted as they are. Any other key is refused: a typo
  must not fall back to a default silently.
* The noise schedule is never defaulted: ``num_train_timesteps`` and, without ``trained_betas``, ``beta_start``,
  ``beta_end`` and ``beta_schedule`` must be there (diffusers' defaults differ between classes: ``beta_start`` is
  0.0001 for DDIM, 0.00085 for Heun), with ``1 <= num_train_timesteps <= 10**6`` and
  ``0 < beta_start < beta_end < 1`` (``trained_betas``: that many values in (0, 1)).
* The class builds from the config (it refuses, e.g., a ``beta_schedule`` it does not implement).
* The timesteps lie in ``[0, num_train_timesteps)`` (any value with Euler's ``timestep_type="continuous"``).

Other settings' ranges (``solver_order``, ``steps_offset``...) are left to diffusers.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from functools import lru_cache
from typing import Any, Dict, FrozenSet, Mapping, Optional, Tuple

from .errors import ScheduleError

__all__ = ["SCHEDULERS", "UNSUPPORTED", "check_scheduler_section"]

# The diffusers schedulers the sampling loop supports (re-exported by ddsm.sampling, which runs them).
SCHEDULERS = ("DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler", "EulerDiscreteScheduler",
              "EulerAncestralDiscreteScheduler", "UniPCMultistepScheduler", "PNDMScheduler", "DEISMultistepScheduler",
              "DPMSolverSinglestepScheduler", "SASolverScheduler", "LMSDiscreteScheduler", "HeunDiscreteScheduler",
              "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler")

# Diffusers schedulers the sampling loop refuses, and why (any other name is refused as unknown).
UNSUPPORTED = {
    "DPMSolverSDEScheduler": "it draws noise from a torchsde Brownian tree, not from per-sample generators",
    "LCMScheduler": "it needs a consistency-distilled model",
    "TCDScheduler": "it needs a consistency-distilled model",
    "EDMEulerScheduler": "it needs an EDM-preconditioned model (sigma inputs), not a noise predictor of t",
    "EDMDPMSolverMultistepScheduler": "it needs an EDM-preconditioned model (sigma inputs), not a noise "
                                      "predictor of t",
    "IPNDMScheduler": "it runs continuous timesteps in [0, 1], not the model's training timesteps",
    "FlowMatchEulerDiscreteScheduler": "it needs a flow-matching (velocity) model",
}

# The values diffusers' schedulers test these settings for (diffusers 0.30 annotates them as plain str).
KNOWN_VALUES = {
    "beta_schedule": ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace", "exp"),
    "prediction_type": ("epsilon", "sample", "v_prediction", "flow_prediction", "original_sample"),
    "timestep_spacing": ("linspace", "leading", "trailing"),
}
# Annotation slips in diffusers that would refuse values it uses (UniPC declares these floats as bool | None).
TYPE_FIXES = {"shift_terminal": frozenset({"int", "float", "null"}), "sigma_max": frozenset({"int", "float", "null"})}
MAX_TRAIN_TIMESTEPS = 10 ** 6  # diffusers allocates tensors of this length when it builds the scheduler
NUMBER, ANY = frozenset({"int", "float"}), frozenset({"any"})
KIND_NAMES = {"null": "null", "bool": "true/false", "int": "an int", "float": "a number", "str": "a string",
              "list": "a list", "object": "an object"}


class Setting(typing.NamedTuple):
    """What one ``__init__`` parameter accepts: JSON kinds, allowed strings (None: any), list item kinds."""

    kinds: FrozenSet[str]
    values: Optional[Tuple[str, ...]] = None
    items: FrozenSet[str] = ANY


# ----------------------------------------------------------------------------------------------------------------
# What diffusers declares
# ----------------------------------------------------------------------------------------------------------------


def _annotation_setting(ann: Any) -> Optional[Setting]:
    """The JSON an annotation admits; None when it says nothing (none, ``Any``, an unresolved string). A type JSON
    cannot hold (a scheduler, a callable) admits only null."""
    if ann is inspect.Parameter.empty or ann is Any or isinstance(ann, (str, typing.ForwardRef)):
        return None
    simple = {type(None): "null", bool: "bool", int: "int", str: "str", dict: "object"}
    if ann in simple:
        return Setting(frozenset({simple[ann]}))
    if ann is float:
        return Setting(NUMBER)
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Literal:
        kinds = {"str" if isinstance(a, str) else _kind(a) for a in args}
        return Setting(frozenset(kinds), tuple(a for a in args if isinstance(a, str)) or None)
    if origin is typing.Union or origin is types.UnionType:
        parts = [_annotation_setting(a) for a in args]
        if any(p is None for p in parts):
            return None
        values = [v for p in parts if "str" in p.kinds for v in (p.values or ("*",))]
        items = _items(p.items for p in parts if "list" in p.kinds)
        return Setting(frozenset().union(*(p.kinds for p in parts)),
                       None if "*" in values or not values else tuple(values), items)
    if getattr(ann, "__name__", "") in ("ndarray", "Tensor"):
        return Setting(frozenset({"list"}), items=NUMBER)
    if origin in (list, tuple) or ann in (list, tuple):
        item = _annotation_setting(args[0]) if args else None
        return Setting(frozenset({"list"}), items=item.kinds if item else ANY)
    return Setting(frozenset({"null"}))


def _items(parts) -> FrozenSet[str]:
    """List item kinds of several declarations together: the specific ones united (ANY only if all are ANY)."""
    parts = list(parts)
    specific = [p for p in parts if "any" not in p]
    return frozenset().union(*specific) if specific else ANY


def _kind(value: Any) -> str:
    """The JSON kind of a Python value (``any`` for what JSON cannot hold)."""
    if value is None:
        return "null"
    for t, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), ((list, tuple), "list"),
                    (Mapping, "object")):
        if isinstance(value, t):
            return name
    return "any"


def _default_setting(default: Any) -> Optional[Setting]:
    if default is inspect.Parameter.empty:
        return None
    kind = _kind(default)
    return None if kind == "any" else Setting(NUMBER if kind == "float" else frozenset({kind}))


@lru_cache(maxsize=None)
def _parameters(name: str) -> Dict[str, Tuple[Optional[Setting], Any]]:
    """Parameter name -> (what its annotation admits or None, its default) for one diffusers scheduler class."""
    import diffusers

    init = getattr(diffusers, name).__init__
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # noqa: BLE001 - an unresolvable annotation: fall back to the raw ones
        hints = {}
    return {key: (_annotation_setting(hints.get(key, p.annotation)), p.default)
            for key, p in inspect.signature(init).parameters.items()
            if key != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _class_setting(name: str, key: str) -> Setting:
    """What class ``name`` declares for its parameter ``key``: annotation and default together."""
    ann, default = _parameters(name)[key]
    dflt = _default_setting(default)
    if ann is None:  # unannotated (older diffusers): the default's type; a None default says nothing
        return dflt if dflt is not None and default is not None else Setting(ANY)
    return ann if dflt is None else ann._replace(kinds=ann.kinds | dflt.kinds)


@lru_cache(maxsize=None)
def _all_settings() -> Dict[str, Setting]:
    """Parameter name -> Setting over every supported class: kinds and list items united; strings restricted only
    where every class that takes a string there lists its values (Literal), or the key is in KNOWN_VALUES."""
    merged: Dict[str, Setting] = {}
    values: Dict[str, set] = {}
    open_strings = set()
    for name in SCHEDULERS:
        for key, (_, default) in _parameters(name).items():
            s = _class_setting(name, key)
            old = merged.get(key)
            merged[key] = s if old is None else Setting(old.kinds | s.kinds, None, _items([old.items, s.items]))
            values.setdefault(key, set()).update(s.values or ())
            if isinstance(default, str):
                values[key].add(default)
            if "str" in s.kinds and s.values is None:
                open_strings.add(key)
    for key, kinds in TYPE_FIXES.items():
        if key in merged:
            merged[key] = merged[key]._replace(kinds=kinds)
    for key, s in merged.items():
        if key in KNOWN_VALUES or ("str" in s.kinds and key not in open_strings):
            merged[key] = s._replace(values=tuple(dict.fromkeys((*KNOWN_VALUES.get(key, ()), *sorted(values[key])))))
    return merged


def _setting(name: str, key: str) -> Optional[Setting]:
    """What ``scheduler.config.<key>`` may hold for class ``name``; None for a key no supported scheduler takes.
    The class's own Literal, if it has one, lists the strings it takes (except for beta_schedule, where diffusers'
    Literals miss some: building the class checks it)."""
    merged = _all_settings().get(key)
    if merged is None or key not in _parameters(name) or key == "beta_schedule":
        return merged
    own, default = _class_setting(name, key), _parameters(name)[key][1]
    if own.values is None:
        return merged
    return merged._replace(values=tuple(dict.fromkeys((*own.values, *([default] if isinstance(default, str) else [])))))


def _default(name: str, key: str) -> Any:
    return _parameters(name).get(key, (None, None))[1]


# ----------------------------------------------------------------------------------------------------------------
# The checks
# ----------------------------------------------------------------------------------------------------------------


def _describe(setting: Setting) -> str:
    kinds = setting.kinds - ({"int"} if "float" in setting.kinds else set())
    text = " or ".join(KIND_NAMES[k] for k in sorted(kinds, key=list(KIND_NAMES).index))
    if setting.values is not None and "str" in setting.kinds:
        text = text.replace("a string", f"one of {list(setting.values)}")
    return text


def _check_value(path: str, value: Any, setting: Setting) -> None:
    if "any" in setting.kinds:
        return
    kind = _kind(value)
    if kind == "int" and "int" not in setting.kinds and "float" in setting.kinds:
        kind = "float"
    if kind not in setting.kinds:
        raise ScheduleError(f"{path} = {value!r:.80} must be {_describe(setting)}, got {type(value).__name__}")
    if kind == "str" and setting.values is not None and value not in setting.values:
        raise ScheduleError(f"{path} = {value!r:.80} must be one of {list(setting.values)}")
    if kind == "list" and "any" not in setting.items:
        for i, item in enumerate(value):
            _check_value(f"{path}[{i}]", item, Setting(setting.items))


def _number(config: Mapping[str, Any], key: str, low: float, high: float, what: str, closed: bool = False) -> Any:
    value = config[key]
    ok = low <= value <= high if closed else low < value < high
    if not ok:
        raise ScheduleError(f"scheduler.config.{key} = {value!r} must be {what}")
    return value


def _noise_schedule(name: str, config: Mapping[str, Any]) -> int:
    """The required keys and their ranges; returns num_train_timesteps."""
    betas = config.get("trained_betas")
    required = ("num_train_timesteps",) + (() if betas is not None else ("beta_start", "beta_end", "beta_schedule"))
    for key in required:
        if key not in config:
            raise ScheduleError(
                f"scheduler.config.{key} is missing: expected {_describe(_setting(name, key))}, the noise schedule "
                f"the model was trained with (diffusers' default for {name}, {_default(name, key)!r}, is not "
                "assumed)")
    steps = _number(config, "num_train_timesteps", 1, MAX_TRAIN_TIMESTEPS,
                    f"an int in [1, {MAX_TRAIN_TIMESTEPS}]", closed=True)
    if betas is not None:
        if len(betas) != steps:
            raise ScheduleError(f"len(scheduler.config.trained_betas) = {len(betas)} != scheduler.config."
                                f"num_train_timesteps = {steps}")
        bad = next((i for i, b in enumerate(betas) if not (_kind(b) in NUMBER and 0 < b < 1)), None)
        if bad is not None:
            raise ScheduleError(f"scheduler.config.trained_betas[{bad}] = {betas[bad]!r} must be in (0, 1)")
        return steps
    start = _number(config, "beta_start", 0, 1, "in (0, 1)")
    end = _number(config, "beta_end", 0, 1, "in (0, 1)")
    if start >= end:
        raise ScheduleError(f"scheduler.config.beta_start = {start!r} must be < scheduler.config.beta_end = {end!r}")
    return steps


@lru_cache(maxsize=256)
def _build_error(name: str, config_json: str) -> Optional[str]:
    """Why diffusers cannot build class ``name`` from the config (its own keys only), or None."""
    import diffusers

    cls = getattr(diffusers, name)
    own = {k: v for k, v in json.loads(config_json).items() if k in _parameters(name)}
    try:
        cls.from_config(own)
    except Exception as e:  # noqa: BLE001 - diffusers raises ValueError, NotImplementedError, TypeError...
        return f"{type(e).__name__}: {e}"
    return None


def check_class_name(name: Any) -> str:
    """``scheduler.class_name``: one of :data:`SCHEDULERS` (an UNSUPPORTED one says why)."""
    if not isinstance(name, str) or name not in SCHEDULERS:
        reason = f" ({UNSUPPORTED[name]})" if isinstance(name, str) and name in UNSUPPORTED else ""
        raise ScheduleError(f"scheduler.class_name = {name!r:.80} is not a supported scheduler{reason}; expected "
                            f"one of {list(SCHEDULERS)}")
    return name


def check_scheduler_section(name: Any, config: Mapping[str, Any], timesteps: Tuple[Any, ...]) -> None:
    """Check ``scheduler.class_name`` and ``scheduler.config`` (already plain JSON: str keys, finite numbers)
    against diffusers, and the timesteps against the config's noise schedule (see the module docstring)."""
    name = check_class_name(name)
    for key, value in config.items():
        if key.startswith("_"):
            continue
        setting = _setting(name, key)
        if setting is None:
            raise ScheduleError(
                f"scheduler.config.{key} = {value!r:.80} is not a setting of {name} nor of any supported scheduler "
                "(a typo?); diffusers' own bookkeeping keys start with '_'")
        _check_value(f"scheduler.config.{key}", value, setting)
    steps = _noise_schedule(name, config)
    error = _build_error(name, json.dumps(dict(config), sort_keys=True))
    if error is not None:
        raise ScheduleError(f"scheduler.config: {name} cannot be built from it: {error}")
    if config.get("timestep_type", _default(name, "timestep_type")) == "continuous":
        return
    for i, t in enumerate(timesteps):
        if not 0 <= t < steps:
            raise ScheduleError(f"timesteps[{i}] = {t!r} is outside [0, scheduler.config.num_train_timesteps = "
                                f"{steps}): {name} has no such timestep")
