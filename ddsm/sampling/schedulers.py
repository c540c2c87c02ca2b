"""The diffusers schedulers the sampling loop supports, and the two things it needs from each.

Every entry of ``scheduler.timesteps`` (after ``set_timesteps``) is one noise prediction followed by one
``scheduler.step``, so a width schedule holds one width per entry, and its length is the scheduler's own timestep
count, which is not always ``num_inference_steps``:

* PNDM's Runge-Kutta warm-up visits ``num_inference_steps + 9`` timesteps (``+ 1`` with ``skip_prk_steps``);
* the 2nd-order Heun and KDPM2 schedulers visit ``2 * num_inference_steps - 1``: a predictor call and a corrector
  call per step (the last step has no corrector). The two calls of one step take their own widths; a skip (width
  0) at a corrector call reuses the predictor's noise prediction, which turns that step into an Euler step.

:func:`set_timestep_count` finds the ``num_inference_steps`` that gives a wanted timestep count, and
:func:`step_kwargs` passes ``scheduler.step`` only the keyword arguments its signature accepts (the
``prepare_extra_step_kwargs`` pattern of diffusers pipelines): UniPC, PNDM, DEIS, Heun... take no ``generator``.
"""

from __future__ import annotations

import inspect

from ..schedules import ScheduleError
# SCHEDULERS (the supported classes) and UNSUPPORTED (refused ones, with the reason) live with the schedule file
# checks, which need them and which this module imports.
from ..schedules.diffusers_config import SCHEDULERS, UNSUPPORTED

__all__ = ["SCHEDULERS", "UNSUPPORTED", "build_scheduler", "step_kwargs", "set_timestep_count"]


def build_scheduler(name: str, config: dict):
    """A diffusers scheduler by class name (one of :data:`SCHEDULERS`) from a scheduler or diffusion config."""
    import diffusers

    if name not in SCHEDULERS:
        reason = f": {UNSUPPORTED[name]}" if name in UNSUPPORTED else ""
        raise ValueError(f"scheduler {name!r} is not supported{reason}; expected one of {list(SCHEDULERS)}")
    return getattr(diffusers, name).from_config(dict(config))


def step_kwargs(scheduler, **kwargs) -> dict:
    """The subset of ``kwargs`` that ``scheduler.step`` accepts by name (e.g. ``generator`` for DDPM, DDIM and
    the ancestral schedulers, nothing for UniPC or PNDM)."""
    accepted = inspect.signature(scheduler.step).parameters
    return {k: v for k, v in kwargs.items() if k in accepted}


def _timestep_count(scheduler, num_inference_steps: int, count: int) -> int:
    """``len(scheduler.timesteps)`` after ``set_timesteps(num_inference_steps)``, or a ScheduleError naming
    ``count`` when the scheduler refuses that step count."""
    try:
        scheduler.set_timesteps(num_inference_steps)
    except (ValueError, IndexError) as e:
        raise ScheduleError(f"{type(scheduler).__name__} cannot visit exactly {count} timesteps: "
                            f"set_timesteps({num_inference_steps}) fails ({e})") from None
    return len(scheduler.timesteps)


def set_timestep_count(scheduler, count: int) -> int:
    """Call ``scheduler.set_timesteps(n)`` with the ``n`` for which the scheduler visits exactly ``count``
    timesteps, and return ``n``.

    ``n = count`` for single-step schedulers (DDPM, DDIM, DPM-Solver, Euler, UniPC...). Otherwise the scheduler's
    count is taken to be affine in ``n`` (``n + 9`` for PNDM, ``2n - 1`` for Heun and KDPM2), solved for from two
    trial calls and checked; a count no ``n`` gives (an even one for Heun) raises a ScheduleError.
    """
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ScheduleError(f"timestep count {count!r}: expected an int >= 1")
    at_count = _timestep_count(scheduler, count, count)
    if at_count == count:
        return count
    name = type(scheduler).__name__
    if count == 1:
        raise ScheduleError(f"{name} cannot visit exactly 1 timestep: set_timesteps(1) gives {at_count}")
    below = _timestep_count(scheduler, count - 1, count)
    slope = at_count - below
    n = count - (at_count - count) // slope if slope > 0 and (at_count - count) % slope == 0 else None
    if n is None or n < 1 or _timestep_count(scheduler, n, count) != count:
        raise ScheduleError(f"{name} cannot visit exactly {count} timesteps: set_timesteps({count - 1}) gives "
                            f"{below} and set_timesteps({count}) gives {at_count}; pick a count it can visit")
    return n
