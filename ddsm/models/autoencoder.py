"""The autoencoder of latent diffusion: a diffusers ``AutoencoderKL`` (build a small one from the ``vae`` config
section; training it is :class:`ddsm.training.AutoencoderTrainer`) or a ``VQModel`` (the LDM checkpoints'). Load
either, check that a UNet fits its latents, and encode / decode latents as the stock pipelines do."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Mapping, Optional

from ..config.check import ConfigError  # the module: the ddsm.config package imports ddsm.models
from ..utils import PathLike
from .unet import SlimmableUNet

__all__ = ["build_autoencoder", "load_autoencoder", "latent_shape", "check_latent_model", "autoencoder_image_size",
           "autoencoder_class", "encode_latents", "decode_latents", "AUTOENCODER_CLASSES"]

AUTOENCODER_CLASSES = ("AutoencoderKL", "VQModel")


def build_autoencoder(vae, image_size: int, channels: int):
    """A freshly initialised ``AutoencoderKL`` of the ``vae`` section (:class:`~ddsm.config.AutoencoderConfig`) for
    ``channels`` x ``image_size`` images."""
    from diffusers import AutoencoderKL

    levels = len(vae.block_out_channels)
    if image_size % vae.downsample_factor:
        raise ConfigError(f"[vae] image size {image_size} is not divisible by the autoencoder's downsampling "
                          f"factor {vae.downsample_factor} ({levels} levels)")
    return AutoencoderKL(
        in_channels=channels, out_channels=channels, latent_channels=vae.latent_channels,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(vae.block_out_channels), layers_per_block=vae.layers_per_block,
        norm_num_groups=vae.norm_num_groups, sample_size=image_size, scaling_factor=1.0,
        mid_block_add_attention=vae.mid_block_attention)


def autoencoder_class(path: PathLike):
    """The diffusers class (``AutoencoderKL`` or ``VQModel``) named by the ``_class_name`` of ``path/config.json``
    (none named: ``AutoencoderKL``); another class raises a ValueError naming it."""
    import diffusers

    name = json.loads((Path(path) / "config.json").read_text()).get("_class_name", "AutoencoderKL")
    if name not in AUTOENCODER_CLASSES:
        raise ValueError(f"autoencoder {str(path)!r} is a {name}; expected one of {list(AUTOENCODER_CLASSES)}")
    return getattr(diffusers, name)


def load_autoencoder(path: PathLike):
    """An ``AutoencoderKL`` or ``VQModel`` from a ``save_pretrained`` directory (or a training run directory
    holding ``autoencoder/``), in eval mode with frozen weights."""
    p = Path(path)
    if not (p / "config.json").is_file() and (p / "autoencoder" / "config.json").is_file():
        p = p / "autoencoder"
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"autoencoder {str(path)!r} is not an AutoencoderKL directory (nor a VQModel one: "
                                "no config.json); train one first: python train/train_autoencoder.py --config <this "
                                "config> --output-dir <dir>, then set `autoencoder: <dir>/autoencoder`")
    vae = autoencoder_class(p).from_pretrained(p, local_files_only=True)
    vae.eval().requires_grad_(False)
    return vae


def encode_latents(vae, images, generator=None):
    """Diffusion latents of ``images``: ``z * scaling_factor``, with ``z`` a sample of an ``AutoencoderKL``'s
    posterior (drawn with ``generator``), or a ``VQModel``'s latents before quantisation (what LDM trains on)."""
    out = vae.encode(images)
    z = out.latent_dist.sample(generator=generator) if hasattr(out, "latent_dist") else out.latents
    return z * vae.config.scaling_factor


def decode_latents(vae, latents):
    """Images from diffusion latents, as the stock pipelines decode them: ``vae.decode(latents / scaling_factor)``;
    a ``VQModel`` quantises them to its codebook first (``LDMPipeline``)."""
    return vae.decode(latents / vae.config.scaling_factor).sample


def _factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def latent_shape(vae, image_size: Optional[int] = None) -> tuple:
    """(C, H, W) of the latents of ``image_size`` images (default: the autoencoder's ``sample_size``)."""
    size = image_size or vae.config.sample_size
    return (vae.config.latent_channels, size // _factor(vae), size // _factor(vae))


def check_latent_model(model_section: Mapping, vae, image_size: Optional[int] = None) -> None:
    """Raise a clear :class:`~ddsm.config.ConfigError` unless the UNet of ``model_section`` takes and returns the
    latents of ``vae`` (channels and size)."""
    size = image_size or vae.config.sample_size
    if size % _factor(vae):
        raise ConfigError(f"latent diffusion: image size {size} is not divisible by the autoencoder's downsampling "
                          f"factor {_factor(vae)}")
    defaults = {k: v.default for k, v in inspect.signature(SlimmableUNet.__init__).parameters.items()}
    got = {k: model_section.get(k, defaults[k]) for k in ("in_channels", "out_channels", "sample_size")}
    c, h, _ = latent_shape(vae, size)
    want = {"in_channels": c, "out_channels": c, "sample_size": h}
    if got != want:
        bad = ", ".join(f"{k}={got[k]} (latents need {want[k]})" for k in want if got[k] != want[k])
        raise ConfigError(f"latent diffusion: the autoencoder makes latents of shape {(c, h, h)} from {size} px "
                          f"images (latent_channels={c}, downsampling {_factor(vae)}), but the model section has "
                          f"{bad}; set model.in_channels = model.out_channels = {c} and model.sample_size = {h}")


def autoencoder_image_size(config) -> int:
    """The image size the autoencoder of ``config`` (an :class:`~ddsm.config.ExperimentConfig`) is trained on:
    ``data.image_size``, else the UNet's ``sample_size`` times the downsampling factor of the ``vae`` section."""
    if config.data.image_size:
        return int(config.data.image_size)
    return int(config.model.get("sample_size", 32)) * config.vae.downsample_factor
