"""What a slimmable run starts from, checked before it trains: the supernet (or a dense model to convert), the
autoencoder of latent runs, the data, and the sections a resumed run must keep."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Mapping, Optional

import yaml

from ..config import ConfigError, ExperimentConfig, load_config
from ..models import SlimmableUNet, check_latent_model, load_autoencoder
from ..utils import PathLike

__all__ = ["load_init_model", "load_autoencoder_for", "dataset_for_training", "check_data_fits_model",
           "check_resume_config"]


def load_init_model(path: PathLike, model_section: Mapping):
    """A supernet to start from: a diffusers ``UNet2DModel`` folder (converted with ``SlimmableUNet.from_dense``)
    or a ``SlimmableUNet`` folder (e.g. a dense model trained here with ``width_choices: [1.0]``), whose full-width
    weights are kept and re-sliced at the config's ``width_choices`` / ``channel_divisor``."""
    from diffusers import UNet2DModel

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"--init-from {str(path)!r} is not a model directory (no config.json there); "
                                "expected a folder written by UNet2DModel.save_pretrained or SlimmableUNet")
    kwargs = {k: model_section[k] for k in ("width_choices", "channel_divisor") if k in model_section}
    if json.loads((path / "config.json").read_text()).get("_class_name") == SlimmableUNet.__name__:
        return SlimmableUNet.from_pretrained(path, local_files_only=True, **kwargs)  # kwargs override its config
    dense = UNet2DModel.from_pretrained(path, local_files_only=True)
    return SlimmableUNet.from_dense(dense, **kwargs)


def narrow_widths_trained(path: PathLike) -> bool:
    """Whether an ``--init-from`` folder is a SlimmableUNet trained at several widths: its narrow widths are trained
    already, so ``train.reorder_channels`` must not shuffle them (a dense model's are not)."""
    config = json.loads((Path(path) / "config.json").read_text())
    return config.get("_class_name") == SlimmableUNet.__name__ and len(config.get("width_choices") or ()) > 1


def channel_order_fixed(init_from: Optional[PathLike], reorder_channels: bool, say: Callable[[str], None]) -> bool:
    """Whether ``train.reorder_channels`` must leave this run's channels alone: ``--init-from`` a supernet trained
    at several widths. Says so when the option is on, so that a skipped sort is never silent."""
    fixed = init_from is not None and narrow_widths_trained(init_from)
    if fixed and reorder_channels:
        say(f"train.reorder_channels: not sorting, --init-from {init_from} is a supernet trained at several widths "
            "(sorting would scramble its trained narrow widths)")
    return fixed


def load_autoencoder_for(config: ExperimentConfig):
    """The config's autoencoder (frozen), checked to make the latents the model section takes."""
    vae = load_autoencoder(config.autoencoder)
    check_latent_model(config.model, vae, config.data.image_size)
    return vae


def dataset_for_training(config: ExperimentConfig, autoencoder=None):
    """The config's training data at the size and channels the model (or its autoencoder) takes."""
    from ..data import dataset_from_config

    data = {k: v for k, v in dataclasses.asdict(config.data).items() if v is not None}
    if autoencoder is not None:
        data.setdefault("image_size", autoencoder.config.sample_size)
        data.setdefault("channels", autoencoder.config.in_channels)
    else:
        data.setdefault("image_size", config.model.get("sample_size", 32))
        data.setdefault("channels", config.model.get("in_channels", 3))
    return dataset_from_config(data)


def check_data_fits_model(dataset, model, autoencoder) -> None:
    """A clear :class:`~ddsm.config.ConfigError` unless the data fit the model (or its autoencoder) and classes."""
    image = dataset[0][0]
    cfg = model.config
    if autoencoder is None and tuple(image.shape) != (cfg.in_channels, cfg.sample_size, cfg.sample_size):
        raise ConfigError(f"the data give images of shape {tuple(image.shape)} but the model takes "
                          f"({cfg.in_channels}, {cfg.sample_size}, {cfg.sample_size}) (model in_channels, "
                          "sample_size); set data.image_size / data.channels or the model section to agree")
    if autoencoder is not None:
        want = (autoencoder.config.in_channels,)
        if image.shape[0] != want[0]:
            raise ConfigError(f"the data give {image.shape[0]}-channel images but the autoencoder takes "
                              f"{want[0]} (in_channels)")
    num = getattr(dataset, "num_classes", None)
    if cfg.num_classes and num and num > cfg.num_classes:
        raise ConfigError(f"the data have {num} classes but the model's num_classes={cfg.num_classes}")


def check_resume_config(config_path: Path, config: ExperimentConfig) -> None:
    """``--resume``: a run cannot change the model, diffusion or autoencoder section it was started with."""
    saved = load_config(config_path)
    for section in ("model", "diffusion", "autoencoder"):
        old, new = getattr(saved, section), getattr(config, section)
        if _plain(old) != _plain(new):
            raise ConfigError(f"--resume: the {section} section differs from the run's {config_path} "
                              f"(saved {_plain(old)}, now {_plain(new)}); a run cannot change it")


def _plain(v):
    if dataclasses.is_dataclass(v):
        v = dataclasses.asdict(v)
    return yaml.safe_load(yaml.safe_dump(_to_builtin(v)))


def _to_builtin(v):
    if isinstance(v, Mapping):
        return {str(k): _to_builtin(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_to_builtin(x) for x in v]
    return v
