"""The layouts of the public DDPM / LDM checkpoints, rebuilt from their published config values with random weights
(nothing is downloaded): each converts with SlimmableUNet.from_dense and equals the dense model at width 1.0, with
width choices picked from its groups and heads; eval/flops.py counts them; the LDM VQModel serves as autoencoder."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DModel, VQModel

from ddsm import SlimmableUNet
from ddsm.config import ConfigError
from ddsm.models import check_latent_model, count_macs, latent_shape, load_autoencoder, load_dense
from ddsm.sampling.loop import decode_macs

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]

# The UNet config.json of the public checkpoints: every value below is the published one (written from those
# repositories' config.json; there is no network here to re-read them). Tests shrink sample_size only, where a
# comment says so: the block structure and channel widths stay.
_DDPM_COMMON = dict(act_fn="silu", attention_head_dim=None, center_input_sample=False, downsample_padding=0,
                    flip_sin_to_cos=False, freq_shift=1, in_channels=3, layers_per_block=2, mid_block_scale_factor=1,
                    norm_eps=1e-06, norm_num_groups=32, out_channels=3, time_embedding_type="positional")
DDPM_CIFAR10_32 = dict(_DDPM_COMMON, block_out_channels=[128, 256, 256, 256], sample_size=32,
                       down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
                       up_block_types=["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"])
# google/ddpm-celebahq-256 and google/ddpm-ema-church-256 publish the same layout
DDPM_256 = dict(_DDPM_COMMON, block_out_channels=[128, 128, 256, 256, 512, 512], sample_size=256,
                down_block_types=["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
                up_block_types=["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4)
LDM_CELEBAHQ_256_UNET = dict(               # CompVis/ldm-celebahq-256, unet/config.json
    act_fn="silu", attention_head_dim=32, block_out_channels=[224, 448, 672, 896], center_input_sample=False,
    down_block_types=["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"], downsample_padding=1,
    flip_sin_to_cos=True, freq_shift=0, in_channels=3, layers_per_block=2, mid_block_scale_factor=1, norm_eps=1e-05,
    norm_num_groups=32, out_channels=3, sample_size=64, time_embedding_type="positional",
    up_block_types=["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"])
LDM_CELEBAHQ_256_VQVAE = dict(              # CompVis/ldm-celebahq-256, vqvae/config.json (VQ-f4, 8192 codes)
    act_fn="silu", block_out_channels=[128, 256, 512], down_block_types=["DownEncoderBlock2D"] * 3, in_channels=3,
    latent_channels=3, layers_per_block=2, num_vq_embeddings=8192, out_channels=3, sample_size=256,
    up_block_types=["UpDecoderBlock2D"] * 3)

DDPM_LAYOUTS = {"google/ddpm-cifar10-32": (DDPM_CIFAR10_32, 32),
                "google/ddpm-celebahq-256 = google/ddpm-ema-church-256": (DDPM_256, 32)}  # sample_size 256 -> 32

PARAMETERS = {"google/ddpm-cifar10-32": 35_746_307,                                   # 35.7 M and 113.7 M,
              "google/ddpm-celebahq-256 = google/ddpm-ema-church-256": 113_673_219}  # as published


def _dense(config: dict, size: int) -> UNet2DModel:
    """The layout with random weights (no zero-initialised layer hides a conversion bug)."""
    with torch.device("meta"):  # skip diffusers' initialisation: the weights are drawn below
        unet = UNet2DModel(**dict(config, sample_size=size))
    unet = unet.to_empty(device="cpu").eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0, 0.02)
    return unet


def _equal_at_full_width(dense: UNet2DModel, model: SlimmableUNet) -> None:
    c = dense.config
    x = torch.randn(2, c.in_channels, c.sample_size, c.sample_size, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([10, 900])
    with torch.no_grad():
        ref, out = dense(x, t).sample, model(x, t, width=1.0).sample
    assert ref.abs().max() > 1e-2                    # the comparison is not between two zeros
    assert (ref - out).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", sorted(DDPM_LAYOUTS))
def test_ddpm_layouts_convert_and_equal_the_dense_model(name):
    config, size = DDPM_LAYOUTS[name]
    dense = _dense(config, size)
    model = SlimmableUNet.from_dense(dense).eval()
    assert model.width_choices == (0.25, 0.5, 0.75, 1.0)         # every default width fits 32 groups
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in dense.parameters()) == PARAMETERS[name]
    assert not any(t.is_meta for t in (*model.parameters(), *model.buffers()))
    _equal_at_full_width(dense, model)
    x = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        assert model(x, 5, width=0.25).sample.shape == x.shape
    if name == "google/ddpm-cifar10-32":                         # the published size: about 6.1 GMACs a forward
        assert 5.9e9 < count_macs(model, 1.0) < 6.3e9


def test_ldm_unet_converts_at_full_width_and_names_why_no_narrower_width_fits():
    with torch.device("meta"):  # the refusal needs the layout only
        layout = UNet2DModel(**LDM_CELEBAHQ_256_UNET)
    with pytest.raises(ValueError, match=r"no width narrower than 1.0.*down_blocks.2.attentions.0 has 336 channels "
                                         r"at that width, not a multiple of attention_head_dim=32.*Feasible "
                                         r"widths: \[1.0\]"):
        SlimmableUNet.from_dense(layout)
    with pytest.raises(ValueError, match=r"width_choices \[0.5\] cannot be realised.*Feasible widths: \[1.0\]"):
        SlimmableUNet.from_dense(layout, width_choices=(0.5, 1.0))
    dense = _dense(LDM_CELEBAHQ_256_UNET, 16)                   # sample_size 64 (latents of 256 px) shrunk to 16
    model = SlimmableUNet.from_dense(dense, width_choices=(1.0,)).eval()
    _equal_at_full_width(dense, model)


def test_ldm_vqmodel_layout_is_the_unets_autoencoder(tmp_path):
    torch.manual_seed(0)
    vq = VQModel(**dict(LDM_CELEBAHQ_256_VQVAE, sample_size=32)).eval()   # sample_size 256 shrunk to 32
    vq.save_pretrained(tmp_path / "vqvae")
    loaded = load_autoencoder(tmp_path / "vqvae")
    assert isinstance(loaded, VQModel) and not any(p.requires_grad for p in loaded.parameters())
    assert latent_shape(vq, 256) == (3, 64, 64)                  # the published UNet's in_channels and sample_size
    check_latent_model(LDM_CELEBAHQ_256_UNET, vq, 256)
    with pytest.raises(ConfigError, match="sample_size=16 \\(latents need 64\\)"):
        check_latent_model(dict(LDM_CELEBAHQ_256_UNET, sample_size=16), vq, 256)
    unet_config = UNet2DModel(**dict(LDM_CELEBAHQ_256_UNET, block_out_channels=[32, 32, 32, 32],
                                     sample_size=8)).config    # only in_channels and sample_size matter here
    vq_macs = decode_macs(vq, unet_config)
    codebook = 8 * 8 * 8192 * 3                                   # 64 latent positions x 8192 codes x 3 dims
    no_lookup = decode_macs(_Unquantised(vq), unet_config)
    assert vq_macs - no_lookup == codebook


class _Unquantised(torch.nn.Module):
    """The VQModel decoding without its codebook look-up (``force_not_quantize``): the decode minus the look-up."""

    def __init__(self, vq):
        super().__init__()
        self.vq, self.config = vq, vq.config

    def decode(self, z):
        return self.vq.decode(z, force_not_quantize=True)


def _flops_main():
    spec = importlib.util.spec_from_file_location("flops_script", ROOT / "eval" / "flops.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


TINY = dict(_class_name="UNet2DModel", sample_size=8, block_out_channels=[16, 32], layers_per_block=1,
            norm_num_groups=4, down_block_types=["DownBlock2D", "AttnDownBlock2D"], attention_head_dim=8,
            up_block_types=["AttnUpBlock2D", "UpBlock2D"])


def test_flops_counts_a_dense_layout_from_its_config_or_its_folder(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    assert _flops_main()(["--dense", str(tmp_path / "config.json"), "--output", str(tmp_path / "a.json")]) == 0
    from_config = json.loads((tmp_path / "a.json").read_text())
    assert [row["width"] for row in from_config["widths"]] == [0.5, 1.0]       # what its 4 groups allow
    dense = load_dense(tmp_path / "config.json")
    assert from_config["parameters"] == sum(p.numel() for p in dense.parameters())
    dense.save_pretrained(tmp_path / "unet")
    assert _flops_main()(["--dense", str(tmp_path / "unet"), "--channel-divisor", "4", "--width-choices", "0.25",
                          "1.0", "--output", str(tmp_path / "b.json")]) == 0
    from_folder = json.loads((tmp_path / "b.json").read_text())
    assert [row["width"] for row in from_folder["widths"]] == [0.25, 1.0]
    assert from_folder["widths"][-1]["macs"] == from_config["widths"][-1]["macs"]
    assert from_folder["widths"][0]["macs"] < from_config["widths"][0]["macs"]


@pytest.mark.parametrize("argv, message", [
    (["--dense", "{tmp}/nowhere"], "neither a UNet2DModel folder"),
    (["--dense", "{tmp}/cond.json"], "holds a UNet2DConditionModel; expected a UNet2DModel"),
    (["--dense", "{tmp}/config.json", "--width-choices", "0.25", "1.0"], "width_choices [0.25] cannot be realised"),
])
def test_flops_refuses_bad_dense_input_clearly(tmp_path, capsys, argv, message):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    (tmp_path / "cond.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    assert _flops_main()([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_flops_width_flags_need_dense(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _flops_main()(["--model", str(tmp_path), "--channel-divisor", "4"])
    assert exit_info.value.code == 2 and "apply to --dense only" in capsys.readouterr().err


@pytest.mark.parametrize("change, part", [
    ({"resnet_time_scale_shift": "scale_shift"}, "resnet_time_scale_shift"),
    ({"time_embedding_type": "fourier"}, "time_embedding_type"),
    ({"down_block_types": ["SkipDownBlock2D", "AttnSkipDownBlock2D"]}, "SkipDownBlock2D"),
    ({"mid_block_type": None}, "mid_block_type"),
    ({"attn_norm_num_groups": 2}, "attn_norm_num_groups"),
    ({"upsample_type": "resnet"}, "upsample_type"),
])
def test_unsupported_layout_parts_are_named(change, part):
    config = dict(sample_size=8, block_out_channels=[16, 32], layers_per_block=1, norm_num_groups=4,
                  down_block_types=["DownBlock2D", "AttnDownBlock2D"], up_block_types=["AttnUpBlock2D", "UpBlock2D"])
    with torch.device("meta"):
        dense = UNet2DModel(**dict(config, **change))
    with pytest.raises(ValueError, match=part):
        SlimmableUNet.from_dense(dense)
