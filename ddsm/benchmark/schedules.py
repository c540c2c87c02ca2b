"""The searched schedules a benchmark compares: loading them, which one stands for which budget, and the scheduler
setup they imply."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..sampling import build_scheduler
from ..schedules import Schedule, ScheduleError
from ..baselines import BenchmarkError
from .job import BenchmarkJob

__all__ = ["load_schedules", "schedule_budget", "schedule_kind", "SearchedSchedule", "ScheduleAssignment",
           "assign_schedules", "resolve_sampler", "on_benchmark_steps"]


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


def schedule_kind(schedule: Schedule, path: str = "") -> Optional[str]:
    """Which search made ``schedule``: ``"widths"`` (no skip genes: provenance ``search.allow_skip`` false),
    ``"skips"`` (``allow_skip`` true, or any step skipped), or None (not recorded and no step skipped: a file from
    before the search recorded ``allow_skip``)."""
    search = schedule.provenance.get("search") if schedule.provenance else None
    declared = search.get("allow_skip") if isinstance(search, Mapping) else None
    skipped = [i for i, w in enumerate(schedule.widths) if w == 0]
    if isinstance(declared, bool):
        if not declared and skipped:
            raise BenchmarkError(f"schedule {path or '(unnamed)'}: provenance search.allow_skip is false but step "
                                 f"{skipped[0]} is skipped (width 0); expected no skipped step")
        return "skips" if declared else "widths"
    return "skips" if skipped else None


@dataclass(frozen=True)
class SearchedSchedule:
    """One searched schedule of a benchmark: its own budget (declared in its provenance, else its MACs ratio), its
    kind (:func:`schedule_kind`), the requested budget it stands for (None: none, it only serves as the base of DDSM
    + AdaptiveDiffusion at smaller budgets) and the report row it fills (``slot``: ``"ddsm"`` or
    ``"ddsm_widths"``)."""

    path: str
    schedule: Schedule
    budget: float
    declared: bool
    kind: Optional[str]
    serves: Optional[float]
    slot: str


@dataclass(frozen=True)
class ScheduleAssignment:
    """Which searched schedule fills which DDSM row at which budget.

    When the schedules include both widths-only ones (``kind == "widths"``) and others (``"skips"`` or not
    recorded), the widths-only ones fill the ``ddsm_widths`` row and the others the ``ddsm`` row; when they are all
    of one kind, they all fill the ``ddsm`` row (its label says which kind) and there is no ``ddsm_widths`` row.
    """

    entries: Tuple[SearchedSchedule, ...]   # every schedule, sorted by its own budget

    @property
    def slots(self) -> Tuple[str, ...]:
        """The DDSM rows this benchmark reports: ``("ddsm",)`` or ``("ddsm", "ddsm_widths")``."""
        return ("ddsm", "ddsm_widths") if any(e.slot == "ddsm_widths" for e in self.entries) else ("ddsm",)

    def at(self, slot: str, budget: float) -> Optional[SearchedSchedule]:
        """The schedule that fills row ``slot`` at ``budget``, or None."""
        return next((e for e in self.entries if e.slot == slot and e.serves == budget), None)

    def above(self, slot: str, budget: float) -> List[SearchedSchedule]:
        """Row ``slot``'s schedules searched for a budget larger than ``budget``, the smallest first."""
        return [e for e in self.entries if e.slot == slot and e.budget > budget + 1e-9]


def assign_schedules(schedules: Sequence[Tuple[str, Schedule]], budgets: Sequence[float],
                     table: Mapping[float, float]) -> ScheduleAssignment:
    """Which searched schedule stands for which budget, in which DDSM row.

    A schedule whose provenance names its search budget serves exactly that budget; one without serves the
    smallest requested budget at or above its MACs ratio. Its row is ``ddsm_widths`` for a widths-only schedule
    when schedules of the other kind are given too, else ``ddsm`` (:class:`ScheduleAssignment`). Two schedules for
    the same row and budget are an error.
    """
    found = []
    for path, s in schedules:
        own, declared = schedule_budget(s, table)
        if declared:
            serves = next((b for b in budgets if math.isclose(b, own, abs_tol=1e-6)), None)
        else:
            serves = min((b for b in budgets if b >= own - 1e-9), default=None)
        found.append((path, s, own, declared, schedule_kind(s, path), serves))
    both = any(f[4] == "widths" for f in found) and any(f[4] != "widths" for f in found)
    entries = [SearchedSchedule(path, s, own, declared, kind, serves,
                                "ddsm_widths" if both and kind == "widths" else "ddsm")
               for path, s, own, declared, kind, serves in found]
    taken: Dict[Tuple[str, float], str] = {}
    for e in entries:
        if e.serves is None:
            continue
        key = (e.slot, e.serves)
        if key in taken:
            what = "widths-only " if e.slot == "ddsm_widths" else ""
            raise BenchmarkError(f"two searched {what}schedules for budget {e.serves:g}: {taken[key]} and {e.path}; "
                                 "expected one per budget (and kind: widths only, or widths + skips)")
        taken[key] = e.path
    return ScheduleAssignment(tuple(sorted(entries, key=lambda e: e.budget)))


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
