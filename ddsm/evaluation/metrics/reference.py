"""Reference statistics (mean and covariance of real-data features), cached as .npz and never silently mixed.

A statistic is only meaningful with its provenance: which data set (its name and the resolved absolute ``root`` it
was read from), split, resolution and channel count, how many images, and which feature network (its name and the
sha256 of its weights). That provenance is the *key*; it is stored inside the file, the file name is derived from
it, and loading compares every field of it. Two image folders of the same name and size, or a retrained feature
network, therefore never share statistics.

    key = {"dataset": "mnist-5k", "root": None, "split": "train", "resolution": 16, "channels": 1,
           "num_samples": 4000, "features": "inception-2015-12-05", "weights_sha256": weights_sha256(net)}
    ref = load_or_compute_reference_stats(key, lambda: extract_features(net, images))
    fid = frechet_distance(mu, sigma, ref.mu, ref.sigma)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from ...utils import atomic_savez, default_cache_dir, to_plain
from .fid import feature_stats

FORMAT = "ddsm-reference-stats"
VERSION = 1
REQUIRED_KEYS = ("dataset", "root", "split", "resolution", "channels", "num_samples", "features", "weights_sha256")

PathLike = Union[str, os.PathLike]
ComputeResult = Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]


class ReferenceStatsMismatchError(ValueError):
    """A stored reference statistic was made under a different key than the one asked for."""


def weights_sha256(net: torch.nn.Module) -> str:
    """The sha256 (hex) of a network's state: every parameter and buffer, by name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(tensor.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy())
    return h.hexdigest()


def normalize_key(key: Mapping[str, Any]) -> Dict[str, Any]:
    """Check that ``key`` has every required field and is JSON-representable; return it as plain JSON types."""
    missing = [k for k in REQUIRED_KEYS if k not in key]
    if missing:
        raise ValueError(f"reference-stats key lacks {missing}; required fields: {list(REQUIRED_KEYS)}")
    plain = to_plain(key)
    try:
        json.dumps(plain, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"reference-stats key must be plain JSON values: {e}") from None
    # A JSON round trip, so that a requested key compares equal to its stored copy (tuples become lists...).
    return json.loads(json.dumps(plain, sort_keys=True))


def key_mismatches(stored: Mapping[str, Any], requested: Mapping[str, Any]) -> Dict[str, Tuple[Any, Any]]:
    """Fields whose values differ, as {field: (stored, requested)}; a field missing on one side shows ``None``."""
    fields = sorted(set(stored) | set(requested))
    return {
        f: (stored.get(f), requested.get(f))
        for f in fields
        if f not in stored or f not in requested or stored[f] != requested[f]
    }


def reference_stats_filename(key: Mapping[str, Any]) -> str:
    """A readable, unique file name: ``{dataset}-{split}-{resolution}px-{channels}ch-n{N}-{features}-{hash10}.npz``
    (the hash covers every field of the key, the root and the weights' digest included)."""
    key = normalize_key(key)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:10]
    stem = (f"{key['dataset']}-{key['split']}-{key['resolution']}px-{key['channels']}ch-n{key['num_samples']}-"
            f"{key['features']}")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem)
    return f"{stem}-{digest}.npz"


@dataclass(frozen=True, eq=False)
class ReferenceStats:
    """Mean (D,) and covariance (D, D) of reference features, with the key that says what they were computed from.

    ``features`` optionally keeps the (N, D) features themselves (needed for KID); None otherwise.
    """

    mu: np.ndarray
    sigma: np.ndarray
    key: Dict[str, Any]
    features: Optional[np.ndarray] = None

    def __post_init__(self):
        mu = np.asarray(self.mu, np.float64)
        sigma = np.asarray(self.sigma, np.float64)
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(f"expected mu (D,) and sigma (D, D), got {mu.shape} and {sigma.shape}")
        if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise ValueError("reference statistics contain NaN or inf")
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "sigma", sigma)
        object.__setattr__(self, "key", normalize_key(self.key))
        if self.features is not None:
            feats = np.asarray(self.features, np.float32)
            if feats.ndim != 2 or feats.shape[1] != mu.shape[0]:
                raise ValueError(f"features must be (N, {mu.shape[0]}), got {feats.shape}")
            object.__setattr__(self, "features", feats)

    @classmethod
    def from_features(cls, feats: np.ndarray, key: Mapping[str, Any], keep_features: bool = False) -> "ReferenceStats":
        """Statistics of ``feats`` (N, D); ``key["num_samples"]`` must equal N."""
        feats = np.asarray(feats)
        if feats.ndim != 2 or feats.shape[0] != key.get("num_samples"):
            raise ValueError(
                f"key says num_samples={key.get('num_samples')} but the features have shape {feats.shape}"
            )
        mu, sigma = feature_stats(feats)
        return cls(mu, sigma, dict(key), feats if keep_features else None)

    def save(self, path: PathLike) -> Path:
        """Write atomically as .npz: mu, sigma, (features,) and the key as JSON text."""
        arrays = {
            "format": np.array(FORMAT),
            "version": np.array(VERSION),
            "key_json": np.array(json.dumps(self.key, sort_keys=True)),
            "mu": self.mu,
            "sigma": self.sigma,
        }
        if self.features is not None:
            arrays["features"] = self.features
        return atomic_savez(path, **arrays)

    @classmethod
    def load(cls, path: PathLike, expected_key: Optional[Mapping[str, Any]] = None) -> "ReferenceStats":
        """Read a file written by :meth:`save`. With ``expected_key``, every field must match (same fields, same
        values) or :class:`ReferenceStatsMismatchError` names each differing field with both values."""
        path = Path(path)
        with np.load(path, allow_pickle=False) as data:
            fmt = str(data["format"]) if "format" in data.files else None
            if fmt != FORMAT:
                raise ValueError(f"{path}: not a ddsm reference-stats file (format {fmt!r}, expected {FORMAT!r})")
            version = int(data["version"])
            if version != VERSION:
                raise ValueError(f"{path}: reference-stats version {version}, this ddsm reads version {VERSION}")
            key = json.loads(str(data["key_json"]))
            stats = cls(data["mu"], data["sigma"], key, data["features"] if "features" in data.files else None)
        if expected_key is not None:
            diff = key_mismatches(stats.key, normalize_key(expected_key))
            if diff:
                details = "; ".join(f"{f}: stored {s!r} vs requested {r!r}" for f, (s, r) in diff.items())
                raise ReferenceStatsMismatchError(f"{path} holds reference statistics for another key ({details})")
        return stats


def load_or_compute_reference_stats(
    key: Mapping[str, Any],
    compute_fn: Callable[[], ComputeResult],
    cache_dir: Optional[PathLike] = None,
    path: Optional[PathLike] = None,
    keep_features: bool = False,
) -> ReferenceStats:
    """The reference statistics for ``key``: loaded from the cache when a file for exactly this key exists,
    otherwise computed with ``compute_fn()`` and cached.

    Args:
        key: dataset, root (resolved absolute path, or None), split, resolution, channels, num_samples, features
            (the feature network's ``name``) and weights_sha256 (:func:`weights_sha256` of it), plus any other
            fields that change the statistics (e.g. a fingerprint of the data; they become part of the identity too).
        compute_fn: returns either the features (N, D), from which the statistics are computed (N must equal
            ``key["num_samples"]``), or a ``(mu, sigma)`` pair.
        cache_dir: default ``default_cache_dir() / "reference_stats"``.
        path: an explicit file instead of the cache; a file there made under another key raises
            :class:`ReferenceStatsMismatchError` (it is never overwritten or mixed).
        keep_features: also store the features (for KID); only when ``compute_fn`` returns features.
    """
    key = normalize_key(key)
    if path is None:
        base = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "reference_stats"
        path = base / reference_stats_filename(key)
    path = Path(path)
    if path.is_file():
        stats = ReferenceStats.load(path, expected_key=key)
        if not keep_features or stats.features is not None:
            return stats
    result = compute_fn()
    if isinstance(result, tuple):
        if len(result) != 2:
            raise ValueError(f"compute_fn must return features (N, D) or (mu, sigma); got a tuple of {len(result)}")
        if keep_features:
            raise ValueError("keep_features=True needs compute_fn to return the features, not (mu, sigma)")
        stats = ReferenceStats(result[0], result[1], key)
    else:
        stats = ReferenceStats.from_features(result, key, keep_features=keep_features)
    stats.save(path)
    return stats
