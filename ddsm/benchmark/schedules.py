"""The searched schedules a benchmark compares: loading them, which one stands for which budget, and the scheduler
setup they imply."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..sampling import build_scheduler
from ..schedules import Schedule, ScheduleError
from ..baselines import BenchmarkError
from .job import BenchmarkJob

__all__ = ["load_schedules", "schedule_budget", "assign_schedules", "resolve_sampler", "on_benchmark_steps"]


def load_schedules(model, schedule: Optional[str] = None, schedules_dir: Optional[str] = None,
                   allow_fingerprint_mismatch: bool = False) -> List[Tuple[str, Schedule]]:
    """The searched schedules to benchmark: ``schedule`` and every ddsm-schedule JSON under ``schedules_dir``
    (other JSON files, e.g. pareto.json, are ignored). Each is checked against ``model``."""
    paths: List[Path] = []
    if schedule:
        if not Path(schedule).is_file():
            raise FileNotFoundError(f"--schedule {schedule!r} does not exist")
        paths.append(Path(schedule))
    if schedules_dir:
        folder = Path(schedules_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"--schedules-dir {schedules_dir!r} is not a directory")
        found = []
        for p in sorted(folder.rglob("*.json")):
            try:
                is_schedule = json.loads(p.read_text()).get("format") == "ddsm-schedule"
            except (ValueError, AttributeError, OSError):
                is_schedule = False
            if is_schedule and p.resolve() not in {q.resolve() for q in paths}:
                found.append(p)
        if not found:
            raise BenchmarkError(f"--schedules-dir {schedules_dir!r} holds no ddsm-schedule JSON file")
        paths += found
    return [(str(p), Schedule.load(p, model=model, allow_fingerprint_mismatch=allow_fingerprint_mismatch))
            for p in paths]


def schedule_budget(schedule: Schedule, table: Mapping[float, float]) -> Tuple[float, bool]:
    """(budget, declared): the search budget in the schedule's provenance, else its MACs ratio (declared=False)."""
    search = schedule.provenance.get("search") if schedule.provenance else None
    if isinstance(search, Mapping) and isinstance(search.get("budget"), (int, float)):
        return float(search["budget"]), True
    return float(schedule.with_macs(table).macs["ratio"]), False


def assign_schedules(schedules: Sequence[Tuple[str, Schedule]], budgets: Sequence[float],
                     table: Mapping[float, float]) -> Tuple[Dict[float, Tuple[str, Schedule]],
                                                            List[Tuple[float, str, Schedule]]]:
    """Which searched schedule stands for which budget.

    A schedule whose provenance names its search budget serves exactly that budget; one without serves the
    smallest requested budget at or above its MACs ratio. Returns ({budget: (path, schedule)}, every schedule with
    its budget, sorted by budget: the candidates for DDSM + skipping at smaller budgets).
    """
    by_budget: Dict[float, Tuple[str, Schedule]] = {}
    every = []
    for path, s in schedules:
        own, declared = schedule_budget(s, table)
        every.append((own, path, s))
        if declared:
            match = [b for b in budgets if math.isclose(b, own, abs_tol=1e-6)]
        else:
            match = [min((b for b in budgets if b >= own - 1e-9), default=None)]
        for b in match:
            if b is None:
                continue
            if b in by_budget:
                raise BenchmarkError(f"two searched schedules for budget {b:g}: {by_budget[b][0]} and {path}")
            by_budget[b] = (path, s)
    return by_budget, sorted(every, key=lambda e: e[0])


def resolve_sampler(model_dir, run_config, schedules: Sequence[Tuple[str, Schedule]] = (),
                    scheduler_name: Optional[str] = None,
                    num_steps: Optional[int] = None) -> Tuple[str, Dict[str, Any], int]:
    """(scheduler class name, scheduler config, N) for a benchmark run.

    The config comes from the first schedule's own scheduler config, else ``<run>/scheduler/`` beside the model
    folder, else the run config's diffusion section; the class from ``scheduler_name``, the schedule, or the run
    config's sampling section; N from ``num_steps``, the schedule, or the run config's sampling section.
    """
    first = schedules[0][1] if schedules else None
    beside = Path(model_dir).parent / "scheduler" / "scheduler_config.json"
    if first is not None and first.scheduler_config is not None:
        config = json.loads(json.dumps(first.scheduler_config))
    elif beside.is_file():
        config = json.loads(beside.read_text())
    else:
        config = run_config.diffusion.scheduler_config()
    name = scheduler_name or (first.scheduler_class_name if first is not None else None) or \
        run_config.sampling.scheduler
    build_scheduler(name, config)  # a clear error for an unknown class name
    steps = num_steps or (first.num_inference_steps if first is not None else None) or \
        run_config.sampling.num_inference_steps
    return name, config, int(steps)


def on_benchmark_steps(schedule: Schedule, job: BenchmarkJob) -> Tuple[Schedule, bool]:
    """The schedule on the benchmark's scheduler timesteps (remapped by nearest timestep when they differ)."""
    scheduler = build_scheduler(job.scheduler_name, job.scheduler_config)
    scheduler.set_timesteps(job.num_steps)
    try:
        schedule.check_scheduler(scheduler)
        return schedule, False
    except ScheduleError:
        return schedule.remap(scheduler=scheduler), True
