"""SlimmableUNet: shapes, equality with diffusers, per-part skip slicing, static sub-networks, MACs, save/load,
config validation."""

import json

import pytest
import torch
from diffusers import UNet2DModel
from diffusers.models.embeddings import Timesteps

import ddsm.models.layers as layers_mod
from conftest import tiny_unet_kwargs
from ddsm.models import count_macs, macs_table
from ddsm.models import SlimmableUNet, slim_channels

WIDTHS = (0.25, 0.5, 0.75, 1.0)


def _inputs(batch=3, channels=1, size=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, size, size, generator=g)
    t = torch.tensor([3, 500, 999][:batch])
    y = torch.tensor([1, 7, 4][:batch])
    return x, t, y


def _randomize(module, seed=0, std=0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def _dense(**overrides):
    kw = dict(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(16, 32, 32), layers_per_block=1,
              down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
              up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=8,
              flip_sin_to_cos=False, freq_shift=1, downsample_padding=0, num_class_embeds=10)
    kw.update(overrides)
    return _randomize(UNet2DModel(**kw)).eval()


# -- shapes and widths ----------------------------------------------------------------------------------------------

def test_every_width_has_the_right_shape_and_differs(tiny_unet):
    x, t, y = _inputs()
    outs = {}
    with torch.no_grad():
        for w in WIDTHS:
            out = tiny_unet(x, t, class_labels=y, width=w).sample
            assert out.shape == x.shape and torch.isfinite(out).all()
            outs[w] = out
    for a in WIDTHS:
        for b in WIDTHS:
            if a < b:
                assert (outs[a] - outs[b]).abs().max() > 1e-3, (a, b)


def test_channels_per_width_follow_rounding_rule(tiny_unet):
    assert tiny_unet.plan(0.25).channels == (4, 8, 8)
    assert tiny_unet.plan(0.75).channels == (12, 24, 24)
    assert tiny_unet.plan(1.0).temb == 64 and tiny_unet.plan(0.5).temb == 32
    assert slim_channels(100, 1.0, 8) == 100 and slim_channels(128, 0.3, 8) == 40


def test_unknown_width_is_refused(tiny_unet):
    x, t, y = _inputs()
    with pytest.raises(ValueError, match=r"width 0\.3 is not one of the model's width_choices"):
        tiny_unet(x, t, class_labels=y, width=0.3)


def test_timestep_and_label_forms(tiny_unet):
    x, _, y = _inputs()
    with torch.no_grad():
        a = tiny_unet(x, 500, class_labels=y).sample
        b = tiny_unet(x, torch.tensor(500), class_labels=y).sample
        c = tiny_unet(x, torch.full((3,), 500), class_labels=y).sample
        null = tiny_unet(x, 500).sample  # no labels: the null class
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    assert (a - null).abs().max() > 1e-3


def test_labels_on_unconditional_model_raise():
    model = SlimmableUNet(**tiny_unet_kwargs(num_classes=None))
    x, t, y = _inputs()
    with pytest.raises(ValueError, match="no class conditioning"):
        model(x, t, class_labels=y)


def test_smaller_width_uses_sliced_weights_and_fewer_parameters(tiny_unet):
    sizes = [sum(p.numel() for p in tiny_unet.subnet(w).parameters()) for w in WIDTHS]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    assert sizes[-1] == sum(p.numel() for p in tiny_unet.parameters())


# -- diffusers equality ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [
    {},                                                           # class-conditional, multi-head attention
    {"num_class_embeds": None, "attention_head_dim": None},      # DDPM-style: unconditional, single head
    {"downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "layers_per_block": 2},
])
def test_from_dense_equals_dense_at_full_width(overrides):
    dense = _dense(**overrides)
    model = SlimmableUNet.from_dense(dense, width_choices=WIDTHS, channel_divisor=4).eval()
    x, t, y = _inputs()
    labels = y if dense.config.num_class_embeds else None
    with torch.no_grad():
        ref = dense(x, t, class_labels=labels).sample
        out = model(x, t, class_labels=labels, width=1.0).sample
    assert (ref - out).abs().max().item() <= 1e-5


def test_from_dense_rejects_unsupported_blocks():
    dense = UNet2DModel(sample_size=16, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=4,
                        down_block_types=("DownBlock2D", "SkipDownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    with pytest.raises(ValueError, match="SkipDownBlock2D"):
        SlimmableUNet.from_dense(dense)


def _narrow_reference(model: SlimmableUNet, width: float) -> UNet2DModel:
    """A dense diffusers UNet2DModel of the narrow shape, with weights cut out of the supernet independently of
    ddsm's slicing code: skip-concat layers take explicit per-part index lists."""
    c = model.config
    f = lambda ch: slim_channels(ch, width, c.channel_divisor)  # noqa: E731
    chans = tuple(f(ch) for ch in c.block_out_channels)
    groups = {ch // (full // c.norm_num_groups) for ch, full in zip(chans, c.block_out_channels)}
    assert len(groups) == 1, "the test needs the same number of groups in every layer"
    levels = len(chans)
    attn = [c.sample_size // 2**i in c.attention_resolutions for i in range(levels)]
    ref = UNet2DModel(
        sample_size=c.sample_size, in_channels=c.in_channels, out_channels=c.out_channels, block_out_channels=chans,
        layers_per_block=c.layers_per_block, norm_num_groups=groups.pop(), attention_head_dim=c.attention_head_dim,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        flip_sin_to_cos=c.flip_sin_to_cos, freq_shift=c.freq_shift, downsample_padding=c.downsample_padding,
        norm_eps=c.norm_eps, num_class_embeds=(c.num_classes + 1) if c.num_classes else None,
        time_embedding_dim=f(4 * c.block_out_channels[0]))
    # Our sinusoidal time input keeps its full size at every width.
    ref.time_proj = Timesteps(c.block_out_channels[0], c.flip_sin_to_cos, c.freq_shift)
    ref.time_embedding.linear_1 = torch.nn.Linear(c.block_out_channels[0], f(4 * c.block_out_channels[0]))

    full = dict(model.state_dict())
    modules = dict(model.named_modules())
    state = {}
    for key, target in ref.state_dict().items():
        src = full[key]
        owner = modules[key.rsplit(".", 1)[0]]
        parts = getattr(owner, "in_parts", None)
        in_dim = 0 if src.ndim == 1 else 1
        if parts is not None and len(parts) == 2 and (src.ndim > 1 or "norm" in key):
            hidden, skip = parts
            idx = list(range(f(hidden))) + list(range(hidden, hidden + f(skip)))
            src = src.index_select(in_dim, torch.tensor(idx))
        index = tuple(slice(0, n) for n in target.shape)
        state[key] = src[index].clone() if src.ndim > 1 else src[: target.shape[0]].clone()
    ref.load_state_dict(state)
    return ref.eval()


@pytest.mark.parametrize("width", WIDTHS)
def test_each_width_equals_an_independently_sliced_dense_model(tiny_unet, width):
    ref = _narrow_reference(tiny_unet, width)
    x, t, y = _inputs()
    with torch.no_grad():
        expected = ref(x, t, class_labels=y).sample
        out = tiny_unet(x, t, class_labels=y, width=width).sample
    assert (expected - out).abs().max().item() <= 1e-5


def test_prefix_slicing_of_skip_concat_would_be_caught(tiny_unet, monkeypatch):
    """The reference test above must fail if the skip concatenation were sliced as one prefix."""
    def prefix_slice(t, dim, full_parts, parts):
        return t if parts == full_parts else t.narrow(dim, 0, sum(parts))

    monkeypatch.setattr(layers_mod, "_slice_parts", prefix_slice)
    ref = _narrow_reference(tiny_unet, 0.5)
    x, t, y = _inputs()
    with torch.no_grad():
        wrong = tiny_unet(x, t, class_labels=y, width=0.5).sample
        expected = ref(x, t, class_labels=y).sample
    assert (expected - wrong).abs().max().item() > 1e-3


# -- static sub-networks and MACs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("width", WIDTHS)
def test_static_subnet_equals_supernet(tiny_unet, width):
    sub = tiny_unet.subnet(width).eval()
    x, t, y = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(sub(x, t, y), tiny_unet(x, t, class_labels=y, width=width).sample,
                                   rtol=0, atol=1e-6)
    conv = sub.up_blocks[0].resnets[0].conv1
    assert conv.weight.shape[:2] == (tiny_unet.plan(width).channels[-1], sum(conv.in_parts))


def test_macs_fall_with_width_and_match_static_subnets(tiny_unet):
    table = macs_table(tiny_unet)
    values = [table[w] for w in WIDTHS]
    assert values == sorted(values) and len(set(values)) == 4
    for w in WIDTHS:
        assert count_macs(tiny_unet.subnet(w)) == table[w]
    no_attn = macs_table(tiny_unet, include_attention=False)
    assert all(no_attn[w] < table[w] for w in WIDTHS)


def test_attention_macs_are_counted_exactly():
    """One attention layer at 8x8 with C channels adds 2 * 64 * 64 * C MACs (Q K^T and A V)."""
    model = SlimmableUNet(**tiny_unet_kwargs(mid_block_attention=False))
    with_attn = macs_table(model, use_cache=False)
    without = macs_table(model, include_attention=False, use_cache=False)
    n_layers = 1 + 2  # one attention after the down block's ResNet, two in the up block (layers_per_block + 1)
    for w in WIDTHS:
        c = model.plan(w).channels[1]
        assert with_attn[w] - without[w] == n_layers * 2 * 64 * 64 * c


def test_macs_table_is_cached(tiny_unet, tmp_path, monkeypatch):
    first = macs_table(tiny_unet, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["config_sha256"] == tiny_unet.config_sha256
    monkeypatch.setattr("ddsm.models.macs.count_macs", lambda *a, **k: pytest.fail("recounted despite the cache"))
    assert macs_table(tiny_unet, cache_dir=tmp_path) == first


def test_cifar10_config_reproduces_ddsm_macs_table():
    """DDSM published 6,070 / 3,420 / 1,520 / 382.5 MMACs (attention matmuls not counted)."""
    from ddsm.config import load_config

    model = load_config("configs/cifar10.yaml").build_model()
    published = {1.0: 6070e6, 0.75: 3420e6, 0.5: 1520e6, 0.25: 382.5e6}
    no_attn = macs_table(model, include_attention=False)
    with_attn = macs_table(model)
    for w, ref in published.items():
        assert abs(no_attn[w] / ref - 1) < 0.02, (w, no_attn[w])
        assert 1.0 < with_attn[w] / no_attn[w] < 1.15
    overhead = {w: with_attn[w] / no_attn[w] for w in published}
    assert overhead[0.25] == max(overhead.values())


# -- save / load and config validation ------------------------------------------------------------------------------

def test_save_load_round_trip(tiny_unet, tmp_path):
    tiny_unet.save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = SlimmableUNet.from_pretrained(tmp_path / "model").eval()
    assert loaded.config_sha256 == tiny_unet.config_sha256
    x, t, y = _inputs()
    with torch.no_grad():
        for w in WIDTHS:
            torch.testing.assert_close(loaded(x, t, y, width=w).sample, tiny_unet(x, t, y, width=w).sample,
                                       rtol=0, atol=0)


@pytest.mark.parametrize("overrides, message", [
    ({"width_choices": (0.3, 1.0), "channel_divisor": 1}, r"width_choices entry 0\.3 cannot be realised"),
    ({"width_choices": (0.5, 0.75)}, r"width_choices.*full width 1\.0"),
    ({"width_choices": (0.5, 0.5, 1.0)}, r"width_choices.*distinct"),
    ({"width_choices": (0.0, 1.0)}, r"width_choices.*\(0, 1\]"),
    ({"norm_num_groups": 5}, r"norm_num_groups=5"),
    ({"norm_channels_per_group": 3}, r"norm_channels_per_group=3"),
    ({"attention_head_dim": 5}, r"attention_head_dim=5"),
    ({"attention_resolutions": (5,)}, r"attention_resolutions"),
    ({"sample_size": 18}, r"sample_size=18"),
    ({"block_out_channels": ()}, r"block_out_channels"),
    ({"dropout": 1.5}, r"dropout=1\.5"),
    ({"num_classes": 0}, r"num_classes=0"),
    ({"width_choices": (0.24, 0.25, 1.0)}, r"0\.24 and 0\.25 give the same channels"),
])
def test_bad_configs_raise_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        SlimmableUNet(**tiny_unet_kwargs(**overrides))


def test_channels_per_group_config():
    model = SlimmableUNet(**tiny_unet_kwargs(norm_channels_per_group=4))
    assert model.down_blocks[1].resnets[0].norm2.num_groups == 8
    x, t, y = _inputs()
    assert model(x, t, y, width=0.25).sample.shape == x.shape


def test_yaml_config_rejects_unknown_keys(tmp_path):
    from ddsm.config import ConfigError, load_config

    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  sample_size: 16\n  widths: [0.5, 1.0]\n")
    with pytest.raises(ConfigError, match=r"\[model\] unknown key\(s\) \['widths'\]"):
        load_config(path)
    path.write_text("model: {sample_size: 16}\ntrain:\n  batchsize: 3\n")
    with pytest.raises(ConfigError, match=r"\[train\] unknown key\(s\) \['batchsize'\]"):
        load_config(path)


def test_shipped_configs_build():
    from ddsm.config import load_config

    cfg = load_config("configs/mnist.yaml")
    model = cfg.build_model()
    assert model.config.sample_size == 16 and model.width_choices == WIDTHS


def test_flops_cli_prints_per_width_json(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("flops_cli", "eval/flops.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    model = SlimmableUNet(**tiny_unet_kwargs())
    model.save_pretrained(tmp_path / "model")
    assert cli.main(["--model", str(tmp_path / "model"), "--time", "--batch", "2", "--repeats", "1",
                     "--output", str(tmp_path / "flops.json")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((tmp_path / "flops.json").read_text())
    rows = {r["width"]: r for r in report["widths"]}
    assert rows[1.0]["macs_ratio"] == 1.0 and rows[0.25]["macs"] == macs_table(model)[0.25]
    assert all(r["time_s"] > 0 and r["static_time_s"] > 0 for r in rows.values())
    assert cli.main(["--model", str(tmp_path / "nowhere")]) == 2
    assert "not a SlimmableUNet directory" in capsys.readouterr().err
