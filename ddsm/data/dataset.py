"""The data sets' common form: :class:`ImageDataset`, and the conversion of pixel arrays into it."""

from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["ImageDataset", "MissingSplitError", "to_model_range", "in_memory"]

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, the weights PIL's convert("L") uses


class MissingSplitError(FileNotFoundError):
    """A data set that has no such split (an image folder without a ``test`` folder); see
    :func:`ddsm.data.load_with_held_out` for the held-out part used instead."""


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
        source: ``source(i) -> (channels, image_size, image_size)`` float32 in ``[-1, 1]``, when not. A source with
            a ``fingerprint()`` method (a digest of where its pixels come from, or None) spares
            :meth:`fingerprint` reading every image.
        root: the resolved absolute path the data were read from (a folder or a file), ``None`` when they ship
            with a package.
        files: for image folders, each image's path relative to ``root`` (POSIX form), in data set order.
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
        root: str | None = None,
        files: Sequence[str] | None = None,
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
        if files is not None and len(files) != len(labels):
            raise ValueError(f"{len(files)} files but {len(labels)} labels")
        self.name = name
        self.split = split
        self.labels = labels.to(torch.int64)
        self.num_classes = int(num_classes)
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.classes = tuple(classes)
        self.images = images
        self.root = root
        self.files = None if files is None else tuple(files)
        self._source = source
        self._fingerprint: str | None = None

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

    def subset(self, indices: Sequence[int], split: str) -> "ImageDataset":
        """The images at ``indices`` (in that order) as a data set of its own, named ``split``."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ImageDataset(
            name=self.name,
            split=split,
            labels=self.labels[idx],
            num_classes=self.num_classes,
            image_size=self.image_size,
            channels=self.channels,
            classes=self.classes,
            images=None if self.images is None else self.images[idx],
            source=None if self.images is not None else _SubsetSource(self._source, idx.tolist()),
            root=self.root,
            files=None if self.files is None else [self.files[i] for i in idx.tolist()],
        )

    def fingerprint(self) -> str:
        """A 16-hex-digit digest of the labels, size, channels and pixels (for a source with ``fingerprint()``:
        its digest, e.g. file names, sizes and modification times): equal digests mean the same data. Cache keys
        carry it, so that changed data never reuse statistics computed on the old."""
        if self._fingerprint is None:
            h = hashlib.sha256(f"{self.image_size}:{self.channels}:".encode())
            h.update(np.ascontiguousarray(self.labels.numpy()))
            source_digest = None if self.images is not None else _source_fingerprint(self._source)
            if self.images is not None:
                h.update(np.ascontiguousarray(self.images.numpy()))
            elif source_digest is not None:
                h.update(source_digest.encode())
            else:
                for i in range(len(self)):
                    h.update(np.ascontiguousarray(self._source(i).numpy()))
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def __repr__(self) -> str:
        where = "in memory" if self.images is not None else "loaded per item"
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, size={len(self)}, "
            f"shape=({self.channels}, {self.image_size}, {self.image_size}), num_classes={self.num_classes}, {where})"
        )


class _SubsetSource:
    """``source(indices[i])``: a per-item source restricted to some of its images (picklable)."""

    def __init__(self, source: Callable[[int], torch.Tensor], indices: Sequence[int]) -> None:
        self.source, self.indices = source, list(indices)

    def __call__(self, i: int) -> torch.Tensor:
        return self.source(self.indices[i])

    def fingerprint(self) -> str | None:
        inner = _source_fingerprint(self.source)
        return None if inner is None else hashlib.sha256(f"{inner}:{self.indices}".encode()).hexdigest()


def _source_fingerprint(source) -> str | None:
    """``source.fingerprint()`` where the source has one, else None (the pixels must then be hashed)."""
    method = getattr(source, "fingerprint", None)
    return None if method is None else method()


def to_model_range(
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


def in_memory(
    name: str,
    split: str,
    pixels: np.ndarray,
    labels: np.ndarray,
    *,
    max_value: float,
    image_size: int | None,
    channels: int | None,
    classes: Sequence[str],
    root: str | None = None,
) -> ImageDataset:
    """An in-memory :class:`ImageDataset` of ``pixels`` (``(N, H, W)`` or ``(N, H, W, C)`` in ``[0, max_value]``)
    read from ``root``; ``image_size`` and ``channels`` default to the native ones."""
    native_size, native_channels = pixels.shape[1], (1 if pixels.ndim == 3 else pixels.shape[3])
    size = image_size or native_size
    ch = channels or native_channels
    images = to_model_range(pixels, max_value=max_value, image_size=size, channels=ch)
    return ImageDataset(
        name=name,
        split=split,
        labels=torch.from_numpy(np.asarray(labels, dtype=np.int64)),
        num_classes=len(classes),
        image_size=size,
        channels=ch,
        classes=classes,
        images=images,
        root=root,
    )
