"""The schedule stage: the validated Schedule value object, its JSON file format, DDSM-official import."""

from .schedule import (
    FORMAT, VERSION, DDSM_OFFICIAL_LENGTH, FingerprintMismatchWarning, FrozenDict, Schedule, ScheduleError,
    parse_ddsm_official
)

__all__ = ['FORMAT', 'VERSION', 'DDSM_OFFICIAL_LENGTH', 'FingerprintMismatchWarning', 'FrozenDict', 'Schedule',
           'ScheduleError', 'parse_ddsm_official']
