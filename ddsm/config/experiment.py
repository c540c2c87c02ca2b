"""The whole experiment: its sections, the model section checked against SlimmableUNet's signature, the YAML file."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import yaml

from ..utils import PathLike, atomic_write, to_plain
from .check import ConfigError, Section, check_keys, check_value
from .sections import AutoencoderConfig, DataConfig, DiffusionConfig, SamplingConfig, SearchConfig, TrainConfig

__all__ = ["ExperimentConfig", "load_config", "check_model_section"]


@dataclass(frozen=True)
class ExperimentConfig(Section):
    """A whole config file. Sections may be given as mappings (as in YAML) or as their dataclasses."""

    model: Dict[str, Any]
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    autoencoder: Optional[str] = None  # a diffusers AutoencoderKL or VQModel directory: latent space
    vae: AutoencoderConfig = field(default_factory=AutoencoderConfig)  # what train_autoencoder.py trains
    name: str = "experiment"
    notes: str = ""

    def check(self) -> None:
        object.__setattr__(self, "model", check_model_section(self.model))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "ExperimentConfig":
        """The config of a YAML mapping; unknown sections and keys refused, every value checked."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise ConfigError(f"unknown section(s) {unknown}; expected some of {sorted(names)}")
        if not isinstance(raw.get("model"), Mapping):
            raise ConfigError("the config needs a 'model' section (keyword arguments of SlimmableUNet)")
        return cls(**raw)

    def to_dict(self) -> Dict[str, Any]:
        return to_plain(dataclasses.asdict(self))

    def build_model(self):
        """A freshly initialised SlimmableUNet of this config."""
        from ..models import SlimmableUNet

        return SlimmableUNet(**self.model)

    def save(self, path: PathLike) -> Path:
        return atomic_write(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


@functools.lru_cache(maxsize=None)
def _model_parameters() -> Tuple[Tuple[str, Any], ...]:
    """(name, annotation) of each keyword argument of SlimmableUNet."""
    from ..models import SlimmableUNet

    init = inspect.unwrap(SlimmableUNet.__init__)
    hints = typing.get_type_hints(init)
    params = [p for p in inspect.signature(init).parameters.values() if p.name != "self"]
    return tuple((p.name, hints.get(p.name, Any)) for p in params)


def check_model_section(model: Mapping[str, Any]) -> Dict[str, Any]:
    """The ``model`` section checked against SlimmableUNet's signature (unknown keys, types), numbers converted and
    lists kept as lists. Deeper checks (divisibility, widths) run when the model is built."""
    if not isinstance(model, Mapping):
        raise ConfigError(f"model={model!r}: expected a mapping (keyword arguments of SlimmableUNet)")
    params = dict(_model_parameters())
    check_keys(model, list(params), "model")
    return {k: to_plain(check_value(params[k], v, "model", k)) for k, v in model.items()}


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
