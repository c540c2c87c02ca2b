"""Experiment configs: one YAML file per experiment, loaded into frozen dataclasses that reject unknown keys.

A config file has these sections (all but ``model`` optional)::

    model:      keyword arguments of SlimmableUNet (see its docstring)
    data:       which data set, at which size           -> DataConfig
    diffusion:  the training noise schedule             -> DiffusionConfig
    train:      the sandwich-rule training recipe       -> TrainConfig
    sampling:   default sampler for search and reports  -> SamplingConfig
    search:     evolutionary search settings            -> SearchConfig
    vae:        the autoencoder train_autoencoder.py trains (latent diffusion) -> AutoencoderConfig
    autoencoder: a trained AutoencoderKL directory: the UNet then trains and samples in its latents

Every run writes the resolved config (defaults filled in) beside its outputs, so a run describes itself.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Type, TypeVar

import yaml

from .utils import PathLike, atomic_write

__all__ = ["DataConfig", "DiffusionConfig", "TrainConfig", "SamplingConfig", "SearchConfig", "AutoencoderConfig",
           "ExperimentConfig", "load_config", "ConfigError"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or section that cannot be used as it is."""


def _build(cls: Type[T], values: Optional[Mapping[str, Any]], section: str) -> T:
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"[{section}] unknown key(s) {unknown}; expected some of {sorted(names)}")
    for f in dataclasses.fields(cls):  # YAML lists -> tuples for tuple-typed fields
        if f.name in values and isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    try:
        return cls(**values)
    except TypeError as e:
        raise ConfigError(f"[{section}] {e}") from None


@dataclass(frozen=True)
class DataConfig:
    name: str = "mnist-5k"           # a name from ddsm.data.DATASETS
    split: str = "train"             # which split to train on
    image_size: Optional[int] = None  # resize to this (default: the model's sample_size)
    channels: Optional[int] = None    # 1 or 3 (default: the model's in_channels)
    root: Optional[str] = None        # folder for cifar10 / imagefolder / a non-default fashion-mnist
    download: bool = False            # cifar10 only, and only when you ask


@dataclass(frozen=True)
class DiffusionConfig:
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"     # diffusers name: linear, scaled_linear, squaredcos_cap_v2
    beta_start: float = 0.0001
    beta_end: float = 0.02
    prediction_type: str = "epsilon"  # what the UNet predicts

    def __post_init__(self):
        if self.num_train_timesteps <= 1:
            raise ConfigError(f"[diffusion] num_train_timesteps={self.num_train_timesteps}: expected > 1")
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ConfigError(f"[diffusion] prediction_type={self.prediction_type!r}: expected epsilon, "
                              "v_prediction or sample")

    def scheduler_config(self) -> Dict[str, Any]:
        """Keyword arguments shared by every diffusers scheduler built for this model."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 64              # per process
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 200
    max_steps: int = 2500
    grad_clip: float = 1.0
    gradient_accumulation_steps: int = 1
    ema_decay: float = 0.995
    sandwich_widths: int = 4          # widths per step: largest + smallest + (n-2) random others
    full_width_steps: int = 0         # the first steps train the largest width alone (a dense warm-up), then sandwich
    distill_weight: float = 0.0       # in-place distillation: weight of the MSE to the full width's prediction
    distill_only: bool = False        # small widths learn only from the full width (no ground-truth loss)
    label_dropout: float = 0.1        # class-conditional models: share of labels replaced by the null class
    seed: int = 0
    checkpoint_every: int = 500
    sample_every: int = 500           # sample grids per width (PNG) at these steps
    sample_images: int = 64           # images per width in those grids (0: no grids); seeds 0..n-1, every time
    sample_steps: int = 50            # DDIM steps for the grids
    log_every: int = 10
    num_workers: int = 0
    keep_checkpoints: int = 2

    def __post_init__(self):
        for name in ("batch_size", "max_steps", "gradient_accumulation_steps", "sandwich_widths",
                     "checkpoint_every", "sample_every", "sample_steps", "log_every", "keep_checkpoints"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"[train] {name}={getattr(self, name)}: expected a positive int")
        for name in ("warmup_steps", "sample_images", "num_workers", "full_width_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"[train] {name}={getattr(self, name)}: expected an int >= 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"[train] ema_decay={self.ema_decay}: expected a float in [0, 1)")
        if self.learning_rate <= 0:
            raise ConfigError(f"[train] learning_rate={self.learning_rate}: expected > 0")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError(f"[train] weight_decay={self.weight_decay}, grad_clip={self.grad_clip}: expected "
                              ">= 0 (grad_clip 0: no clipping)")
        if not 0.0 <= self.label_dropout < 1.0:
            raise ConfigError(f"[train] label_dropout={self.label_dropout}: expected a float in [0, 1)")
        if self.distill_weight < 0:
            raise ConfigError(f"[train] distill_weight={self.distill_weight}: expected >= 0")
        if self.distill_only and self.distill_weight <= 0:
            raise ConfigError(f"[train] distill_only=True with distill_weight={self.distill_weight}: the small "
                              "widths would learn nothing; set distill_weight > 0")


@dataclass(frozen=True)
class AutoencoderConfig:
    """Section ``vae``: the small diffusers ``AutoencoderKL`` that train/train_autoencoder.py trains for latent
    diffusion, and its recipe. Its input size and channels come from the data (see ``ddsm.autoencoder``)."""

    block_out_channels: Tuple[int, ...] = (32, 64)  # one level each; each level but the last halves the size
    latent_channels: int = 4
    layers_per_block: int = 1
    norm_num_groups: int = 8
    mid_block_attention: bool = True
    kl_weight: float = 1e-6           # weight of the KL term against the per-pixel MSE reconstruction loss
    batch_size: int = 64              # per process
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    max_steps: int = 2000
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    keep_checkpoints: int = 2
    scale_images: int = 0             # images encoded to measure the latent std (0: the whole training split)

    def __post_init__(self):
        chans = list(self.block_out_channels)
        if not chans or any(not isinstance(c, int) or c <= 0 for c in chans):
            raise ConfigError(f"[vae] block_out_channels={chans}: expected a non-empty list of positive ints")
        if any(c % self.norm_num_groups for c in chans):
            raise ConfigError(f"[vae] norm_num_groups={self.norm_num_groups}: expected a divisor of every "
                              f"block_out_channels {chans}")
        for name in ("latent_channels", "layers_per_block", "norm_num_groups", "batch_size", "max_steps",
                     "checkpoint_every", "log_every", "keep_checkpoints"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"[vae] {name}={getattr(self, name)}: expected a positive int")
        for name in ("kl_weight", "warmup_steps", "grad_clip", "scale_images"):
            if getattr(self, name) < 0:
                raise ConfigError(f"[vae] {name}={getattr(self, name)}: expected >= 0")
        if self.learning_rate <= 0:
            raise ConfigError(f"[vae] learning_rate={self.learning_rate}: expected > 0")

    @property
    def downsample_factor(self) -> int:
        """Image size / latent size."""
        return 2 ** (len(self.block_out_channels) - 1)


@dataclass(frozen=True)
class SamplingConfig:
    scheduler: str = "DDIMScheduler"  # any diffusers scheduler class name
    num_inference_steps: int = 50
    guidance_scale: float = 1.0       # classifier-free guidance (class-conditional models); 1.0 = off
    batch_size: int = 64


@dataclass(frozen=True)
class SearchConfig:
    budget: float = 0.5               # fraction of the full-width MACs of the same sampler
    population: int = 24
    generations: int = 12
    num_samples: int = 256            # images per candidate (common seeds)
    final_samples: int = 1024         # images for re-evaluating the top candidates
    top_k: int = 4
    metric: str = "domain_fid"        # domain_fid | domain_kid | inception_fid | fidelity
    allow_skip: bool = False
    segments: Optional[int] = None    # group consecutive steps into this many genes
    crossover_prob: float = 0.7
    mutation_prob: float = 0.3
    mutation_gene_prob: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class ExperimentConfig:
    model: Dict[str, Any]
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    autoencoder: Optional[str] = None  # directory of a diffusers AutoencoderKL: train and sample in its latents
    vae: AutoencoderConfig = field(default_factory=AutoencoderConfig)  # what train_autoencoder.py trains
    name: str = "experiment"
    notes: str = ""

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "ExperimentConfig":
        sections = {"data": DataConfig, "diffusion": DiffusionConfig, "train": TrainConfig,
                    "sampling": SamplingConfig, "search": SearchConfig, "vae": AutoencoderConfig}
        allowed = set(sections) | {"model", "autoencoder", "name", "notes"}
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise ConfigError(f"unknown section(s) {unknown}; expected some of {sorted(allowed)}")
        if not isinstance(raw.get("model"), Mapping):
            raise ConfigError("the config needs a 'model' section (keyword arguments of SlimmableUNet)")
        model = dict(raw["model"])
        _check_model_keys(model)
        built = {k: _build(c, raw.get(k), k) for k, c in sections.items()}
        return cls(model=model, autoencoder=raw.get("autoencoder"), name=str(raw.get("name", "experiment")),
                   notes=str(raw.get("notes", "")), **built)

    def to_dict(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        return _plain(out)

    def build_model(self):
        """A freshly initialised SlimmableUNet of this config."""
        from .models import SlimmableUNet

        return SlimmableUNet(**self.model)

    def save(self, path: PathLike) -> Path:
        return atomic_write(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _check_model_keys(model: Mapping[str, Any]) -> None:
    from .models import SlimmableUNet

    params = set(inspect.signature(SlimmableUNet.__init__).parameters) - {"self"}
    unknown = sorted(set(model) - params)
    if unknown:
        raise ConfigError(f"[model] unknown key(s) {unknown}; expected some of {sorted(params)}")


def load_config(path: PathLike) -> ExperimentConfig:
    """Read and validate an experiment YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections, got {type(raw).__name__}")
    try:
        return ExperimentConfig.from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
