"""Schedules published by DDSM (Wang et al., ICLR 2024): one Python list of 1000 widths indexed by DDPM timestep
``t = 0..999`` (DDSM looks up ``strategy[int(t)]``), read as data, never executed."""

from __future__ import annotations

import ast
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

from .introspect import model_info
from .validation import ScheduleError, check_number

__all__ = ["DDSM_OFFICIAL_LENGTH", "parse_ddsm_official", "read_ddsm_official", "ddsm_widths_at"]

# DDSM's published schedules hold one width per DDPM timestep t = 0..T-1, with T = 1000.
DDSM_OFFICIAL_LENGTH = 1000
# A DDSM schedule file is ~5 kB; refuse anything absurdly large before parsing it.
_MAX_OFFICIAL_BYTES = 1 << 20


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
        values = _literal(text)
    if not isinstance(values, (list, tuple)):
        raise ScheduleError(f"DDSM schedule must be a list of widths, got {type(values).__name__}")
    if len(values) != DDSM_OFFICIAL_LENGTH:
        raise ScheduleError(f"DDSM schedule length: expected {DDSM_OFFICIAL_LENGTH} widths (one per DDPM timestep), "
                            f"got {len(values)}")
    return tuple(float(check_number(w, f"DDSM schedule[t={t}]")) for t, w in enumerate(values))


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
        raise ScheduleError(
            "DDSM schedule text is not one list literal of numbers (it is parsed as data, never executed; "
            f"DDSM's search appends each result to search.txt, so keep only one list): "
            f"{type(e).__name__}: {e} (text starts {text.strip()[:60]!r})") from None


def read_ddsm_official(text_or_path: Union[str, bytes, os.PathLike], model: Any) -> Tuple[Tuple[float, ...], dict]:
    """The widths table of a DDSM schedule (a path, or the text itself when it starts with ``[``), checked against
    ``model``'s width choices, and the ``builder`` provenance naming its source and sha256. Errors name the source.
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
        choices, _ = model_info(model)
        for t, w in enumerate(table):
            if w not in choices:
                raise ScheduleError(f"DDSM schedule[t={t}] = {w!r} is not in the model's width_choices "
                                    f"{list(choices)}")
    except ScheduleError as e:
        raise ScheduleError(f"{source}: {e}") from None
    builder: Dict[str, Any] = {"name": "import_ddsm_official", "source": source,
                               "source_sha256": hashlib.sha256(raw).hexdigest()}
    return table, builder


def ddsm_widths_at(table: Sequence[float], timesteps: Sequence[float], num_train_timesteps: int) -> List[float]:
    """The width at each timestep ``t``: ``table[t]``; a fractional timestep (Euler) uses the nearest integer,
    halves down. The scheduler must have as many train timesteps as the table has entries."""
    if num_train_timesteps != len(table):
        raise ScheduleError(f"scheduler.config.num_train_timesteps = {num_train_timesteps} but the DDSM schedule "
                            f"has {len(table)} entries (one per DDPM timestep)")
    widths = []
    for i, t in enumerate(timesteps):
        index = math.ceil(t - 0.5)  # nearest integer, halves down (an integer timestep is itself)
        if not 0 <= index < len(table):
            raise ScheduleError(f"timesteps[{i}] = {t!r} is outside the DDSM schedule's range 0..{len(table) - 1}")
        widths.append(table[index])
    return widths
