"""The frontier's outputs: frontier.json (every method's FID and MACs at every step count and budget), frontier.md
(a table per step count: rows are methods, columns budgets, cells "FID (MACs ratio)") and one plot per step count
(FID against MACs, a line per method, the full model as reference lines)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional

from ..version import __version__
from ..images import new_figure, save_figure
from ..utils import atomic_write, atomic_write_json
from .report import METHOD_STYLES, quality_key

__all__ = ["FORMAT", "VERSION", "FRONTIER_METHODS", "frontier_report", "frontier_markdown", "plot_frontier",
           "write_frontier"]

FORMAT = "ddsm-frontier"
VERSION = 1
FRONTIER_METHODS = {  # in table order
    "uniform": "uniform width",
    "fewer_steps": "fewer steps (full width)",
    "tstitch_supernet": "T-Stitch (supernet's small width)",
    "tstitch_dense": "T-Stitch (small dense model)",
    "adaptive": "AdaptiveDiffusion",
    "stepsaver": "StepSaver",
    "ddsm_widths": "DDSM widths only",
    "ddsm": "DDSM widths + skips",
    "ddsm_adaptive": "DDSM + AdaptiveDiffusion",
}
_KIND_OF = {"ddsm_widths": "widths", "ddsm": "skips"}


def _quality(report: dict) -> dict:
    """Which FID the frontier plots (Inception when computed, else domain), its feature network and N."""
    key = quality_key(report)
    m = report["metrics"]
    prefix = "inception" if key == "inception_fid" else "domain"
    return dict(key=key, name="Inception FID" if key == "inception_fid" else "domain FID",
                features=m.get(f"{prefix}_features"),
                num_samples=m["inception_samples"] if key == "inception_fid" else report["num_samples"],
                reference_samples=m.get(f"{prefix}_reference_samples"),
                inception_computed=bool(m.get("inception_features")))


def _point(row: Optional[dict], budget: float, key: str, ref_macs: float, search: Optional[dict]) -> dict:
    """One method at one budget on the frontier (status infeasible / unavailable when it did not run)."""
    if row is None or row["status"] != "ok":
        status, note = (row["status"], row["note"]) if row is not None else ("unavailable", "not run")
        if search is not None and search["source"] == "infeasible":
            status, note = "infeasible", search["note"]
        return dict(budget=budget, status=status, note=note, fid=None, macs_ratio=None)
    return dict(budget=budget, status="ok", label=row["label"], note=row.get("note", ""), fid=row.get(key),
                macs_ratio=row["macs_ratio"], macs_per_image=row["macs_per_image"],
                macs_ratio_to_reference=row["macs_per_image"] / ref_macs, budget_status=row.get("budget_status"),
                domain_fid=row.get("domain_fid"), inception_fid=row.get("inception_fid"), ssim=row.get("ssim"),
                speedup=row.get("speedup"), kind=row.get("params", {}).get("kind"))


def frontier_report(job, reports: Dict[int, dict], reference: dict, searches: List[dict], model,
                    model_path: Optional[str] = None) -> dict:
    """frontier.json's content from the benchmark report of every step count (``reports``), the reference full
    model, and the schedules' records (:meth:`~ddsm.benchmark.frontier.PlannedSchedule.record`)."""
    first = reports[job.steps[0]]
    quality = _quality(first)
    key, ref_macs = quality["key"], reference["macs_per_image"]
    step_counts = []
    for steps in job.steps:
        report = reports[steps]
        rows = {(r["method"], b["budget"]): r for b in report["budgets"] for r in b["methods"]}
        found = {(s["kind"], s["budget"]): s for s in searches if s["steps"] == steps}
        methods = []
        for method, name in FRONTIER_METHODS.items():
            points = [_point(rows.get((method, b)), b, key, ref_macs, found.get((_KIND_OF.get(method), b)))
                      for b in job.budgets]
            if method == "ddsm" and any(p.get("kind") is None for p in points if p["status"] == "ok"):
                name = "DDSM searched schedule (allow_skip not recorded)"
            methods.append(dict(method=method, name=name, points=points))
        full = report["full"]
        step_counts.append(dict(
            steps=steps, benchmark=f"steps{steps}/benchmark.json", methods=methods,
            full=dict(fid=full.get(key), domain_fid=full.get("domain_fid"), inception_fid=full.get("inception_fid"),
                      macs_per_image=full["macs_per_image"], macs_ratio_to_reference=full["macs_per_image"] / ref_macs,
                      seconds_per_image=full.get("seconds_per_image"))))
    return dict(
        format=FORMAT, version=VERSION, tool_version=__version__,
        model=dict(path=model_path, config_sha256=model.config_sha256, width_choices=list(model.width_choices)),
        scheduler=first["scheduler"], dataset=first["dataset"], resolution=first["resolution"],
        num_samples=first["num_samples"], seeds=first["seeds"], steps=list(job.steps), budgets=list(job.budgets),
        quality=quality, reference=dict(reference, fid=reference.get(key)), searches=searches,
        step_counts=step_counts,
        notes=["MACs ratio: MACs spent per image over the full model's at the same step count (the budget's "
               "reference); macs_ratio_to_reference: over the reference full model's "
               f"({reference['steps']} steps).",
               "Every method and step count shares the evaluation seeds; FID is comparable only at the same N."])


def _fid_text(q: dict) -> str:
    what = (f"Inception FID ({q['features']})" if q["key"] == "inception_fid" else
            f"domain FID ({q['features']}: a small classifier trained on the data set, not Inception)")
    ref = f" against {q['reference_samples']} reference images" if q.get("reference_samples") else ""
    tail = "" if q["inception_computed"] else " Inception FID was not computed (--no-inception)."
    return f"FID: {what}, N = {q['num_samples']} samples per method{ref}.{tail}"


def _cell(p: dict) -> str:
    if p["status"] != "ok":
        return "infeasible" if p["status"] == "infeasible" else "n/a"
    fid = "n/a" if p["fid"] is None else f"{p['fid']:.2f}"
    over = "" if p.get("budget_status") in (None, "within") else "*"
    return f"{fid} ({p['macs_ratio']:.3f}){over}"


def frontier_markdown(report: dict) -> str:
    """frontier.md: per step count, a table (rows: methods, columns: budgets, cells "FID (MACs ratio)"), the full
    model's FID at that step count and at the reference step count, and the plot."""
    q, ref = report["quality"], report["reference"]
    seeds = report["seeds"]
    lines = [
        "# Benchmark frontier: FID against MACs", "",
        f"{report['scheduler']} at {', '.join(str(s) for s in report['steps'])} steps, MACs budgets "
        f"{', '.join(f'{b:g}' for b in report['budgets'])}, data set {report['dataset']} at {report['resolution']} "
        f"px. Every method samples the same {report['num_samples']} held-out seeds {seeds[0]}..{seeds[1]}.", "",
        _fid_text(q), "",
        "Cells: FID (MACs spent per image / the full model's at the same step count); lower FID is better. "
        "`*`: spent more than the budget on the evaluation seeds (see that step count's benchmark.md); "
        "`infeasible`: no setting of that method fits the budget; `n/a`: not run (e.g. no --small-dense).", "",
        "The DDSM widths only row (a schedule searched without skip genes) at a fixed step count isolates what "
        "choosing a width per step adds to DDIM at that step count; DDSM widths + skips may also skip steps.", "",
    ]
    ref_fid = "n/a" if ref.get("fid") is None else f"{ref['fid']:.2f}"
    for block in report["step_counts"]:
        s, full = block["steps"], block["full"]
        full_fid = "n/a" if full["fid"] is None else f"{full['fid']:.2f}"
        full_line = (f"Full model, {s} steps: FID {full_fid} (the budgets' reference)." if s == ref["steps"] else
                     f"Full model, {s} steps: FID {full_fid} ({full['macs_ratio_to_reference']:.3f} of the "
                     f"{ref['steps']}-step full model's MACs). Full model, {ref['steps']} steps: FID {ref_fid}.")
        lines += [f"## {report['scheduler']}, {s} steps", "", full_line, "",
                  "| method | " + " | ".join(f"budget {b:g}" for b in report["budgets"]) + " |",
                  "|---|" + "---:|" * len(report["budgets"])]
        lines += [f"| {m['name']} | " + " | ".join(_cell(p) for p in m["points"]) + " |" for m in block["methods"]]
        details = block["benchmark"].replace(".json", ".md")
        lines += ["", f"Details: [{details}]({details}) (SSIM to the full model, speed-ups, each setting).", "",
                  f"![FID against MACs, {s} steps](frontier_steps{s}.png)", ""]
    searched = report["searches"]
    counts = {k: sum(x["source"] == k for x in searched) for k in ("given", "reused", "searched", "infeasible")}
    lines += ["## The DDSM schedules", "",
              f"{len(searched)} (step count, budget, kind) schedules: {counts['searched']} searched in this run, "
              f"{counts['reused']} reused from an earlier run, {counts['given']} given (--schedules-dir), "
              f"{counts['infeasible']} infeasible.", ""]
    lines += _genes_table(searched)
    infeasible = [f"- {x['steps']} steps, budget {x['budget']:g}, {x['kind']}: {x['note']}" for x in searched
                  if x["source"] == "infeasible"]
    lines += [*infeasible, *([""] if infeasible else []), *[f"- {n}" for n in report["notes"]], ""]
    return "\n".join(lines)


def _genes_table(searched: List[dict]) -> List[str]:
    """Per DDSM schedule, how many of its steps run at each width and how many it skips: do the narrow widths
    earn a place, or does the search spend its budget on full-width steps?"""
    rows = [x for x in searched if x.get("widths")]
    if not rows:
        return []
    lines = ["| steps | budget | kind | MACs ratio | steps per width (skipped) |", "|---:|---:|---|---:|---|"]
    for x in rows:
        count = Counter(float(w) for w in x["widths"])
        genes = ", ".join(f"{w:g}: {count[w]}" for w in sorted((w for w in count if w > 0), reverse=True))
        skipped = f" (skipped: {count[0.0]})" if count.get(0.0) else ""
        kind = "widths + skips" if x["kind"] == "skips" else "widths only"
        lines.append(f"| {x['steps']} | {x['budget']:g} | {kind} | {x['macs_ratio']:.3f} | {genes}{skipped} |")
    return lines + [""]


def plot_frontier(report: dict, steps: int, path) -> Path:
    """FID against MACs ratio at one step count: a line per method (markers at the budgets), the full model at
    that step count and at the reference step count as horizontal lines, the budgets as dotted vertical lines."""
    q, ref = report["quality"], report["reference"]
    block = next(b for b in report["step_counts"] if b["steps"] == steps)
    fig, ax = new_figure(figsize=(9.6, 5.0))
    for m in block["methods"]:
        pts = sorted((p["macs_ratio"], p["fid"]) for p in m["points"]
                     if p["status"] == "ok" and p["fid"] is not None)
        if pts:
            marker, color = METHOD_STYLES[m["method"]]
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker=marker, color=color, ls="-", lw=0.9,
                    ms=11 if m["method"].startswith("ddsm") else 7, label=m["name"])
    if block["full"]["fid"] is not None:
        ax.axhline(block["full"]["fid"], color="black", lw=1.0, label=f"full model, {steps} steps")
    if ref["steps"] != steps and ref.get("fid") is not None:
        ax.axhline(ref["fid"], color="black", ls="--", lw=0.9, label=f"full model, {ref['steps']} steps")
    for b in report["budgets"]:
        ax.axvline(b, color="tab:red", ls=":", lw=0.7)
    ax.set_xlabel(f"MACs spent per image / full model's MACs at {steps} steps (dotted: budgets)")
    ax.set_ylabel(f"{q['name']}, N = {q['num_samples']} (lower is better)")
    ax.set_title(f"{report['scheduler']}, {steps} steps: {q['name']} against MACs\n"
                 f"N = {q['num_samples']} samples per method, features: {q['features']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(fig, path)


def write_frontier(report: dict, out_dir) -> Dict[str, Path]:
    """frontier.json, frontier.md and frontier_steps{S}.png in ``out_dir``, each written atomically."""
    out = Path(out_dir)
    paths = dict(json=atomic_write_json(out / "frontier.json", report),
                 md=atomic_write(out / "frontier.md", frontier_markdown(report)))
    for block in report["step_counts"]:
        s = block["steps"]
        paths[f"png{s}"] = plot_frontier(report, s, out / f"frontier_steps{s}.png")
    return paths
