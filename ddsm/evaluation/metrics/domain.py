"""A fast feature network for search: a small CNN classifier trained on the data set itself, and its cache.

Inception FID costs ~0.2 s per image on two CPU cores; a search scores hundreds of candidate schedules. This module
trains a few-layer CNN (:mod:`.domain_net`) on the same data the diffusion model learns (any size: it resizes its
input to its own size), caches it, and uses its penultimate layer as features for FID/KID. Numbers computed with it
are *not* Inception FID: the network's ``name`` (``"mnist-5k-16px-cnn-v1-3fa2b1c0"``: data set, resolution the data
was seen at, architecture version, first 8 hex digits of the weights' sha256, so that a retrained network or other
data give another name) goes into every report next to them.

It trains on the data set's ``"train"`` split and is scored on its ``"test"`` split; a data set without one (an image
folder of class subfolders only) holds out a fixed, recorded part of each class instead
(:func:`ddsm.data.load_with_held_out`), never seen in training.

    features = load_or_train_domain_classifier("mnist-5k", image_size=16)   # trained once, then cached
    feats = extract_features(features, samples)                             # (N, 128)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...utils import atomic_write, atomic_write_json, default_cache_dir
from .domain_net import ARCH, DomainClassifier, DomainClassifierConfig, DomainFeatures
from .reference import weights_sha256

FORMAT = "ddsm-domain-classifier"
VERSION = 2  # 2: info.json records weights_sha256 and the held-out images; the name ends in the weights' digest

PathLike = Union[str, os.PathLike]
DataLike = Any  # a ddsm data set (.images/.labels), an (images, labels) pair, or a Dataset of (image, label)


# ---------------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------------


def _as_tensors(data: DataLike) -> Tuple[torch.Tensor, torch.Tensor]:
    """(images (N, C, H, W) float, labels (N,) long) from any supported data form."""
    in_memory = getattr(data, "images", None), getattr(data, "labels", None)
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        images, labels = data
    elif all(isinstance(t, torch.Tensor) for t in in_memory):
        images, labels = in_memory
    elif isinstance(data, torch.utils.data.Dataset):
        items = [data[i] for i in range(len(data))]
        images = torch.stack([torch.as_tensor(x) for x, _ in items])
        labels = torch.tensor([int(y) for _, y in items])
    else:
        raise TypeError(
            f"expected a data set with .images/.labels, an (images, labels) pair or a Dataset, got {type(data)}"
        )
    if images.ndim != 4 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"expected images (N, C, H, W) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    return images.float(), labels.long()


def _augment(x: torch.Tensor, generator: torch.Generator, max_shift: float, max_rotate_deg: float) -> torch.Tensor:
    """Random small rotation, scale and shift per image (affine grid), border padded with the background -1."""
    n = x.shape[0]
    u = torch.rand(n, 4, generator=generator) * 2 - 1  # uniform [-1, 1)
    angle = u[:, 0] * math.radians(max_rotate_deg)
    scale = 1 + 0.1 * u[:, 1]
    shift = u[:, 2:] * (2 * max_shift / x.shape[-1])  # in normalised [-1, 1] coordinates
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1


@torch.no_grad()
def classifier_accuracy(model: DomainClassifier, data: DataLike, batch_size: int = 500) -> float:
    """Fraction of ``data`` classified correctly (eval mode)."""
    images, labels = _as_tensors(data)
    model.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        correct += (model(images[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum().item()
    return correct / len(images)


def train_domain_classifier(
    dataset_train: DataLike,
    dataset_test: DataLike,
    epochs: int = 8,
    seed: int = 0,
    config: Optional[DomainClassifierConfig] = None,
    batch_size: int = 128,
    lr: float = 3e-3,
    progress: bool = True,
) -> Tuple[DomainClassifier, float]:
    """Train a :class:`DomainClassifier` and return it (eval mode) with its accuracy on ``dataset_test``.

    Adam with a one-cycle learning rate, label smoothing 0.05, random rotation (±10°), scale (±10%) and shift
    (±2 px at the network's size) as augmentation. Deterministic for a given ``seed`` on a given machine; the global
    RNG is left as it was. ``config`` defaults to the training images' channel count and max(label) + 1 classes.
    On mnist-5k (4,000 train / 1,000 test images, 8 epochs) it reaches ~98% held-out accuracy in about 15-25 s on
    2 CPU cores.
    """
    images, labels = _as_tensors(dataset_train)
    if config is None:
        config = DomainClassifierConfig(in_channels=1 if images.shape[1] == 1 else 3,
                                        num_classes=int(labels.max()) + 1)  # fmt: skip
    if int(labels.max()) >= config.num_classes or int(labels.min()) < 0:
        raise ValueError(f"labels span [{int(labels.min())}, {int(labels.max())}] but num_classes={config.num_classes}")
    # Everything random (init, dropout) draws from the global RNG seeded here and restored afterwards; data order and
    # augmentation from their own generator.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DomainClassifier(config)
        _fit(model, images, labels, epochs, torch.Generator().manual_seed(seed), batch_size, lr, progress)
    return model, classifier_accuracy(model, dataset_test)


def _fit(model: DomainClassifier, images: torch.Tensor, labels: torch.Tensor, epochs: int,
         generator: torch.Generator, batch_size: int, lr: float, progress: bool) -> None:  # fmt: skip
    config = model.config
    with torch.no_grad():
        x_all = model.preprocess(images)  # resize once: (N, in_channels, input_size, input_size)
    steps_per_epoch = math.ceil(len(x_all) / batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    model.train()
    bar = tqdm(range(epochs), desc="domain classifier", unit="epoch", disable=not progress, dynamic_ncols=True)
    for _ in bar:
        order = torch.randperm(len(x_all), generator=generator)
        total_loss = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            x = _augment(x_all[idx], generator, max_shift=2.0 * config.input_size / 28, max_rotate_deg=10.0)
            loss = F.cross_entropy(model(x), labels[idx], label_smoothing=0.05)  # preprocess is a no-op on x
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(idx)
        bar.set_postfix(loss=f"{total_loss / len(order):.4f}")
    model.eval()


# ---------------------------------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------------------------------


def domain_features_name(dataset_name: str, resolution: int, weights_digest: Optional[str] = None) -> str:
    """``{dataset}-{resolution}px-cnn-v1[-{weights_digest[:8]}]``: what the network saw, which architecture, and
    which weights (:func:`~.reference.weights_sha256`)."""
    name = f"{dataset_name}-{resolution}px-{ARCH}"
    return name if weights_digest is None else f"{name}-{weights_digest[:8]}"


def _key_digest(key: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:10]


def save_domain_classifier(directory: PathLike, model: DomainClassifier, info: Dict[str, Any]) -> Path:
    """Write ``model.safetensors`` then ``info.json`` (config, key, accuracy, ``weights_sha256``...) atomically into
    ``directory``. ``info.json`` is written last: its presence marks a complete entry."""
    from safetensors.torch import save as safetensors_save

    directory = Path(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(directory / "model.safetensors", safetensors_save(state))
    payload = dict(info, format=FORMAT, version=VERSION, arch=ARCH, config=asdict(model.config),
                   weights_sha256=weights_sha256(model))
    atomic_write_json(directory / "info.json", payload)
    return directory


def load_domain_classifier(directory: PathLike) -> Tuple[DomainClassifier, Dict[str, Any]]:
    """Read a classifier written by :func:`save_domain_classifier`; returns (model in eval mode, info dict).
    Weights that do not match the recorded ``weights_sha256`` are an error, never used under the old name."""
    from safetensors.torch import load as safetensors_load

    directory = Path(directory)
    info = json.loads((directory / "info.json").read_text())
    if info.get("format") != FORMAT or info.get("version") != VERSION or info.get("arch") != ARCH:
        raise ValueError(
            f"{directory}: format/version/arch {info.get('format')}/{info.get('version')}/{info.get('arch')}, "
            f"expected {FORMAT}/{VERSION}/{ARCH}; delete that folder to train the classifier again"
        )
    model = DomainClassifier(DomainClassifierConfig(**info["config"]))
    model.load_state_dict(safetensors_load((directory / "model.safetensors").read_bytes()))
    if weights_sha256(model) != info.get("weights_sha256"):
        raise ValueError(f"{directory}: model.safetensors does not match the weights_sha256 in info.json; delete "
                         "that folder to train the classifier again")
    return model.eval(), info


def load_or_train_domain_classifier(
    dataset_name: str,
    image_size: Optional[int] = None,
    cache_dir: Optional[PathLike] = None,
    epochs: int = 8,
    seed: int = 0,
    config: Optional[DomainClassifierConfig] = None,
    min_accuracy: Optional[float] = None,
    progress: bool = True,
    *,
    root: Optional[PathLike] = None,
    channels: Optional[int] = None,
    held_out_fraction: Optional[float] = None,
    held_out_seed: Optional[int] = None,
) -> DomainFeatures:
    """The domain feature network for ``dataset_name`` at ``image_size``: from the cache, or trained and cached.

    Trains on the ``"train"`` split of ``ddsm.data.load_dataset(name, image_size=, channels=, root=)`` and measures
    accuracy on its ``"test"`` split or, for a data set without one, on a fixed held-out part of ``"train"`` that
    training never sees (:func:`ddsm.data.load_with_held_out`; ``info["held_out"]`` records which images). The cache
    entry (``cache_dir`` or ``default_cache_dir() / "domain_classifiers"``, one folder per key) holds the weights and
    ``info.json`` with the key, held-out accuracy, weights digest and training time; it is reused only when every
    field of the key matches: data set, resolved root, image size, channels, fingerprints of both image sets, the
    held-out split, epochs, seed, config, architecture. The returned network's ``name`` ends in its weights' digest.

    Args:
        root: the data set's ``root`` (the config's ``data.root``).
        channels: the channel count to train on (default: the data's own).
        held_out_fraction, held_out_seed: the held-out part when there is no test split (default 10%, seed 0).
        min_accuracy: if given, a freshly trained network below it raises ``RuntimeError`` and is not cached.
    """
    from ...data import HELD_OUT_FRACTION, HELD_OUT_SEED, load_with_held_out

    train, test, held_out = load_with_held_out(
        dataset_name, image_size=image_size, channels=channels, root=root,
        fraction=HELD_OUT_FRACTION if held_out_fraction is None else held_out_fraction,
        seed=HELD_OUT_SEED if held_out_seed is None else held_out_seed)
    if train.num_classes < 2:
        raise ValueError(f"{dataset_name} at {train.root} has {train.num_classes} class ({', '.join(train.classes)});"
                         " the domain feature network is a classifier and needs at least 2 classes (class "
                         "subfolders); without it, search with --metric fidelity and benchmark with --no-domain")
    summary = {k: v for k, v in held_out.items() if k != "held_out"}
    key = {"dataset": dataset_name, "root": train.root, "image_size": train.image_size, "channels": train.channels,
           "train_data": train.fingerprint(), "held_out_data": test.fingerprint(), "held_out": summary,
           "arch": ARCH, "epochs": epochs, "seed": seed, "config": None if config is None else asdict(config)}
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "domain_classifiers"
    directory = base / f"{domain_features_name(dataset_name, train.image_size)}-{_key_digest(key)}"
    if (directory / "info.json").is_file():
        model, info = load_domain_classifier(directory)
        if info.get("key") != json.loads(json.dumps(key)):
            raise ValueError(f"{directory} holds a classifier for key {info.get('key')}, not {key}")
        return DomainFeatures(model, info["name"], info["test_accuracy"], info)

    start = time.perf_counter()
    model, accuracy = train_domain_classifier(
        _as_tensors(train), test, epochs=epochs, seed=seed, config=config, progress=progress
    )
    seconds = time.perf_counter() - start
    name = domain_features_name(dataset_name, train.image_size, weights_sha256(model))
    if min_accuracy is not None and accuracy < min_accuracy:
        raise RuntimeError(f"{name}: held-out accuracy {accuracy:.4f} is below min_accuracy={min_accuracy}")
    info = {"name": name, "key": key, "test_accuracy": accuracy, "num_train": len(train), "num_test": len(test),
            "held_out": held_out, "train_seconds": round(seconds, 2)}
    save_domain_classifier(directory, model, info)
    return DomainFeatures(model, name, accuracy, json.loads((directory / "info.json").read_text()))
