"""The schedule stage: the validated Schedule value object, its JSON file format, DDSM-official import."""

from .official import DDSM_OFFICIAL_LENGTH, parse_ddsm_official
from .schedule import Schedule
from .validation import FORMAT, VERSION, FingerprintMismatchWarning, FrozenDict, ScheduleError

__all__ = ['FORMAT', 'VERSION', 'DDSM_OFFICIAL_LENGTH', 'FingerprintMismatchWarning', 'FrozenDict', 'Schedule',
           'ScheduleError', 'parse_ddsm_official']
