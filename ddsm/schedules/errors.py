"""The errors of the schedule stage (a module of their own, so that every check module can raise them)."""

from __future__ import annotations

__all__ = ["ScheduleError", "FingerprintMismatchWarning"]


class ScheduleError(ValueError):
    """A schedule (or schedule file) is invalid, or does not fit the model or scheduler it is used with."""


class FingerprintMismatchWarning(UserWarning):
    """A schedule was used with a model it was not made for, because the caller overrode the check on purpose."""
