"""Tiny data sets on disk for tests: an ImageFolder of drawn RGB shapes and a CIFAR-10 batch folder in the real
file format (python pickles), both made with numpy in a temporary folder."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

COLOURS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 70, 230)}


def drawn_image(cls: int, i: int, size: int) -> np.ndarray:
    """(size, size, 3) uint8: class 0 a filled square, 1 a ring, 2 a cross, in the class's colour, with a jitter
    of position and brightness per ``i`` so that no two images are equal."""
    rng = np.random.default_rng(1000 * cls + i)
    y, x = np.mgrid[:size, :size]
    cy, cx = size / 2 + rng.uniform(-1.5, 1.5, 2)
    r = np.hypot(y - cy, x - cx)
    shape = [np.maximum(abs(y - cy), abs(x - cx)) < size / 4, abs(r - size / 3) < size / 10,
             (abs(y - cy) < size / 10) | (abs(x - cx) < size / 10)][cls % 3]
    colour = np.array(list(COLOURS.values())[cls % 3], float) * rng.uniform(0.8, 1.0)
    image = np.full((size, size, 3), 15.0) + shape[..., None] * colour
    return np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)


def write_image_folder(root: Path, classes: Sequence[str] = tuple(COLOURS), per_class: int = 40, size: int = 16,
                       offset: int = 0) -> Path:
    """``root/<class>/<k>.png``: ``per_class`` drawn RGB PNGs per class (``offset`` shifts the drawings)."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(drawn_image(c, i + offset, size)).save(root / name / f"{i:03d}.png")
    return root


def write_fake_cifar10(root: Path, per_batch: int = 6, num_classes: int = 10) -> Path:
    """``root/cifar-10-batches-py`` with data_batch_1..5, test_batch and batches.meta in CIFAR-10's format: pickled
    dicts of ``data`` (N, 3072) uint8 (the R, G and B planes of each 32x32 image) and ``labels``."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"][:num_classes]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072}, f, protocol=2)
    for b, batch in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        labels = [(b + i) % num_classes for i in range(per_batch)]
        data = np.stack([drawn_image(c, 100 * b + i, 32).transpose(2, 0, 1).reshape(-1)
                         for i, c in enumerate(labels)])
        with open(folder / batch, "wb") as f:
            pickle.dump({b"batch_label": batch.encode(), b"labels": labels, b"data": data}, f, protocol=2)
    return folder
