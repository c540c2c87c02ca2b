"""ddsm.images: the grid is torchvision's ``make_grid`` layout, pixel for pixel, and keeps the cases torchvision would
change (a lone image, fewer images than ``nrow``, grayscale)."""

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid as torchvision_make_grid

from ddsm.images import make_grid, save_grid, to_uint8


def _images(n: int, channels: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, 5, 7, generator=torch.Generator().manual_seed(seed)) * 2 - 1  # H=5, W=7


def test_grid_equals_torchvision_make_grid_on_full_rows():
    for channels in (1, 3):
        x = _images(6, channels)
        theirs = torchvision_make_grid(torch.from_numpy(to_uint8(x)).permute(0, 3, 1, 2), nrow=3, padding=2,
                                       pad_value=255)
        assert np.array_equal(make_grid(x, nrow=3), theirs[:channels].permute(1, 2, 0).numpy())


def test_grid_keeps_what_torchvision_would_change(tmp_path):
    x = _images(1, 3)
    one = make_grid(x)
    assert one.shape == (9, 11, 3) and np.array_equal(one[2:-2, 2:-2], to_uint8(x)[0])
    border = np.ones(one.shape[:2], bool)
    border[2:-2, 2:-2] = False
    assert (one[border] == 255).all()  # a lone image keeps its white padding
    assert make_grid(_images(2, 1), nrow=4).shape == (9, 4 * 9 + 2, 1)  # fewer images than nrow: nrow columns
    gray = _images(4, 1)
    with Image.open(save_grid(gray, tmp_path / "grid.png")) as img:
        assert img.mode == "L" and np.array_equal(np.asarray(img), make_grid(gray)[..., 0])
    with Image.open(save_grid(gray, tmp_path / "big.png", scale=2)) as img:
        assert img.size == (2 * 20, 2 * 16)
