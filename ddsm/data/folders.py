"""The data sets read from a folder of files, one image at a time: ``imagefolder`` (``root/<class>/*.png``) and
``cifar10`` (the python-pickle batches of ``root/cifar-10-batches-py``), behind :func:`ddsm.data.load_dataset`."""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..utils import PathLike
from .dataset import ImageDataset, MissingSplitError, to_model_range

__all__ = ["IMAGE_EXTENSIONS", "CIFAR10_FOLDER", "load_cifar10", "load_imagefolder"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

CIFAR10_FOLDER = "cifar-10-batches-py"
"""The folder under ``root`` that ``cifar-10-python.tar.gz`` unpacks to (and torchvision downloads into)."""

_CIFAR10_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_CIFAR10_META = "batches.meta"
_CIFAR10_SHAPE = (3, 32, 32)


def _stat_digest(base: Path, files: Sequence[Path]) -> str:
    """A digest of each file's path relative to ``base``, size and modification time (not the bytes: cheap)."""
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(base).as_posix()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------------------------
# cifar10


class _ArraySource:
    """Converts image ``i`` of a uint8 ``(N, H, W[, C])`` array when asked (picklable, for DataLoader workers);
    ``origin`` is the digest of the files the array was read from."""

    def __init__(self, pixels: np.ndarray, image_size: int, channels: int, origin: str) -> None:
        self.pixels, self.image_size, self.channels, self.origin = pixels, image_size, channels, origin

    def __call__(self, i: int) -> torch.Tensor:
        one = self.pixels[i : i + 1]
        return to_model_range(one, max_value=255.0, image_size=self.image_size, channels=self.channels)[0]

    def fingerprint(self) -> str:
        return self.origin


def _unpickle(path: Path) -> dict:
    """One CIFAR batch: a pickled dict (Python 2 pickles, hence latin1), keys decoded to str."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, ImportError, IndexError) as e:
        raise ValueError(f"cifar10: {path} is not a CIFAR-10 python batch (a pickled dict): {e}") from None
    if not isinstance(entry, dict):
        raise ValueError(f"cifar10: {path} holds a {type(entry).__name__}, expected a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


@functools.lru_cache(maxsize=2)
def _read_cifar10(folder: str, split: str, signature: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """``(N, 32, 32, 3)`` uint8 pixels, ``(N,)`` labels and the class names of a split (``signature``: the files'
    digest, so that a changed file is read again)."""
    classes = _unpickle(Path(folder) / _CIFAR10_META).get("label_names")
    if not isinstance(classes, (list, tuple)) or not classes:
        raise ValueError(f"cifar10: {Path(folder) / _CIFAR10_META} has no 'label_names' list")
    pixels, labels = [], []
    for name in _CIFAR10_BATCHES[split]:
        path = Path(folder) / name
        entry = _unpickle(path)
        data, target = np.asarray(entry.get("data")), np.asarray(entry.get("labels"), dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != int(np.prod(_CIFAR10_SHAPE)) or data.dtype != np.uint8:
            raise ValueError(f"cifar10: {path} 'data' is {data.dtype} {data.shape}; expected uint8 (N, 3072)")
        if target.shape != (len(data),) or target.min(initial=0) < 0 or target.max(initial=0) >= len(classes):
            raise ValueError(f"cifar10: {path} needs one label in 0..{len(classes) - 1} per image "
                             f"({len(data)} images, labels of shape {target.shape})")
        pixels.append(data.reshape(-1, *_CIFAR10_SHAPE).transpose(0, 2, 3, 1))
        labels.append(target)
    return np.concatenate(pixels), np.concatenate(labels), tuple(str(c) for c in classes)


def load_cifar10(
    *, split: str, image_size: int | None, channels: int | None, root: PathLike | None, download: bool
) -> ImageDataset:
    """CIFAR-10 from ``root/cifar-10-batches-py`` (``data_batch_1`` .. ``data_batch_5``, ``test_batch``,
    ``batches.meta``: pickled dicts, as unpacked from ``cifar-10-python.tar.gz``; only open files you trust). With
    ``download=True`` and files missing, torchvision fetches them first."""
    if root is None:
        raise ValueError("cifar10 needs root=<directory holding cifar-10-batches-py> (there is no embedded copy)")
    folder = Path(root) / CIFAR10_FOLDER
    needed = [folder / n for n in (_CIFAR10_META, *_CIFAR10_BATCHES[split])]
    if download and not all(p.is_file() for p in needed):
        from torchvision.datasets import CIFAR10

        CIFAR10(str(root), train=split == "train", download=True)
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        where = f"{folder} not found" if not folder.is_dir() else f"{folder} lacks {', '.join(missing)}"
        raise FileNotFoundError(
            f"cifar10: {where} (looked under root={str(root)!r}); pass download=True (the --download flag) to let "
            "torchvision fetch it (needs internet), or unpack cifar-10-python.tar.gz from "
            "https://www.cs.toronto.edu/~kriz/cifar.html into that directory"
        )
    folder = folder.resolve()
    signature = _stat_digest(folder, [folder / p.name for p in needed])
    pixels, labels, classes = _read_cifar10(str(folder), split, signature)
    size = image_size or pixels.shape[1]
    ch = channels or 3
    return ImageDataset(
        name="cifar10",
        split=split,
        labels=torch.from_numpy(labels),
        num_classes=len(classes),
        image_size=size,
        channels=ch,
        classes=classes,
        source=_ArraySource(pixels, size, ch, signature),
        root=str(Path(root).resolve()),
    )


# --------------------------------------------------------------------------------------------------------------------
# imagefolder


class _FolderSource:
    """Reads, center-crops to a square, resizes (PIL bilinear, antialiased when shrinking) and converts image ``i``
    of a list of files (picklable, for DataLoader workers)."""

    def __init__(self, base: Path, files: Sequence[Path], image_size: int, channels: int) -> None:
        self.base, self.files, self.image_size, self.channels = base, list(files), image_size, channels

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

    def fingerprint(self) -> str:
        return _stat_digest(self.base, self.files)


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
    found = set(labels)
    empty = [c for i, c in enumerate(classes) if i not in found]
    if empty:
        raise FileNotFoundError(
            f"imagefolder: class folder(s) {', '.join(empty)} in {folder} hold no images "
            f"({', '.join(IMAGE_EXTENSIONS)}); every class subfolder needs at least one (or remove it)"
        )
    return classes, files, labels


def _native_size(files: Sequence[Path], check_all: bool) -> tuple[int, int]:
    """The square side (shorter side) and channel count of the first image; with ``check_all``, every image must
    have the same square side, or the native size would be an accident of file order."""
    from PIL import Image

    with Image.open(files[0]) as first:
        side = min(first.size)
        channels = 1 if first.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
    for f in files[1:] if check_all else ():
        with Image.open(f) as img:
            if min(img.size) != side:
                raise ValueError(
                    f"imagefolder: images of different sizes: {files[0]} is {first.size[0]}x{first.size[1]} but "
                    f"{f} is {img.size[0]}x{img.size[1]}; set image_size (data.image_size) to resize them all to "
                    "one size"
                )
    return side, channels


def load_imagefolder(
    *, split: str, image_size: int | None, channels: int | None, root: PathLike | None, download: bool
) -> ImageDataset:
    """Images of ``root/<class>/`` (or ``root/<split>/<class>/``); raises :class:`MissingSplitError` for a
    ``"test"`` split of a folder without ``root/test``."""
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
        raise MissingSplitError(
            f"imagefolder: no {split!r} split: {base / split} does not exist; a folder with a test split holds "
            f"{base}/train/<class>/... and {base}/test/<class>/... (root itself is used only as 'train')"
        )
    classes, files, labels = _scan_folder(folder)
    native_size, native_channels = _native_size(files, check_all=image_size is None)
    size = image_size or native_size
    ch = channels or native_channels
    relative = [f.relative_to(base).as_posix() for f in files]
    base = base.resolve()
    return ImageDataset(
        name="imagefolder",
        split=split,
        labels=torch.tensor(labels, dtype=torch.int64),
        num_classes=len(classes),
        image_size=size,
        channels=ch,
        classes=classes,
        source=_FolderSource(base, [base / r for r in relative], size, ch),
        root=str(base),
        files=relative,
    )
