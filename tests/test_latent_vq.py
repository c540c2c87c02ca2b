"""Latent diffusion with a VQModel (the LDM checkpoints' autoencoder): loading, encoding as LDM trains, and a
supernet fine-tuned with --init-from a dense latent UNet in a VQModel's latents, end to end on the 8x8 digits."""

import importlib.util
from pathlib import Path

import pytest
import torch
import yaml
from diffusers import AutoencoderKL, UNet2DModel, VQModel

from ddsm import SlimmableUNet
from ddsm.cli import load_autoencoder as cli_load_autoencoder
from ddsm.models import autoencoder_class, decode_latents, encode_latents, load_autoencoder

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]


def _vq(path: Path) -> VQModel:
    """A tiny VQModel for the 8 px grey digits: 2-channel 4 px latents, 16 codes."""
    torch.manual_seed(0)
    vq = VQModel(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                 latent_channels=2, norm_num_groups=4, num_vq_embeddings=16, sample_size=8).eval()
    vq.save_pretrained(path)
    return vq


def test_vqmodel_loads_encodes_and_decodes_as_ldm(tmp_path):
    vq = _vq(tmp_path / "vq")
    assert autoencoder_class(tmp_path / "vq") is VQModel
    assert isinstance(load_autoencoder(tmp_path / "vq"), VQModel)
    assert isinstance(cli_load_autoencoder(str(tmp_path / "vq")), VQModel)
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        z = encode_latents(vq, x)
        torch.testing.assert_close(z, vq.encode(x).latents * vq.config.scaling_factor)  # before quantisation
        quantised = vq.quantize(z / vq.config.scaling_factor)[0]
        torch.testing.assert_close(decode_latents(vq, z), vq.decode(quantised, force_not_quantize=True).sample)
    AutoencoderKL(block_out_channels=(8,), norm_num_groups=4).save_pretrained(tmp_path / "kl")
    assert autoencoder_class(tmp_path / "kl") is AutoencoderKL
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet/config.json").write_text('{"_class_name": "UNet2DModel"}')
    with pytest.raises(ValueError, match="is a UNet2DModel; expected one of \\['AutoencoderKL', 'VQModel'\\]"):
        load_autoencoder(tmp_path / "unet")


def test_supernet_fine_tunes_from_a_dense_latent_unet_in_vq_latents(tmp_path):
    _vq(tmp_path / "vq")
    torch.manual_seed(1)
    dense = UNet2DModel(sample_size=4, in_channels=2, out_channels=2, block_out_channels=(8, 16), layers_per_block=1,
                        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=4)
    dense.save_pretrained(tmp_path / "dense")
    raw = {"name": "vq", "model": {"width_choices": [0.5, 1.0], "channel_divisor": 2}, "data": {"name": "digits"},
           "diffusion": {"num_train_timesteps": 100}, "autoencoder": str(tmp_path / "vq"),
           "train": dict(batch_size=8, max_steps=2, warmup_steps=1, checkpoint_every=2, sample_every=2,
                         sample_images=4, sample_steps=2, log_every=1)}
    (tmp_path / "vq.yaml").write_text(yaml.safe_dump(raw))
    spec = importlib.util.spec_from_file_location("train_slimmable", ROOT / "train" / "train_slimmable.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "run"
    argv = ["--config", str(tmp_path / "vq.yaml"), "--output-dir", str(out), "--init-from", str(tmp_path / "dense"),
            "--no-progress"]
    assert script.main(argv) == 0
    model = SlimmableUNet.from_pretrained(out / "model")
    assert model.width_choices == (0.5, 1.0) and (model.config.in_channels, model.config.sample_size) == (2, 4)
    assert isinstance(VQModel.from_pretrained(out / "autoencoder"), VQModel)
    assert list((out / "samples").glob("*.png"))                  # sample grids decoded through the VQModel
