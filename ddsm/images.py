"""Image helpers: [-1, 1] tensors to uint8 arrays and PNG grids (written atomically)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .utils import PathLike, atomic_path

__all__ = ["to_uint8", "make_grid", "save_grid", "save_grids_side_by_side", "new_figure", "save_figure"]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) floats in [-1, 1] -> (N, H, W, C) uint8."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def make_grid(images: torch.Tensor, nrow: Optional[int] = None, pad: int = 2) -> np.ndarray:
    """Tile (N, C, H, W) images in [-1, 1] into one (rows*H, cols*W, C) uint8 array with white padding."""
    # Not torchvision's make_grid: it returns one image unpadded, narrows grids under nrow images, makes gray RGB.
    arr = to_uint8(images)
    n, h, w, c = arr.shape
    cols = nrow or max(1, int(math.ceil(math.sqrt(n))))
    rows = int(math.ceil(n / cols))
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = arr[i]
    return grid


def save_grid(images: torch.Tensor, path: PathLike, nrow: Optional[int] = None, scale: int = 1) -> Path:
    """Save a PNG grid of ``images`` (N, C, H, W) in [-1, 1]; ``scale`` enlarges small images (nearest)."""
    from PIL import Image

    grid = make_grid(images, nrow)  # not torchvision's save_image: it writes gray as RGB and cannot upscale
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


def new_figure(*args, **kwargs):
    """``plt.subplots`` on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig, path: PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return Path(path)


def save_grids_side_by_side(groups: Sequence[torch.Tensor], titles: Sequence[str], path: PathLike,
                            nrow: Optional[int] = None) -> Path:
    """One figure with a titled grid per group (e.g. full width vs step-aware, same seeds)."""
    grids = [make_grid(imgs, nrow) for imgs in groups]
    aspect = max(g.shape[0] / g.shape[1] for g in grids)  # height / width: size the figure to the grids, no margins
    fig, axes = new_figure(1, len(groups), figsize=(4 * len(groups), 4 * aspect + 0.4), squeeze=False)
    for ax, grid, title in zip(axes[0], grids, titles):
        ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    return save_figure(fig, path)
