"""The proxy check's table (markdown) and scatter plots (one panel per search score against the held-out one)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional

from ..images import new_figure, save_figure

__all__ = ["proxy_markdown", "plot_proxy_check"]


def _fmt(x: Optional[float], spec: str = ".4g") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _held_name(report: dict) -> str:
    h = report["header"]["heldout"]
    return f"{h['metric']} (N={h['num_samples']}, seeds {h['seed']}..)"


def proxy_markdown(report: dict) -> str:
    """The rows (one per schedule), then each search score's Spearman rho with the held-out score and its cost."""
    s = report["summary"]
    keys = list(s["proxies"])
    head = ["#", "kind", "MACs", *keys, report["header"]["heldout"]["metric"]]
    lines: List[str] = [
        f"# Proxy check: search scores vs held-out {_held_name(report)}", "",
        f"{s['schedules']} schedules, {report['header']['scheduler']} with {report['header']['num_steps']} steps; "
        f"search seeds from {report['header']['search_seed']} (common to every schedule). Features: "
        + (", ".join(f"{k}: `{v}`" for k, v in report["features"].items()) or "none") + ".", "",
        "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(report["rows"]):
        cells = [str(i), r["kind"], f"{r['macs_ratio']:.3f}", *[_fmt(r["proxies"].get(k, {}).get("value"))
                                                               for k in keys],
                 _fmt((r.get("heldout") or {}).get("value"))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Spearman rank correlation with the held-out score (trusted when rho >= {s['threshold']} over "
                  f">= {s['min_schedules']} schedules against Inception FID on >= 1000 held-out images"
                  + ("" if s["heldout_meets_bar"] else "; this held-out score is not that, so nothing is trusted")
                  + "), and cost per schedule (seconds also as a fraction of the held-out score's):", "",
              "| search score | schedules | Spearman rho | p | trusted | UNet forwards | seconds | vs held-out |",
              "|---|---:|---:|---:|---|---:|---:|---:|"]
    for k, p in s["proxies"].items():
        lines.append(f"| {k} | {p['schedules']} | {_fmt(p['spearman'], '.3f')} | {_fmt(p['p_value'], '.2g')} | "
                     f"{'yes' if p['passes'] else 'no'} | {_fmt(p['unet_forwards_per_schedule'], ',.0f')} | "
                     f"{_fmt(p['seconds_per_schedule'], '.2f')} | {_fmt(p['seconds_vs_heldout'], '.3f')} |")
    h = s["heldout"]
    lines.append(f"| held-out {_held_name(report)} | {s['schedules']} | | | | "
                 f"{_fmt(h['unet_forwards_per_schedule'], ',.0f')} | {_fmt(h['seconds_per_schedule'], '.2f')} | 1 |")
    for name, c in report.get("reference_cost", {}).items():
        lines.append(f"\nOne-time cost of the full model's reference images ({name} seeds, N={c['num_samples']}; "
                     f"fidelity, teacher_fid): {c['unet_forwards']:,} UNet forwards, {c['seconds']:.1f} s.")
    lines += ["", "Seconds are wall clock in this process (sampling plus scoring) on this machine; read them as "
                  "rough. FID at small N is biased upwards; a proxy needs the right ranking, not the right value."]
    return "\n".join(lines) + "\n"


def plot_proxy_check(report: dict, path) -> Path:
    """One scatter panel per search score: its value (x) against the held-out score (y), coloured by family."""
    s = report["summary"]
    keys = list(s["proxies"])
    cols = min(3, len(keys))
    rows_n = math.ceil(len(keys) / cols)
    fig, axes = new_figure(rows_n, cols, figsize=(4.2 * cols, 3.6 * rows_n), squeeze=False)
    kinds = sorted({r["kind"] for r in report["rows"]})
    colors = {k: f"C{i}" for i, k in enumerate(kinds)}
    for ax, key in zip(axes.flat, keys):
        for kind in kinds:
            pts = [(r["proxies"][key]["value"], r["heldout"]["value"]) for r in report["rows"]
                   if r["kind"] == kind and key in r["proxies"] and r.get("heldout")]
            if pts:
                ax.plot(*zip(*pts), "o", color=colors[kind], label=kind, ms=5)
        p = s["proxies"][key]
        ax.set_title(f"{key}: Spearman {_fmt(p['spearman'], '.3f')} (n={p['schedules']})", fontsize=9)
        ax.set_xlabel(f"search score {key}")
        ax.set_ylabel(report["header"]["heldout"]["metric"])
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    return save_figure(fig, path)
