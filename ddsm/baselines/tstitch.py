"""T-Stitch: the first steps on a small network, the rest on the full one, with the fewest small steps that meet a
MACs budget; the small network is the supernet's smallest width or a separately trained dense model
(:class:`StitchedUNet`)."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn

from .budget import BenchmarkError

__all__ = ["StitchedUNet", "ramp_for_budget"]


def ramp_for_budget(small_macs: float, full_macs: float, num_steps: int, budget: float) -> Optional[int]:
    """T-Stitch: the fewest small-model steps ``n`` (the first ones) such that
    ``n * small + (N - n) * full <= budget * N * full``; None when even ``n = N`` is over the budget."""
    if not small_macs < full_macs:
        raise BenchmarkError(f"the small model costs {small_macs:,.0f} MACs per forward, not less than the full "
                             f"model's {full_macs:,.0f}: stitching saves nothing")
    target = budget * num_steps * full_macs * (1 + 1e-12)
    return next((n for n in range(num_steps + 1) if n * small_macs + (num_steps - n) * full_macs <= target), None)


class StitchedUNet(nn.Module):
    """Two different networks behind the SlimmableUNet call, for T-Stitch with a separately trained small model.

    ``model(x, t, class_labels=None, width=w)`` runs ``large`` at its full width when ``w == 1.0`` and ``small`` at
    its own largest width when ``w == small_width`` (a pseudo-width: by default the small model's MACs as a fraction
    of the large one's, rounded to 4 digits). ``width_choices`` is ``(small_width, 1.0)`` and :attr:`macs_table`
    holds both networks' MACs, to pass to :func:`ddsm.sampling.sample` explicitly (tracing the wrapper would count
    the wrong thing). Both networks must share the noise schedule they were trained with; that is not checked.
    """

    def __init__(self, large, small, large_macs: Optional[float] = None, small_macs: Optional[float] = None,
                 small_width: Optional[float] = None):
        super().__init__()
        from diffusers.configuration_utils import FrozenDict

        from ..models import macs_table

        lc, sc = large.config, small.config
        for key in ("in_channels", "out_channels", "sample_size"):
            if lc[key] != sc[key]:
                raise BenchmarkError(f"--small-dense model has {key}={sc[key]} but the supernet has {lc[key]}: "
                                     "the two networks must denoise the same tensors")
        if sc.get("num_classes") and sc.get("num_classes") != lc.get("num_classes"):
            raise BenchmarkError(f"--small-dense model has num_classes={sc.get('num_classes')} but the supernet has "
                                 f"{lc.get('num_classes')}")
        self.large, self.small = large, small
        self.large_width = max(large.width_choices)
        self.small_own_width = max(small.width_choices)
        self.large_macs = float(large_macs if large_macs is not None else macs_table(large)[self.large_width])
        self.small_macs = float(small_macs if small_macs is not None
                                else macs_table(small, [self.small_own_width])[self.small_own_width])
        if not self.small_macs < self.large_macs:
            raise BenchmarkError(f"--small-dense model costs {self.small_macs:,.0f} MACs per forward, not less than "
                                 f"the supernet's {self.large_macs:,.0f}: stitching saves nothing")
        token = small_width if small_width is not None else min(0.9999, max(1e-4, round(
            self.small_macs / self.large_macs, 4)))
        self.small_width = float(token)
        self.config = FrozenDict({**dict(lc), "width_choices": [self.small_width, self.large_width]})

    @property
    def width_choices(self) -> Tuple[float, ...]:
        return (self.small_width, self.large_width)

    @property
    def macs_table(self) -> Dict[float, float]:
        return {self.small_width: self.small_macs, self.large_width: self.large_macs}

    def forward(self, sample: torch.Tensor, timestep, class_labels: Optional[torch.Tensor] = None,
                width: float = 1.0, return_dict: bool = True):
        if width == self.large_width:
            return self.large(sample, timestep, class_labels=class_labels, width=self.large_width,
                              return_dict=return_dict)
        if width == self.small_width:
            labels = class_labels if self.small.config.get("num_classes") else None
            return self.small(sample, timestep, class_labels=labels, width=self.small_own_width,
                              return_dict=return_dict)
        raise ValueError(f"width {width!r} is neither the small model's pseudo-width {self.small_width} nor "
                         f"{self.large_width}")
