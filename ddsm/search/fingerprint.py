"""What a search's scores mean: the objective a search checkpoint records, so that ``--resume`` never mixes the
memoised scores of one objective into a search for another.

A memoised score is a function of the schedule, the sample count N and everything :func:`search_objective` lists:
the metric and its feature space (network weights, reference statistics), the sample seeds, the scheduler class and
its resolved config, the step count, the guidance scale, the mixed precision of the UNet forwards, and the supernet
(config and weights) with its autoencoder (latent models). Not the device or batch size: they change a score only by
rounding. The search settings (budget, N, final N, allow_skip, segments, evolution settings) are recorded
beside it by :func:`~.evolution.evolve`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Optional

import numpy as np
import torch

from ..utils import canonical_config, config_sha256, to_plain

__all__ = ["state_dict_sha256", "search_objective"]


def state_dict_sha256(module: torch.nn.Module) -> str:
    """sha256 of a module's weights: the name, dtype, shape and bytes of every state-dict entry (parameters and
    buffers), in name order. One pass over the weights, on the CPU (about a second per GB)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def _arrays_sha256(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a, dtype=np.float64))
    return digest.hexdigest()


def _model_fingerprint(model: torch.nn.Module) -> dict:
    return dict(config_sha256=config_sha256(model.config), weights_sha256=state_dict_sha256(model))


def _features_fingerprint(features) -> dict:
    """The feature network (name and weights) and the reference statistics the candidates are compared with."""
    ref = features.reference
    return dict(name=features.name, dataset=features.dataset, split=features.split, resolution=features.resolution,
                reference_samples=features.reference_samples, weights_sha256=state_dict_sha256(features.net),
                reference_sha256=_arrays_sha256(ref.mu, ref.sigma))


def search_objective(job, model: torch.nn.Module, scheduler, features=None,
                     autoencoder: Optional[torch.nn.Module] = None, mixed_precision: str = "no") -> dict:
    """The objective of a search job as plain JSON values (see the module docstring).

    Args:
        job: the :class:`~.job.SearchJob` (metric, sample_seed, num_steps, guidance_scale).
        model: the supernet being searched.
        scheduler: the diffusers scheduler the candidates sample with (its class and resolved config count).
        features: the :class:`~ddsm.evaluation.FeatureSpace` of a feature metric (None for ``fidelity``).
        autoencoder: the autoencoder of a latent model, or None.
        mixed_precision: the accelerator's ``mixed_precision`` ("no", "bf16", "fp16").
    """
    objective: dict[str, Any] = dict(
        metric=job.metric, sample_seed=job.sample_seed, num_steps=job.num_steps,
        guidance_scale=float(job.guidance_scale), mixed_precision=str(mixed_precision),
        scheduler=type(scheduler).__name__,
        scheduler_config=canonical_config(scheduler.config), model=_model_fingerprint(model),
        autoencoder=None if autoencoder is None else _model_fingerprint(autoencoder),
        features=None if features is None else _features_fingerprint(features))
    return json.loads(json.dumps(to_plain(objective), sort_keys=True, default=str))
