"""CPU threads that yield to other processes instead of spinning against them.

torch's OpenMP workers spin while they wait for each other. On a 2-core machine with another process holding one
core, ``configs/mnist.yaml`` training at two threads fell to about a quarter of its speed alone, while one thread
kept its full one-core speed (``python eval/threads.py`` measures this). A passive OpenMP wait policy avoids the
collapse but costs a third of the speed alone, so instead :func:`adapt_threads`, called once per training or
sampling step, gives torch as many threads as there are cores that other processes leave idle, re-read every few
seconds from ``/proc/stat``.

* ``DDSM_THREADS=N`` fixes N threads (no adapting), e.g. for bitwise-reproducible training beside other jobs:
  forwards give the same bits at any thread count, gradients differ in the last float bits.
* Without ``/proc/stat`` (not Linux) nothing changes.
"""

from __future__ import annotations

import os
import time
from typing import Optional

import torch

__all__ = ["ThreadGovernor", "adapt_threads", "fixed_threads"]


def fixed_threads() -> Optional[int]:
    """The thread count ``DDSM_THREADS`` asks for (None: adapt); a bad value is a clear error."""
    value = os.environ.get("DDSM_THREADS")
    if value is None or value == "":
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"DDSM_THREADS={value!r}: expected a whole number of threads >= 1")
    return int(value)


def _busy_seconds() -> Optional[float]:
    """CPU seconds all processes have spent busy since boot (None where /proc/stat is missing)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class ThreadGovernor:
    """Sets ``torch.set_num_threads`` to the cores left idle by other processes, at most every ``interval`` s.

    Args:
        max_threads: the most threads to use (default: torch's count when the governor is made).
        interval: seconds between two readings; shorter ones are too noisy at /proc/stat's 10 ms resolution.
    """

    def __init__(self, max_threads: Optional[int] = None, interval: float = 3.0):
        self.max_threads = max_threads or torch.get_num_threads()
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self.interval = interval
        self._last = self._reading()

    @staticmethod
    def _reading():
        return time.monotonic(), _busy_seconds(), time.process_time()

    def threads_for(self, others: float) -> int:
        """Threads to use when other processes keep ``others`` cores busy. Rounded, not thresholded higher: while our
        threads spin, a busy neighbour gets only about 0.67 of its core, and that must still cost us a thread."""
        return max(1, min(self.max_threads, round(self.cores - others)))

    def update(self) -> int:
        """Re-read the load if ``interval`` has passed and set torch's threads; returns the thread count."""
        now = self._reading()
        wall = now[0] - self._last[0]
        if wall >= self.interval and now[1] is not None and self._last[1] is not None:
            others = max(0.0, (now[1] - self._last[1]) - (now[2] - self._last[2])) / wall
            threads = self.threads_for(others)
            if threads != torch.get_num_threads():
                torch.set_num_threads(threads)
            self._last = now
        return torch.get_num_threads()


_governor: Optional[ThreadGovernor] = None


def adapt_threads() -> int:
    """One cheap call per step: the process-wide :class:`ThreadGovernor` (or ``DDSM_THREADS``) sets torch's threads."""
    global _governor
    fixed = fixed_threads()
    if fixed is not None:
        if torch.get_num_threads() != fixed:
            torch.set_num_threads(fixed)
        return fixed
    if _governor is None:
        _governor = ThreadGovernor()
    return _governor.update()
