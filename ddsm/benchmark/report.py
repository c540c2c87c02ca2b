"""The benchmark's outputs from its report: Markdown (a table per budget and where the searched schedule stands),
the quality-vs-MACs plot, and the files written beside them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from ..images import new_figure, save_figure
from ..utils import atomic_write, atomic_write_json
from .job import METHODS

__all__ = ["benchmark_markdown", "plot_benchmark", "write_benchmark", "quality_key", "quality_name",
           "METHOD_STYLES"]


def _fmt(x: Optional[float], spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def quality_key(report: dict) -> Optional[str]:
    """The FID a benchmark report ranks by: ``"inception_fid"`` when computed, else ``"domain_fid"``, else None."""
    m = report["metrics"]
    return "inception_fid" if m.get("inception_features") else ("domain_fid" if m.get("domain_features") else None)


def quality_name(report: dict, key: Optional[str]) -> str:
    """How ``key`` (:func:`quality_key`) reads in a title: the feature network and N."""
    m = report["metrics"]
    return {"inception_fid": f"Inception FID (n={m.get('inception_samples')})",
            "domain_fid": f"domain FID ({m.get('domain_features')})"}.get(key, "SSIM")


def _comparison(ddsm: dict, other: dict, qkey: Optional[str], qname: str) -> str:
    """One sentence: where the searched schedule stands against ``other`` at the same budget."""
    if other["status"] != "ok":
        return f"- **{other['label']}**: not run at this budget ({other['note']}); the searched schedule stands alone."
    parts = []
    if qkey and ddsm.get(qkey) is not None and other.get(qkey) is not None:
        a, b = ddsm[qkey], other[qkey]
        verdict = "lower (better)" if a < b else ("higher (worse)" if a > b else "equal")
        parts.append(f"{verdict} {qname} ({a:.3f} vs {b:.3f})")
    a, b = ddsm["ssim"], other["ssim"]
    verdict = "higher (better)" if a > b else ("lower (worse)" if a < b else "equal")
    parts.append(f"{verdict} SSIM to the full model ({a:.3f} vs {b:.3f})")
    return (f"- **{other['label']}**: the searched schedule has " + " and ".join(parts)
            + f", spending {ddsm['macs_ratio']:.3f} vs {other['macs_ratio']:.3f} of full MACs.")


def benchmark_markdown(report: dict) -> str:
    """The benchmark as Markdown: a table per budget, then one sentence per method on where DDSM stands."""
    qkey = quality_key(report)
    qname = quality_name(report, qkey)
    m = report["metrics"]
    lines = [
        "# Step-aware schedule benchmark", "",
        f"{report['num_samples']} samples per method (seeds {report['seeds'][0]}..{report['seeds'][1]}), "
        f"{report['scheduler']} with {report['num_steps']} steps, data set {report['dataset']} at "
        f"{report['resolution']} px. All methods share the seeds and were sampled and timed in one process.", "",
        *[f"- {n}" for n in report["notes"]], "",
    ]
    head = ["method", "setting", "MACs / image", "MACs ratio", "budget", "speed-up", "PSNR", "SSIM"]
    if m.get("domain_features"):
        head.append("domain FID")
    if m.get("inception_features"):
        head.append(f"Inception FID (n={m['inception_samples']})")

    def cells(r: dict) -> List[str]:
        if r["status"] != "ok":
            return [r["name"], f"{r['status']}: {r['note']}"] + ["n/a"] * (len(head) - 2)
        status = {"within": "within", "over_within_one_step": "over (< 1 step)", "over": "**over**"}.get(
            r.get("budget_status"), "")
        row = [r["name"], r["label"], f"{r['macs_per_image'] / 1e6:,.2f} M", f"{r['macs_ratio']:.3f}", status,
               f"{r['speedup']:.2f}x", f"{r['psnr']:.2f}", f"{r['ssim']:.4f}"]
        if m.get("domain_features"):
            row.append(_fmt(r.get("domain_fid"), ".3f"))
        if m.get("inception_features"):
            row.append(_fmt(r.get("inception_fid"), ".3f"))
        return row

    for block in report["budgets"]:
        b = block["budget"]
        lines += [f"## Budget {b:g} of full MACs", "", "| " + " | ".join(head) + " |",
                  "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|",
                  "| " + " | ".join(cells(report["full"])) + " |"]
        lines += ["| " + " | ".join(cells(r)) + " |" for r in block["methods"]]
        lines.append("")
        notes = [r for r in block["methods"] if r["status"] == "ok" and r.get("note")]
        if notes:
            lines += [f"- {r['name']}: {r['note']}." for r in notes] + [""]
        ddsm = next((r for r in block["methods"] if r["method"] == "ddsm"), None)
        lines.append("**Where the searched schedule stands:**")
        lines.append("")
        if ddsm is None or ddsm["status"] != "ok":
            lines.append(f"- No searched schedule for budget {b:g} (give --schedule, or --schedules-dir with one "
                         "schedule per budget), so no method is compared with it here.")
        else:
            lines += [_comparison(ddsm, r, qkey, qname) for r in block["methods"] if r["method"] != "ddsm"]
        lines.append("")
    lines += ["![quality vs MACs](benchmark.png)", ""]
    return "\n".join(lines)


METHOD_STYLES = {  # marker and colour of each method in the plots
    "uniform": ("s", "tab:gray"), "fewer_steps": ("^", "tab:green"), "tstitch_supernet": ("v", "tab:orange"),
    "tstitch_dense": ("<", "tab:brown"), "adaptive": ("D", "tab:purple"), "stepsaver": ("P", "tab:cyan"),
    "ddsm": ("*", "tab:red"), "ddsm_widths": ("h", "tab:olive"), "ddsm_adaptive": ("X", "tab:pink")}


def plot_benchmark(report: dict, path) -> Path:
    """Quality vs MACs ratio, one marker per method (joined across budgets): FID (Inception if computed, else
    domain) on the left when available, SSIM to the full model on the right."""
    qkey = quality_key(report)
    panels = ([(qkey, quality_name(report, qkey) + " (lower is better)")] if qkey else []) + [
        ("ssim", "SSIM to the full model (higher is better)")]
    fig, axes = new_figure(1, len(panels), figsize=(6.2 * len(panels), 4.6), squeeze=False)
    for ax, (key, name) in zip(axes[0], panels):
        full = report["full"]
        if full.get(key) is not None:
            ax.plot([1.0], [full[key]], "o", ms=9, color="black", label="full model")
        for method, (marker, color) in METHOD_STYLES.items():
            pts = sorted((r["macs_ratio"], r[key]) for b in report["budgets"] for r in b["methods"]
                         if r["method"] == method and r["status"] == "ok" and r.get(key) is not None)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, ls="-", lw=0.8,
                        ms=11 if method == "ddsm" else 7, label=METHODS[method])
        for b in report["budgets"]:
            ax.axvline(b["budget"], color="tab:red", ls=":", lw=0.8)
        ax.set_xlabel("MACs actually spent / full model's MACs")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{report['scheduler']}, {report['num_steps']} steps, {report['num_samples']} samples "
                 f"(dotted: budgets)", fontsize=10)
    return save_figure(fig, path)


def write_benchmark(report: dict, out_dir, artefacts: Optional[Mapping[str, Any]] = None) -> Dict[str, Path]:
    """benchmark.json, benchmark.md and benchmark.png in ``out_dir`` (each written atomically), and
    stepsaver.json when a StepSaver was fitted."""
    out = Path(out_dir)
    paths = dict(json=atomic_write_json(out / "benchmark.json", report),
                 md=atomic_write(out / "benchmark.md", benchmark_markdown(report)),
                 png=plot_benchmark(report, out / "benchmark.png"))
    if artefacts and artefacts.get("stepsaver") is not None:
        paths["stepsaver"] = artefacts["stepsaver"].save(out / "stepsaver.json")
    return paths
