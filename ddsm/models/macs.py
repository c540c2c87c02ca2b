"""Multiply-accumulate counts of one UNet forward for one sample, with fvcore.

fvcore counts one fused multiply-add as one flop, i.e. it counts MACs. It has no handle for
``scaled_dot_product_attention``; :func:`sdpa_macs` supplies one, so attention's two matmuls (Q K^T and the
weighted sum of V) are counted too. ``include_attention=False`` reproduces the way DDSM counted (attention matmuls
left out), for comparison with its published table. A ``VQModel``'s codebook look-up (``torch.cdist``) is counted
by :func:`cdist_macs`.

Counting traces the network, which takes a moment: :func:`macs_table` does it once per width and caches the table
on disk keyed by the model's config fingerprint, so hot loops (search, sampling) only look numbers up.
"""

from __future__ import annotations

import functools
import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .unet import SlimmableUNet, StaticSubnet
from ..utils import PathLike, atomic_write_json, default_cache_dir

if TYPE_CHECKING:
    from torch.utils.benchmark import Measurement

__all__ = ["sdpa_macs", "cdist_macs", "count_macs", "fvcore_macs", "macs_table", "time_calls", "width_report",
           "MACS_CACHE_VERSION"]

MACS_CACHE_VERSION = 1


def sdpa_macs(inputs, outputs) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention``: Q K^T plus A V, each Nq*Nk*d per head."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    batch_heads = 1
    for d in q[:-2]:
        batch_heads *= d
    nq, d = q[-2], q[-1]
    nk, dv = k[-2], v[-1]
    return batch_heads * nq * nk * (d + dv)


def cdist_macs(inputs, outputs) -> int:
    """fvcore handle for ``aten::cdist`` (a VQ codebook look-up): one multiply-add per pair of rows and dimension."""
    from fvcore.nn.jit_handles import get_shape

    x, y = get_shape(inputs[0]), get_shape(inputs[1])
    batch = 1
    for d in x[:-2]:
        batch *= d
    return batch * x[-2] * y[-2] * x[-1]


class _AtWidth(nn.Module):
    """Traceable wrapper: ``forward(sample, timestep)`` of a supernet at a fixed width, or of a static subnet."""

    def __init__(self, net: Union[SlimmableUNet, StaticSubnet], width: Optional[float]):
        super().__init__()
        self.net, self.width = net, width

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        if isinstance(self.net, StaticSubnet):
            return self.net(sample, timestep)
        return self.net(sample, timestep, width=self.width, return_dict=False)[0]


def _inputs(net: Union[SlimmableUNet, StaticSubnet]) -> tuple:
    """One zero sample and timestep 1 for ``net``, on its device and in its dtype."""
    cfg = net.cfg if isinstance(net, StaticSubnet) else net.config
    param = next(net.parameters())
    sample = torch.zeros(1, cfg.in_channels, cfg.sample_size, cfg.sample_size, dtype=param.dtype, device=param.device)
    return sample, torch.ones(1, dtype=torch.long, device=param.device)


def count_macs(net: Union[SlimmableUNet, StaticSubnet], width: Optional[float] = None,
               include_attention: bool = True) -> int:
    """MACs of one forward of ``net`` (a supernet at ``width``, or a static subnet) on ONE sample."""
    return fvcore_macs(_AtWidth(net, 1.0 if width is None else width), _inputs(net), include_attention)


def fvcore_macs(module: nn.Module, inputs: tuple, include_attention: bool = True) -> int:
    """fvcore's count for ``module(*inputs)`` (eval mode, no grad), with our attention handle when asked."""
    return _fvcore_counts(module, inputs)[0 if include_attention else 1]


def _fvcore_counts(module: nn.Module, inputs: tuple) -> Tuple[int, int]:
    """fvcore's count for ``module(*inputs)`` with and without the attention matmuls, from one trace."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's import-time torch.jit deprecation, tracer warnings about ints
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(module.eval(), inputs)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        logging.getLogger("fvcore").setLevel(logging.ERROR)
        analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_macs)
        analysis.set_op_handle("aten::cdist", cdist_macs)
        with torch.no_grad():
            total = int(analysis.total())
            return total, total - int(analysis.by_operator().get("scaled_dot_product_attention", 0))


def macs_table(model: SlimmableUNet, widths: Optional[Sequence[float]] = None, include_attention: bool = True,
               cache_dir: Optional[PathLike] = None, use_cache: bool = True) -> Dict[float, int]:
    """MACs per width (one sample, one forward), counted once per config and cached as JSON.

    Args:
        model: the supernet.
        widths: widths to count (default: all of ``model.width_choices``).
        include_attention: count attention matmuls (our headline number) or leave them out (DDSM's way).
        cache_dir: cache folder (default: ``default_cache_dir() / "macs"``).
        use_cache: read and write the cache.
    """
    return _macs_tables(model, widths, (include_attention,), cache_dir, use_cache)[include_attention]


def _macs_tables(model: SlimmableUNet, widths: Optional[Sequence[float]], variants: Sequence[bool],
                 cache_dir: Optional[PathLike], use_cache: bool) -> Dict[bool, Dict[float, int]]:
    """MACs per width with (True) and / or without (False) attention matmuls, as ``variants`` asks, each cached in
    its own file. A width missing from a cache is counted once for all asked variants (one trace for both)."""
    widths = [float(w) for w in (widths or model.width_choices)]
    folder = Path(cache_dir or default_cache_dir() / "macs")
    paths = {a: folder / f"{model.config_sha256}-{'attn' if a else 'noattn'}-v{MACS_CACHE_VERSION}.json"
             for a in variants}
    cached: Dict[bool, Dict[str, int]] = {a: _read_cache(p) if use_cache else {} for a, p in paths.items()}
    missing = [w for w in widths if any(str(w) not in cached[a] for a in variants)]
    for w in missing:
        if len(variants) == 1:
            cached[variants[0]][str(w)] = count_macs(model, w, variants[0])
        else:
            cached[True][str(w)], cached[False][str(w)] = _fvcore_counts(_AtWidth(model, w), _inputs(model))
    if use_cache and missing:
        for a, path in paths.items():
            atomic_write_json(path, {"config_sha256": model.config_sha256, "include_attention": a, "macs": cached[a]})
    return {a: {w: int(cached[a][str(w)]) for w in widths} for a in variants}


def _read_cache(path: Path) -> Dict[str, int]:
    """A cached MACs table, or {} when there is none (a corrupt one is recounted, never trusted)."""
    try:
        return dict(json.loads(path.read_text())["macs"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def time_calls(calls: Dict[Any, Callable[[], Any]], rounds: int = 5,
               progress: bool = False) -> Dict[Any, Measurement]:
    """Time each of ``calls`` with ``torch.utils.benchmark.Timer`` (this process's thread count, accelerators
    synchronised) in ``rounds`` rounds that each time every call once, in turn, after its Timer's two warm-up calls.

    Interleaving spreads load from other processes over all calls instead of skewing one; one timed call per visit
    (not ``blocked_autorange``, whose blocks run a UNet forward ten times or more) keeps a round short. Returns one
    merged ``Measurement`` per key: ``.median`` and ``.iqr`` are seconds per call over the rounds.
    """
    from torch.utils.benchmark import Measurement, Timer
    from tqdm.auto import tqdm

    if rounds < 1:
        raise ValueError(f"rounds={rounds}: expected >= 1")
    timers = {key: Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads(), description=str(key))
              for key, fn in calls.items()}
    runs: Dict[Any, list] = {key: [] for key in calls}
    for _ in tqdm(range(rounds), desc="timing rounds", disable=not progress):
        for key, timer in timers.items():
            runs[key].append(timer.timeit(number=1))
    return {key: Measurement.merge(measurements)[0] for key, measurements in runs.items()}


def width_report(model: SlimmableUNet, time_batch: Optional[int] = None, repeats: int = 5,
                 use_cache: bool = True, progress: bool = True) -> dict:
    """Per-width MACs (with and without attention matmuls) and their ratios to width 1.0; with ``time_batch``
    also the forward time of a batch at each width, for the supernet and for the static sub-network of the same
    shape, measured side by side in this process by :func:`time_calls` (``repeats`` interleaved rounds)."""
    widths = sorted(model.width_choices)
    tables = _macs_tables(model, widths, (True, False), None, use_cache)  # one trace per width for both
    with_attn, no_attn = tables[True], tables[False]
    full, full_na = with_attn[1.0], no_attn[1.0]
    rows = [dict(width=w, macs=with_attn[w], macs_ratio=with_attn[w] / full, macs_no_attention=no_attn[w],
                 macs_ratio_no_attention=no_attn[w] / full_na) for w in widths]
    report = dict(config_sha256=model.config_sha256, sample_size=model.config.sample_size,
                  counted_by="fvcore, one multiply-add = one MAC, one sample, one forward", widths=rows)
    if time_batch:
        timed = _time_widths(model.eval(), widths, time_batch, repeats, progress)
        for row in rows:
            sup, sub = timed[(row["width"], "supernet")], timed[(row["width"], "static")]
            row.update(time_s=sup.median, time_ratio=sup.median / timed[(1.0, "supernet")].median,
                       static_time_s=sub.median, static_time_ratio=sub.median / timed[(1.0, "static")].median,
                       supernet_vs_static=sup.median / sub.median, time_iqr_s=sup.iqr, static_time_iqr_s=sub.iqr)
        report["timing"] = dict(batch=time_batch, repeats=repeats, threads=torch.get_num_threads(),
                                statistic="median seconds per forward of the batch over the rounds "
                                          "(torch.utils.benchmark.Timer, widths interleaved in every round)")
    return report


def _time_widths(model: SlimmableUNet, widths: Sequence[float], batch: int, rounds: int,
                 progress: bool) -> Dict[Tuple[float, str], Measurement]:
    """Forward timings of a batch, keyed by (width, "supernet" or "static")."""
    cfg, param = model.config, next(model.parameters())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    x, t = x.to(device=param.device, dtype=param.dtype), t.to(param.device)
    subnets = {w: model.subnet(w).eval() for w in widths}
    calls = {}
    for w in widths:
        calls[(w, "supernet")] = functools.partial(model, x, t, width=w)
        calls[(w, "static")] = functools.partial(subnets[w], x, t)
    with torch.no_grad():
        return time_calls(calls, rounds, progress)
