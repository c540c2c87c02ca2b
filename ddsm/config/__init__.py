"""Experiment configs: one YAML file per experiment, loaded into frozen dataclasses that check every value.

A config file has these sections (all but ``model`` optional)::

    model:      keyword arguments of SlimmableUNet (see its docstring)
    data:       which data set, at which size           -> DataConfig
    diffusion:  the training noise schedule             -> DiffusionConfig
    train:      the sandwich-rule training recipe       -> TrainConfig
    sampling:   default sampler for search and reports  -> SamplingConfig
    search:     evolutionary search settings            -> SearchConfig
    vae:        the autoencoder train_autoencoder.py trains (latent diffusion) -> AutoencoderConfig
    autoencoder: an AutoencoderKL or VQModel directory: the UNet then trains and samples in its latents

Every value is checked against its field's annotation and rule when loaded (:mod:`.check`): unknown keys, wrong
types, values out of range and names outside a closed set (data set, scheduler, metric, search mode...) raise a
:class:`ConfigError` that names the section, the key, the value and what was expected. Numbers written as YAML 1.1
reads them as strings (``1e-4``) are converted. Every run writes the resolved config (defaults filled in) beside its
outputs, so a run describes itself.
"""

from .check import ConfigError
from .experiment import ExperimentConfig, load_config
from .sections import (BETA_SCHEDULES, PREDICTION_TYPES, SEARCH_MODES, AutoencoderConfig, DataConfig,
                       DiffusionConfig, SamplingConfig, SearchConfig, TrainConfig)

__all__ = ["DataConfig", "DiffusionConfig", "TrainConfig", "SamplingConfig", "SearchConfig", "AutoencoderConfig",
           "ExperimentConfig", "load_config", "ConfigError", "BETA_SCHEDULES", "PREDICTION_TYPES", "SEARCH_MODES"]
