"""What a slimmable run shows while it trains: the loss terms per width in its log, and sample grids per width."""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import torch

__all__ = ["loss_key", "LossWindow", "sample_grid_images", "grid_nrow", "macs_table_or_zeros"]


def loss_key(term: str, width: float) -> str:
    """Log record key of a loss term at a width: ``loss/1.0``, ``mse/0.25``, ``distill/0.5``."""
    return f"{term}/{float(width)}"


class LossWindow:
    """Sums of the per-width loss terms since the last log record (and the steps and training seconds they took),
    averaged over micro-batches and processes when logged."""

    KEYS = ("loss", "mse", "distill", "teacher")

    def __init__(self, widths: Sequence[float], device):
        self.widths = list(widths)
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(len(self.KEYS), len(self.widths), device=self.device)
        self.counts = torch.zeros(len(self.KEYS), len(self.widths), device=self.device)
        self.steps, self.seconds = 0, 0.0

    def add(self, terms: Dict[float, Dict[str, torch.Tensor]]) -> None:
        for w, values in terms.items():
            j = self.widths.index(w)
            for i, key in enumerate(self.KEYS):
                if key in values:
                    self.sums[i, j] += values[key]
                    self.counts[i, j] += 1

    def reduce(self, accelerator) -> dict:
        both = accelerator.reduce(torch.stack([self.sums, self.counts]), reduction="sum")
        sums, counts = both[0].cpu(), both[1].cpu()
        return {loss_key(key, w): float(sums[i, j] / counts[i, j])
                for i, key in enumerate(self.KEYS) for j, w in enumerate(self.widths) if counts[i, j] > 0}


def sample_grid_images(model, scheduler_config: Mapping, width: float, num_images: int, num_steps: int,
                       autoencoder=None, macs_table: Optional[dict] = None, batch_size: int = 64) -> torch.Tensor:
    """(N, C, H, W) images in [-1, 1] from ``model`` at ``width`` with DDIM (seeds 0..N-1; class-conditional models
    cycle through the classes, image ``i`` of class ``i mod num_classes``), decoded when latent."""
    from diffusers import DDIMScheduler

    from ..sampling import sample

    classes = model.config.num_classes
    labels = [i % classes for i in range(num_images)] if classes else None
    scheduler = DDIMScheduler.from_config(dict(scheduler_config))
    return sample(model, scheduler, float(width), seeds=range(num_images), num_inference_steps=num_steps,
                  class_labels=labels, batch_size=batch_size, autoencoder=autoencoder, progress=False,
                  macs_table=macs_table).images


def grid_nrow(model, num_images: int) -> Optional[int]:
    """Images per grid row: one row per class when every class is shown, else the grid's default."""
    classes = model.config.num_classes
    return classes if classes and num_images >= classes else None


def macs_table_or_zeros(model) -> dict:
    """MACs per width for the sampler's report. Grids do not need them, so a failure to count (or to write the
    cache) must not stop a long training run: it is reported and zeros are used."""
    try:
        import warnings

        from ..models import macs_table

        with warnings.catch_warnings():  # fvcore's import-time torch.jit deprecation noise
            warnings.simplefilter("ignore")
            return macs_table(model)
    except Exception as e:  # noqa: BLE001 - deliberately broad, see the docstring
        print(f"warning: could not count MACs per width ({type(e).__name__}: {e}); grids are unaffected")
        return {w: 0 for w in model.width_choices}
