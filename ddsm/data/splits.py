"""Held-out images for a data set without a test split (an image folder of class subfolders only): a fixed,
recorded part of its training images, so that a classifier trained on the rest is scored on images it never saw."""

from __future__ import annotations

import hashlib
from typing import Any, Dict, Tuple

import numpy as np

from ..utils import PathLike
from .dataset import ImageDataset, MissingSplitError
from .loading import load_dataset

__all__ = ["HELD_OUT_FRACTION", "HELD_OUT_SEED", "held_out_split", "load_with_held_out"]

HELD_OUT_FRACTION = 0.1
"""The part of each class held out when a data set has no test split."""

HELD_OUT_SEED = 0
"""The seed of that choice."""

_METHOD = ("per class, the floor(fraction x n + 0.5) images (at least 1; none of a class of one image) whose "
           "sha256('<seed>:<relative path>') is smallest; the path breaks ties")
_OVERLAP = ("the diffusion model's training split includes these held-out images (they are held out from the "
            "domain classifier only, which is fine for a feature network)")


def _rank(seed: int, name: str) -> str:
    return hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()


def held_out_split(
    dataset: ImageDataset, fraction: float = HELD_OUT_FRACTION, seed: int = HELD_OUT_SEED
) -> Tuple[ImageDataset, ImageDataset, Dict[str, Any]]:
    """Split ``dataset`` into (the rest, the held-out part, the record of the split).

    The choice depends only on each image's name (its path relative to the data root; its index for data sets
    without files), its class and ``seed``: stratified by class, independent of file order, and adding an image
    changes at most one choice of its class. The record holds the method, ``fraction``, ``seed``, both counts, a
    digest of the held-out names and the names themselves (``held_out``).

    Args:
        dataset: the images to split.
        fraction: the part of each class to hold out, in ``(0, 1)``.
        seed: changes which images are held out.
    """
    if isinstance(fraction, bool) or not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction!r}")
    names = dataset.files if dataset.files is not None else [str(i) for i in range(len(dataset))]
    labels = dataset.labels.numpy()
    held = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c).tolist()
        k = min(max(1, int(np.floor(fraction * len(members) + 0.5))), len(members) - 1)
        held += sorted(members, key=lambda i: (_rank(seed, names[i]), names[i]))[:k]
    held = sorted(held)
    rest = sorted(set(range(len(dataset))) - set(held))
    held_names = [names[i] for i in held]
    record = dict(kind="held-out", source_split=dataset.split, method=_METHOD, fraction=fraction, seed=seed,
                  num_train=len(rest), num_held_out=len(held),
                  held_out_sha256=hashlib.sha256("\n".join(sorted(held_names)).encode()).hexdigest(),
                  overlap=_OVERLAP, held_out=held_names)
    return dataset.subset(rest, dataset.split), dataset.subset(held, "held-out"), record


def load_with_held_out(
    name: str,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    root: PathLike | None = None,
    fraction: float = HELD_OUT_FRACTION,
    seed: int = HELD_OUT_SEED,
) -> Tuple[ImageDataset, ImageDataset, Dict[str, Any]]:
    """Training images and held-out images of a data set, and a record of where the held-out ones come from.

    The ``"test"`` split when the data set has one (record ``kind="test-split"``); otherwise (an image folder of
    class subfolders only) :func:`held_out_split` of the ``"train"`` split (``kind="held-out"``). Arguments as in
    :func:`load_dataset`, plus ``fraction`` and ``seed`` of the held-out part.
    """
    train = load_dataset(name, split="train", image_size=image_size, channels=channels, root=root)
    try:
        test = load_dataset(name, split="test", image_size=image_size, channels=channels, root=root)
    except MissingSplitError:
        return held_out_split(train, fraction, seed)
    return train, test, dict(kind="test-split", source_split="test", num_train=len(train), num_held_out=len(test))
