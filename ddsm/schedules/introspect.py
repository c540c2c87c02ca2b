"""What a schedule records of the model and the scheduler it is made for: the model's width choices and config
fingerprint, and the diffusers scheduler's class, JSON config and timesteps."""

from __future__ import annotations

import inspect
import math
from typing import Any, Mapping, Optional, Tuple

from ..utils import canonical_config, config_sha256
from .validation import ScheduleError, as_tuple, check_number, scalar

__all__ = ["model_info", "scheduler_config", "num_steps", "scheduler_info"]


def model_info(model: Any) -> Tuple[Tuple[float, ...], str]:
    """(width_choices, config_sha256) of a model: anything with a ``.config`` mapping holding ``width_choices``."""
    config = getattr(model, "config", None)
    if not isinstance(config, Mapping):
        raise ScheduleError(f"model must have a .config mapping (a diffusers ModelMixin), got {type(model).__name__}")
    if "width_choices" not in config:
        raise ScheduleError(f"model.config has no 'width_choices' (keys: {sorted(config)})")
    choices = as_tuple(config["width_choices"], "model.config['width_choices']")
    choices = tuple(float(check_number(w, f"model.config['width_choices'][{i}]")) for i, w in enumerate(choices))
    return choices, config_sha256(config)


def scheduler_config(scheduler: Any) -> dict:
    """The scheduler's public config as JSON. JSON cannot hold infinities; a non-finite value equal to the
    constructor's default (DPMSolver's ``lambda_min_clipped=-inf``) is left out, since ``from_config`` restores
    it; any other non-finite value is an error."""
    config = dict(canonical_config(scheduler.config))
    try:
        defaults = {k: p.default for k, p in inspect.signature(type(scheduler).__init__).parameters.items()}
    except (TypeError, ValueError):
        defaults = {}
    for key, value in list(config.items()):
        value = scalar(value)
        if isinstance(value, float) and not math.isfinite(value):
            default = defaults.get(key, inspect.Parameter.empty)
            if isinstance(default, float) and (default == value or (math.isnan(default) and math.isnan(value))):
                del config[key]
            else:
                raise ScheduleError(
                    f"scheduler.config.{key} = {value!r} cannot be stored in JSON and is not the default "
                    f"({default!r}) of {type(scheduler).__name__}")
    return config


def num_steps(scheduler: Any, num_inference_steps: Optional[int]) -> int:
    """Number of timesteps the scheduler will visit, calling ``set_timesteps(num_inference_steps)`` if given."""
    if num_inference_steps is not None:
        scheduler.set_timesteps(num_inference_steps)
    if getattr(scheduler, "num_inference_steps", None) is None:
        raise ScheduleError(
            f"{type(scheduler).__name__}.set_timesteps(n) has not been called: call it first, "
            "or pass num_inference_steps=n")
    return len(scheduler.timesteps)


def scheduler_info(scheduler: Any, num_inference_steps: Optional[int]) -> Tuple[str, dict, int, tuple]:
    """(class name, config, timestep count, timesteps) of a diffusers scheduler, calling
    ``set_timesteps(num_inference_steps)`` first when that is given. The count is ``len(timesteps)``, which is
    ``num_inference_steps`` except for PNDM (``+ 9``) and the 2nd-order Heun and KDPM2 (``2n - 1``)."""
    steps = num_steps(scheduler, num_inference_steps)
    timesteps = as_tuple(scheduler.timesteps, "scheduler.timesteps")
    return type(scheduler).__name__, scheduler_config(scheduler), steps, timesteps
