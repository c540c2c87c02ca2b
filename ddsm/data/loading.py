"""Loading a data set by name (:func:`load_dataset`) or from a config mapping (:func:`dataset_from_config`)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..utils import PathLike
from .dataset import ImageDataset
from .sources import LOADERS

__all__ = ["DATASETS", "SPLITS", "load_dataset", "dataset_from_config"]

DATASETS: tuple[str, ...] = tuple(LOADERS)
"""The names :func:`load_dataset` knows, for ``--help`` texts and error messages."""

SPLITS: tuple[str, ...] = ("train", "test")


def load_dataset(
    name: str,
    *,
    split: str = "train",
    image_size: int | None = None,
    channels: int | None = None,
    root: PathLike | None = None,
    download: bool = False,
) -> ImageDataset:
    """Load a data set by name (see :mod:`ddsm.data` for what each name is).

    Args:
        name: one of :data:`DATASETS`.
        split: ``"train"`` or ``"test"``. For ``imagefolder``, ``"train"`` reads ``root/train`` if that directory
            exists, else ``root`` itself; ``"test"`` reads ``root/test`` (:class:`MissingSplitError` without it;
            :func:`ddsm.data.load_with_held_out` then holds out part of ``"train"``).
        image_size: the output height and width; ``None`` keeps the data set's native size. Downscaling is
            antialiased bilinear. Folder images that are not square are center-cropped to a square first; their
            native size is that square's side, which must then be the same for every image (else a ValueError
            asks for ``image_size``).
        channels: 1 (grayscale; RGB is converted with the ITU-R 601-2 luma weights) or 3 (grayscale repeated);
            ``None`` keeps the native count (for ``imagefolder``: the first image's).
        root: where the data lives. Required for ``cifar10`` and ``imagefolder``; for ``fashion-mnist`` it overrides
            ``/usr/share/datasets/fashion-mnist``; for ``mnist-5k`` it may name another copy of ``mnist_5k.csv.gz``
            (or its directory); unused by ``digits``.
        download: let torchvision download ``cifar10`` (or ``fashion-mnist``) into ``root`` when it is missing.
            Never done unless asked; ignored by the sets that ship with a package.

    Returns:
        An :class:`ImageDataset`.

    Raises:
        ValueError: an unknown name or split, a bad ``image_size`` or ``channels``, a missing required ``root``, or
            a file that is not what it should be.
        FileNotFoundError: the data is not where it was looked for; the message says where and how to get it
            (:class:`MissingSplitError`, a subclass: an image folder without the ``"test"`` split).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for {name}; expected one of {', '.join(SPLITS)}")
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size <= 0
    ):
        raise ValueError(f"image_size must be a positive integer or None (native size), got {image_size!r}")
    if channels is not None and (
        isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels not in (1, 3)
    ):
        raise ValueError(f"channels must be 1, 3 or None (native), got {channels!r}")
    if not isinstance(download, bool):
        raise ValueError(f"download must be True or False, got {download!r}")
    image_size = None if image_size is None else int(image_size)
    channels = None if channels is None else int(channels)
    return LOADERS[name](split=split, image_size=image_size, channels=channels, root=root, download=download)


_CONFIG_KEYS = ("name", "split", "image_size", "channels", "root", "download")


def dataset_from_config(cfg: Mapping[str, Any]) -> ImageDataset:
    """:func:`load_dataset` from a config mapping (e.g. the ``data:`` section of a YAML config).

    Args:
        cfg: ``name`` (required) and optionally ``split``, ``image_size``, ``channels``, ``root``, ``download``;
            any other key is an error, so that a typo never silently falls back to a default.

    Returns:
        An :class:`ImageDataset`.
    """
    if not isinstance(cfg, Mapping):
        keys = ", ".join(_CONFIG_KEYS)
        raise ValueError(f"a data config must be a mapping with keys {keys}, not {type(cfg).__name__}")
    unknown = sorted(str(k) for k in cfg if k not in _CONFIG_KEYS)
    if unknown:
        raise ValueError(f"unknown data config key(s) {', '.join(unknown)}; expected {', '.join(_CONFIG_KEYS)}")
    if "name" not in cfg:
        raise ValueError(f"the data config needs a 'name', one of {', '.join(DATASETS)}")
    kwargs = {k: v for k, v in cfg.items() if k != "name"}
    return load_dataset(cfg["name"], **kwargs)
