"""Batched feature extraction with any feature network (Inception or a domain classifier).

A feature network here is an ``nn.Module`` that maps images in [-1, 1], (N, C, H, W), to (N, D) features and has
a ``name`` attribute (``"inception-2015-12-05"``, ``"mnist-5k-28px-cnn-v1"``...) that reports carry next to every
number computed from its features.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Optional, Union

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

Images = Union[torch.Tensor, np.ndarray, Iterable]


def feature_network_name(net: nn.Module) -> str:
    """The ``name`` a feature network reports under; a clear error if it has none."""
    name = getattr(net, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"feature network {type(net).__name__} has no `name` attribute; reports need one")
    return name


def _as_batch(item) -> torch.Tensor:
    """A batch from an iterable: a tensor / array, or the first element of an (images, labels, ...) tuple."""
    if isinstance(item, (tuple, list)):
        item = item[0]
    if isinstance(item, np.ndarray):
        item = torch.from_numpy(item)
    if not isinstance(item, torch.Tensor):
        raise TypeError(f"expected image batches as tensors, got {type(item).__name__}")
    if item.ndim == 3:  # a single image (C, H, W)
        item = item.unsqueeze(0)
    return item


def _batches(images: Images, batch_size: int) -> tuple[Iterator[torch.Tensor], Optional[int]]:
    """Split the supported inputs into batches; also return the number of images when known."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor) and isinstance(getattr(images, "images", None), torch.Tensor):
        images = images.images  # an in-memory ddsm data set
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        tensor = images
        return (tensor[i : i + batch_size] for i in range(0, len(tensor), batch_size)), len(tensor)
    if isinstance(images, torch.utils.data.Dataset) and hasattr(images, "__len__"):
        loader = torch.utils.data.DataLoader(images, batch_size=batch_size, shuffle=False)
        return (_as_batch(b) for b in loader), len(images)
    return (_as_batch(b) for b in images), None


@torch.inference_mode()
def extract_features(
    net: nn.Module,
    images: Images,
    batch_size: int = 64,
    progress: bool = True,
    device: Optional[Union[str, torch.device]] = None,
    total: Optional[int] = None,
) -> np.ndarray:
    """Features of ``images`` from ``net``, in input order, as a float32 array (N, D).

    Args:
        net: a feature network (see module docstring); put in eval mode here.
        images: a tensor or array (N, C, H, W) in [-1, 1]; a map-style Dataset of (image, label) (an in-memory
            ddsm data set's ``.images`` are used directly); or any iterable of batches (tensors, or tuples whose
            first element is the batch), e.g. a sampler's generator. Iterables are used as batched by the caller.
        batch_size: images per forward for tensors and Datasets.
        progress: show a tqdm progress bar (counted in images).
        device: where to run; default the device of ``net``'s first parameter.
        total: number of images, for the progress bar, when ``images`` is an iterable of unknown length.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    net.eval()
    if device is None:
        first = next(net.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    batches, known = _batches(images, batch_size)
    label = getattr(net, "name", type(net).__name__)
    out = []
    with tqdm(total=known if known is not None else total, disable=not progress, desc=f"features ({label})",
              unit="img", dynamic_ncols=True) as bar:  # fmt: skip
        for batch in batches:
            feats = net(batch.to(device=device, dtype=torch.float32))
            if feats.ndim != 2 or feats.shape[0] != batch.shape[0]:
                raise ValueError(
                    f"{label}: expected (N, D) features for {batch.shape[0]} images, got {tuple(feats.shape)}"
                )
            out.append(feats.float().cpu().numpy())
            bar.update(batch.shape[0])
    if not out:
        raise ValueError("no images to extract features from")
    return np.concatenate(out, axis=0)
