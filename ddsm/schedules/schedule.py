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

import dataclasses
import math
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..utils import PathLike, atomic_write
from ..version import __version__
from .introspect import model_info, num_steps, scheduler_info
from .official import DDSM_OFFICIAL_LENGTH, ddsm_widths_at, read_ddsm_official
from .validation import (FORMAT, VERSION, FingerprintMismatchWarning, Number, ScheduleError, as_tuple, check_number,
                         dump_json, fields_from_file, is_real, load_json, thaw, validate_fields)

__all__ = ["Schedule"]


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
        num_inference_steps: The scheduler's timestep count, ``len(timesteps)`` (the step count given to
            ``set_timesteps``, except for PNDM and 2nd-order schedulers: see :mod:`ddsm.sampling.schedulers`).
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

    def __post_init__(self) -> None:
        """Check every field and store it normalised (:func:`~ddsm.schedules.validation.validate_fields`)."""
        for name, value in validate_fields(self).items():
            object.__setattr__(self, name, value)

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
                       for k, v in self.metrics.items() if is_real(v)]
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
            scheduler = {"class_name": self.scheduler_class_name, "config": thaw(self.scheduler_config),
                         "num_inference_steps": self.num_inference_steps}
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": {"config_sha256": self.config_sha256, "width_choices": list(self.width_choices)},
            "scheduler": scheduler,
            "timesteps": list(self.timesteps),
            "widths": [0 if w == 0 else w for w in self.widths],  # a skip is written as 0, as in DESIGN.md
            "macs": thaw(self.macs),
            "metrics": thaw(self.metrics),
            "provenance": thaw(self.provenance),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Schedule":
        """Build and validate a schedule from the JSON object of a schedule file. Unknown keys are errors (a typo
        must not be ignored silently); ``scheduler``, ``macs``, ``metrics`` may be null or absent."""
        return cls(**fields_from_file(data))

    def to_json(self) -> str:
        """The schedule file's text (pretty, one line per flat list; strict JSON, no NaN)."""
        return dump_json(self.to_dict()) + "\n"

    @classmethod
    def from_json(cls, text: Union[str, bytes]) -> "Schedule":
        """Parse and validate a schedule file's text. Duplicate keys are errors."""
        return cls.from_dict(load_json(text))

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
        model_choices, model_sha = model_info(model)
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
        actual = as_tuple(scheduler.timesteps, "scheduler.timesteps")
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
        choices, _ = model_info(model)
        if width not in choices:
            raise ScheduleError(f"width = {width!r} is not in the model's width_choices {list(choices)}")
        n = num_steps(scheduler, num_inference_steps)
        return cls._build(model, scheduler, [width] * n, None, {"name": "uniform", "width": width}, provenance)

    @classmethod
    def ramp(cls, model: Any, scheduler: Any, small_width: float, large_width: float, fraction_small: float, *,
             num_inference_steps: Optional[int] = None,
             provenance: Optional[Mapping[str, Any]] = None) -> "Schedule":
        """T-Stitch style: the first ``fraction_small`` of the sampling steps (the noisy, high-t ones) at
        ``small_width``, the rest at ``large_width``. The number of small steps is ``fraction_small * n``
        rounded to the nearest integer, halves up (40% of 50 steps: 20; 25% of 50 steps: 13)."""
        choices, _ = model_info(model)
        for name, w in (("small_width", small_width), ("large_width", large_width)):
            if w not in choices:
                raise ScheduleError(f"{name} = {w!r} is not in the model's width_choices {list(choices)}")
        if not (is_real(fraction_small) and 0.0 <= fraction_small <= 1.0):
            raise ScheduleError(f"fraction_small = {fraction_small!r} must be a number in [0, 1]")
        n = num_steps(scheduler, num_inference_steps)
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
        table, builder = read_ddsm_official(text_or_path, model)
        num_steps(scheduler, num_inference_steps)
        timesteps = as_tuple(scheduler.timesteps, "scheduler.timesteps")
        widths = ddsm_widths_at(table, timesteps, scheduler.config.get("num_train_timesteps", DDSM_OFFICIAL_LENGTH))
        return cls._build(model, scheduler, widths, None, builder, None)

    @classmethod
    def _build(cls, model: Any, scheduler: Any, widths: Sequence[float], num_inference_steps: Optional[int],
               builder: Mapping[str, Any], provenance: Optional[Mapping[str, Any]]) -> "Schedule":
        choices, sha = model_info(model)
        name, config, steps, timesteps = scheduler_info(scheduler, num_inference_steps)
        widths = as_tuple(widths, "widths")
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
            name, config, steps, sched_ts = scheduler_info(scheduler, None)
            if timesteps is not None and as_tuple(timesteps, "timesteps") != sched_ts:
                raise ScheduleError(f"remap: timesteps ({len(as_tuple(timesteps, 'timesteps'))} steps) differ "
                                    f"from {name}.timesteps ({len(sched_ts)} steps); pass one of them")
            new_ts = sched_ts
            tied: Dict[str, Any] = {"scheduler_class_name": name, "scheduler_config": config,
                                    "num_inference_steps": steps}
        elif timesteps is not None:
            new_ts, tied = as_tuple(timesteps, "timesteps"), {}
        else:
            raise ScheduleError("remap needs timesteps or a scheduler")
        if not new_ts:
            raise ScheduleError("timesteps is empty: a schedule needs at least one step")
        for i, t in enumerate(new_ts):
            check_number(t, f"timesteps[{i}]")

        old = np.asarray(self.timesteps, dtype=np.float64)
        new = np.asarray(new_ts, dtype=np.float64)
        old_widths = np.asarray(self.widths, dtype=np.float64)
        widths = [float(w) for w in old_widths[_nearest_index(old, new)]]
        if widths[0] == 0:
            widths[0] = float(old_widths[_nearest_index(old, new[:1], candidates=old_widths != 0)[0]])

        provenance = dict(thaw(self.provenance))
        provenance["remapped_from"] = {"scheduler_class_name": self.scheduler_class_name, "num_steps": len(self),
                                       "timesteps_first_last": [self.timesteps[0], self.timesteps[-1]]}
        return Schedule(timesteps=new_ts, widths=widths, width_choices=self.width_choices,
                        config_sha256=self.config_sha256, provenance=provenance, **tied)

    def with_macs(self, table: Mapping[Any, Number]) -> "Schedule":
        """A copy with ``macs`` filled from a per-width table of MACs for one forward of one sample
        (:func:`ddsm.models.macs_table`; keys may be floats or, as read from JSON, numeric strings):
        ``per_step`` (0 for a skip), ``total`` (their sum), ``full`` (the largest width at every step) and
        ``ratio = total / full``."""
        costs: Dict[float, Number] = {}
        for k, v in table.items():
            try:
                key = float(k)
            except (TypeError, ValueError):
                raise ScheduleError(f"MACs table key {k!r} is not a width") from None
            value = check_number(v, f"MACs table[{k!r}]")
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
        return dataclasses.replace(self, metrics={**thaw(self.metrics or {}), **dict(metrics)})

    def with_provenance(self, provenance: Mapping[str, Any]) -> "Schedule":
        """A copy whose provenance is the current one updated with ``provenance`` (top-level keys replaced)."""
        return dataclasses.replace(self, provenance={**thaw(self.provenance), **dict(provenance)})
