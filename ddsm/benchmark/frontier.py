"""The benchmark frontier: every method of :func:`~ddsm.benchmark.run_benchmark` over several step counts and MACs
budgets, with two DDSM schedules per step count and budget (searched with and without skip genes).

For each step count ``S`` (``--steps``, DDIM 10 / 25 / 50 by default) and each budget ``b``, the two schedules come
from the given ones (``--schedules-dir``: ``S`` steps, search budget ``b`` in the provenance, and
``search.allow_skip`` false / true or any skipped step), else from an earlier run of the frontier, else from a
search run here (:func:`ddsm.search.run_search`, the config's search section). Then the benchmark runs once per
step count with them, on held-out seeds. Files under the output folder:

    searches/steps{S}/budget{b}/{widths,skips}/schedule.json  each searched schedule with the search's other files
                                                               (checkpoint.json: an interrupted search resumes)
    steps{S}/benchmark.json, .md, .png, stepsaver.json        the benchmark of one step count, written when it ends
    reference_steps{R}.json                                   the R-step full model (when R is not among the steps)
    frontier.json, frontier.md, frontier_steps{S}.png         the frontier (:mod:`ddsm.benchmark.frontier_report`)

A rerun reuses every finished search and step count (``force`` reruns the benchmarks, never the searches: delete a
search's folder to search it again). Whatever a rerun would reuse is checked against this run's settings first, and
a difference is an error that names it, before any work starts.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..models import macs_table
from ..runtime import model_device
from ..schedules import Schedule
from ..search import SearchError, SearchJob, SearchSettings, SearchSpace, run_search, segments_upto
from ..baselines import BenchmarkError
from ..utils import atomic_write_json
from .job import BenchmarkJob
from .measure import BenchmarkMetrics
from .methods import BenchmarkSampler
from .report import write_benchmark
from .frontier_report import frontier_report, write_frontier
from .runner import run_benchmark
from .schedules import assign_schedules

__all__ = ["KINDS", "check_steps", "FrontierJob", "PlannedSchedule", "segments_at", "search_path", "plan_schedules",
           "run_frontier"]

KINDS = ("widths", "skips")  # searched without skip genes (widths only), and with them (widths + skips)
_SEARCH_KEYS = ("generations", "population", "metric", "seed", "mode")  # provenance.search checked on reuse


def check_steps(steps: Sequence[int], flag: str = "--steps") -> Tuple[int, ...]:
    """``steps`` sorted, after checking that there is at least one, each an int >= 2, and no duplicates."""
    steps = tuple(steps)
    if not steps:
        raise BenchmarkError(f"{flag} is empty: give at least one step count, e.g. {flag} 10 25 50")
    for s in steps:
        if isinstance(s, bool) or not isinstance(s, int) or s < 2:
            raise BenchmarkError(f"{flag} {s}: expected step counts that are ints >= 2")
    if len(set(steps)) != len(steps):
        raise BenchmarkError(f"{flag} {list(steps)} has duplicates")
    return tuple(sorted(steps))


@dataclass(frozen=True)
class FrontierJob:
    """A frontier run's settings: the benchmark template (everything but the step count), the search template
    (everything but output, budget, step count and ``allow_skip``; None: never search, every schedule must be
    given), the step counts, and the step count of the reference full model."""

    benchmark: BenchmarkJob
    search: Optional[SearchJob] = None
    steps: Tuple[int, ...] = (10, 25, 50)
    reference_steps: int = 50
    force: bool = False                    # rerun finished step counts' benchmarks (searches are always reused)

    def __post_init__(self):
        object.__setattr__(self, "steps", check_steps(self.steps))
        check_steps([self.reference_steps], "--reference-steps")
        if not (self.benchmark.domain or self.benchmark.inception):
            raise BenchmarkError("--no-inception with --no-domain leaves no FID to put on the frontier; expected at "
                                 "least one of the two")
        for s in self.steps + (self.reference_steps,):
            self.benchmark_job(s)  # every step count's benchmark settings are valid (StepSaver's reference steps...)
        if self.search is not None:
            if self.search.mode != "single":
                raise BenchmarkError(f"search mode {self.search.mode!r}: the frontier needs one schedule per budget, "
                                     "expected 'single'")
            SearchSettings(budget_macs=1, mode=self.search.mode, population=self.search.population,
                           generations=self.search.generations, num_samples=self.search.num_samples,
                           final_samples=self.search.final_samples, top_k=self.search.top_k)  # checks them now
            n = max(self.search.num_samples, self.search.final_samples)
            first, last = self.search.sample_seed, self.search.sample_seed + n - 1
            ev = self.benchmark
            if first <= ev.seed + ev.num_samples - 1 and ev.seed <= last:
                raise BenchmarkError(f"the search seeds {first}..{last} overlap the evaluation seeds {ev.seed}.."
                                     f"{ev.seed + ev.num_samples - 1}: pass another --seed or --sample-seed (the "
                                     "frontier is measured on held-out seeds)")

    @property
    def budgets(self) -> Tuple[float, ...]:
        return self.benchmark.budgets

    def benchmark_job(self, steps: int) -> BenchmarkJob:
        """The benchmark settings at ``steps`` steps."""
        return replace(self.benchmark, num_steps=steps)


@dataclass
class PlannedSchedule:
    """One DDSM schedule of the frontier (step count, budget, kind) and where it comes from: ``given``
    (``--schedules-dir``), ``reused`` (an earlier frontier run's search), ``search`` (to search now; ``searched``
    once done), ``infeasible`` (the budget is below the cheapest schedule of that kind) or ``missing``."""

    steps: int
    budget: float
    kind: str
    path: str
    source: str
    schedule: Optional[Schedule] = None
    note: str = ""

    def record(self, out: Path) -> dict:
        """This schedule for frontier.json and for the check of a reused benchmark."""
        macs = self.schedule.macs if self.schedule is not None else None
        return dict(steps=self.steps, budget=self.budget, kind=self.kind, path=_relative(self.path, out),
                    source=self.source, note=self.note, macs_ratio=macs["ratio"] if macs else None,
                    widths=list(self.schedule.widths) if self.schedule is not None else None)


def segments_at(search: SearchJob, steps: int) -> Optional[int]:
    """The genes of a search at ``steps`` steps: ``search.segments`` is an upper bound (:func:`segments_upto`)."""
    return segments_upto(search.segments, steps)


def search_path(out, steps: int, budget: float, kind: str) -> Path:
    """Where the frontier saves the schedule it searched for ``steps``, ``budget`` and ``kind``."""
    return Path(out) / "searches" / f"steps{steps}" / f"budget{budget:g}" / kind / "schedule.json"


def plan_schedules(model, job: FrontierJob, out, given: Sequence[Tuple[str, Schedule]] = (),
                   allow_fingerprint_mismatch: bool = False) -> List[PlannedSchedule]:
    """Where each (step count, budget, kind) schedule comes from; raises :class:`BenchmarkError` when a schedule
    is missing and ``job.search`` is None, or a saved search was made with other settings."""
    table = {float(w): int(m) for w, m in macs_table(model).items()}
    plan, missing = [], []
    for steps in job.steps:
        assignment = assign_schedules([(p, s) for p, s in given if len(s) == steps], job.budgets, table)
        by_kind = {(e.kind or "skips", e.serves): e for e in assignment.entries if e.serves is not None}
        for budget in job.budgets:
            for kind in KINDS:
                saved = search_path(out, steps, budget, kind)
                item = PlannedSchedule(steps, budget, kind, str(saved), "search")
                if (kind, budget) in by_kind:
                    entry = by_kind[(kind, budget)]
                    item.path, item.source, item.schedule = entry.path, "given", entry.schedule.with_macs(table)
                elif saved.is_file():
                    item.source = "reused"
                    item.schedule = Schedule.load(saved, model=model,
                                                  allow_fingerprint_mismatch=allow_fingerprint_mismatch)
                    _check_saved(item, job.search)
                    item.schedule = item.schedule.with_macs(table)
                elif job.search is None:
                    item.source = "missing"
                    missing.append(item)
                else:
                    space = SearchSpace.build(table, steps, allow_skip=kind == "skips",
                                              segments=segments_at(job.search, steps))
                    cheapest = space.cost(space.cheapest()) / space.full_cost
                    if cheapest > budget * (1 + 1e-9):
                        item.source = "infeasible"
                        item.note = (f"the cheapest {_kind_name(kind)} schedule of {steps} steps costs "
                                     f"{cheapest:.3f} of full, over the budget {budget:g}")
                plan.append(item)
    if missing:
        listed = "; ".join(f"{m.steps} steps, budget {m.budget:g}, {_kind_name(m.kind)}" for m in missing[:6])
        more = f" and {len(missing) - 6} more" if len(missing) > 6 else ""
        raise BenchmarkError(
            f"--no-search: {len(missing)} schedules are missing: {listed}{more}. Expected in --schedules-dir (or "
            f"as {search_path(out, missing[0].steps, missing[0].budget, missing[0].kind)} from an earlier run) "
            "ddsm-schedule files with that many steps whose provenance names the search budget (search.budget) "
            "and search.allow_skip (false: widths only; true or a skipped step: widths + skips); or drop "
            "--no-search to search them here")
    return plan


def run_frontier(model, job: FrontierJob, output_dir, *, scheduler_config: dict,
                 schedules: Sequence[Tuple[str, Schedule]] = (), small_dense=None, autoencoder=None,
                 model_path: Optional[str] = None, accelerator=None, progress: bool = True,
                 log: Optional[Callable[[str], None]] = None, allow_fingerprint_mismatch: bool = False) -> dict:
    """Search what is missing, run the benchmark at every step count, and write the frontier; returns
    frontier.json's content.

    ``schedules`` are given (path, Schedule) pairs (:func:`~ddsm.benchmark.load_schedules`); ``scheduler_config``
    the diffusers config of ``job.benchmark.scheduler_name`` that searches and benchmarks use; ``log`` gets one
    line per stage; the other arguments are :func:`~ddsm.benchmark.run_benchmark`'s.
    """
    out = Path(output_dir)
    say = log or (lambda line: None)
    is_main = accelerator is None or accelerator.is_main_process
    plan = plan_schedules(model, job, out, schedules, allow_fingerprint_mismatch)
    counts = {s: sum(p.source == s for p in plan) for s in ("given", "reused", "search", "infeasible")}
    say(f"frontier: step counts {list(job.steps)} x budgets {list(job.budgets)} x {len(KINDS)} DDSM kinds; "
        f"schedules: {counts['given']} given, {counts['reused']} reused, {counts['search']} to search, "
        f"{counts['infeasible']} infeasible")
    done = {s: _finished(out, s, job, plan, model, small_dense) for s in job.steps}  # checked before any work

    reports: Dict[int, dict] = {}
    for steps in job.steps:
        if done[steps] is not None:
            say(f"steps {steps}: reusing {out / f'steps{steps}' / 'benchmark.json'} (--force to run it again)")
            reports[steps] = done[steps]
            continue
        items = [p for p in plan if p.steps == steps]
        for item in (p for p in items if p.source == "search"):
            say(f"steps {steps}: searching budget {item.budget:g}, {_kind_name(item.kind)} -> {item.path}")
            item.schedule = _search(model, job, item, scheduler_config, accelerator, autoencoder, progress,
                                    allow_fingerprint_mismatch)
            item.source = "searched"
        bjob = job.benchmark_job(steps)
        say(f"steps {steps}: benchmark of every method at budgets {list(job.budgets)} on {bjob.num_samples} "
            f"held-out seeds")
        report, artefacts = run_benchmark(model, bjob, schedules=[(p.path, p.schedule) for p in items
                                                                  if p.schedule is not None],
                                          small_dense=small_dense, autoencoder=autoencoder, model_path=model_path,
                                          accelerator=accelerator, progress=progress)
        report["frontier_inputs"] = _inputs(out, steps, job, plan, model, small_dense)
        if is_main:
            write_benchmark(report, out / f"steps{steps}", artefacts)
        _wait(accelerator)
        say(f"steps {steps}: done -> {out / f'steps{steps}' / 'benchmark.json'}")
        reports[steps] = report

    reference = _reference(model, job, reports, out, autoencoder, accelerator, progress, say, is_main)
    frontier = frontier_report(job, reports, reference, [p.record(out) for p in plan], model, model_path)
    if is_main:
        paths = write_frontier(frontier, out)
        say("wrote " + ", ".join(str(p) for p in paths.values()))
    return frontier


def _kind_name(kind: str) -> str:
    return {"widths": "widths only", "skips": "widths + skips"}[kind]


def _relative(path, out: Path) -> str:
    """``path`` relative to the output folder when inside it (so a moved folder still matches), else absolute."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(out.resolve()))
    except ValueError:
        return str(p)


def _wait(accelerator) -> None:
    if accelerator is not None and accelerator.num_processes > 1:
        accelerator.wait_for_everyone()


def _check_saved(item: PlannedSchedule, search: Optional[SearchJob]) -> None:
    """An earlier run's schedule must be what this run would search (same steps, budget, kind and settings)."""
    s, where = item.schedule, item.path
    if len(s) != item.steps:
        raise BenchmarkError(f"{where} has {len(s)} steps, expected {item.steps}: delete its folder to search again")
    recorded = s.provenance.get("search") if s.provenance else None
    recorded = recorded if hasattr(recorded, "get") else {}
    want = {"budget": item.budget, "allow_skip": item.kind == "skips"}
    if search is not None:
        want.update({k: getattr(search, k) for k in _SEARCH_KEYS})
    diffs = []
    for key, value in want.items():
        have = recorded.get(key)
        if have is None:
            continue
        same = math.isclose(have, value, abs_tol=1e-9) if key == "budget" else have == value
        if not same:
            diffs.append(f"{key} {have!r} (this run: {value!r})")
    if diffs:
        raise BenchmarkError(f"{where} was searched with other settings: {', '.join(diffs)}; delete its folder to "
                             "search again with this run's settings, or run with the same settings")


def _search(model, job: FrontierJob, item: PlannedSchedule, scheduler_config: dict, accelerator, autoencoder,
            progress: bool, allow_fingerprint_mismatch: bool) -> Schedule:
    """Search one schedule into ``item.path`` (resuming from its checkpoint when a run was interrupted)."""
    path = Path(item.path)
    sjob = replace(job.search, output=str(path), budget=item.budget, budget_macs=None, num_steps=item.steps,
                   segments=segments_at(job.search, item.steps),
                   allow_skip=item.kind == "skips", scheduler=job.benchmark.scheduler_name,
                   resume=(path.parent / "checkpoint.json").is_file())
    try:
        run_search(model, sjob, scheduler_config, accelerator=accelerator, autoencoder=autoencoder,
                   progress=progress)
    except SearchError as e:
        if not sjob.resume:
            raise
        raise SearchError(f"{e} (frontier: this search resumed from {path.parent / 'checkpoint.json'}; delete "
                          f"{path.parent} to start it again)") from e
    _wait(accelerator)
    schedule = Schedule.load(path, model=model, allow_fingerprint_mismatch=allow_fingerprint_mismatch)
    search = dict(schedule.provenance.get("search") or {})
    if "allow_skip" not in search:  # recorded here when the search does not record it itself
        schedule = schedule.with_provenance({"search": {**search, "allow_skip": item.kind == "skips"}})
        if accelerator is None or accelerator.is_main_process:
            schedule.save(path)
    return schedule.with_macs(macs_table(model))


def _inputs(out: Path, steps: int, job: FrontierJob, plan: List[PlannedSchedule], model, small_dense) -> dict:
    """What a step count's benchmark depends on; a finished one is reused only when this is unchanged."""
    bjob = job.benchmark_job(steps)
    return json.loads(json.dumps(dict(
        job={k: v for k, v in asdict(bjob).items()}, model=model.config_sha256,
        small_dense=small_dense.config_sha256 if small_dense is not None else None,
        schedules=[dict(budget=p.budget, kind=p.kind, path=_relative(p.path, out),
                        widths=list(p.schedule.widths) if p.schedule is not None else None)
                   for p in plan if p.steps == steps])))


def _finished(out: Path, steps: int, job: FrontierJob, plan: List[PlannedSchedule], model,
              small_dense) -> Optional[dict]:
    """The finished benchmark of ``steps`` to reuse, None to run it; an error when one exists that this run's
    settings or schedules would not reproduce."""
    path = out / f"steps{steps}" / "benchmark.json"
    if job.force or not path.is_file():
        return None
    report = json.loads(path.read_text())
    pending = [p for p in plan if p.steps == steps and p.source == "search"]
    if pending:
        raise BenchmarkError(f"{path} exists but its schedule {pending[0].path} does not (deleted?): pass --force "
                             "to search it and run this step count again, or use another --output-dir")
    recorded, now = report.get("frontier_inputs"), _inputs(out, steps, job, plan, model, small_dense)
    if recorded is None:
        raise BenchmarkError(f"{path} was not written by the frontier (no frontier_inputs): pass --force to replace "
                             "it, or use another --output-dir")
    diffs = [f"{k} {recorded['job'].get(k)!r} (this run: {v!r})" for k, v in now["job"].items()
             if recorded["job"].get(k) != v]
    diffs += [f"{k} differs" for k in ("model", "small_dense", "schedules") if recorded.get(k) != now[k]]
    if diffs:
        raise BenchmarkError(f"{path} was made with other settings: {'; '.join(diffs)}; pass --force to run it "
                             "again with these, or use another --output-dir")
    return report


def _reference(model, job: FrontierJob, reports: Dict[int, dict], out: Path, autoencoder, accelerator,
               progress: bool, say, is_main: bool) -> dict:
    """The full model at ``job.reference_steps`` steps on the same seeds and metrics: from that step count's
    benchmark when it ran, else sampled here once (reference_steps{R}.json, reused by a rerun)."""
    R = job.reference_steps
    keys = ("macs_per_image", "seconds_per_image", "domain_fid", "inception_fid", "ssim", "psnr")
    if R in reports:
        return dict(steps=R, source=f"steps{R}/benchmark.json", **{k: reports[R]["full"].get(k) for k in keys})
    path = out / f"reference_steps{R}.json"
    rjob = job.benchmark_job(R)
    inputs = json.loads(json.dumps(dict(job=asdict(rjob), model=model.config_sha256)))
    if path.is_file() and not job.force:
        saved = json.loads(path.read_text())
        if saved.get("inputs") == inputs:
            say(f"reference: reusing {path}")
            return saved
    say(f"reference: the full model at {R} steps on the same {rjob.num_samples} seeds")
    table = {float(w): float(m) for w, m in macs_table(model).items()}
    full = BenchmarkSampler(model, rjob, autoencoder, table, accelerator).evaluate([max(table)] * R)
    measured = BenchmarkMetrics(rjob, full.images, progress=progress, device=model_device(model))(full.images)
    record = dict(steps=R, source=path.name, macs_per_image=full.macs_per_image,
                  seconds_per_image=full.seconds_per_image, **{k: measured.get(k) for k in keys[2:]},
                  inputs=inputs)
    if is_main:
        atomic_write_json(path, record)
    return record
