"""The SlimmableUNet's config: validation (every field, and every width against the built layers), and conversion
from a dense diffusers ``UNet2DModel``'s config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from ..utils import PathLike

from .blocks import AttentionBlock
from .layers import SlimGroupNorm, slim_channels

__all__ = ["validate_config", "validate_widths", "config_from_dense", "dense_width_choices", "load_dense",
           "WIDTH_CANDIDATES"]

WIDTH_CANDIDATES = (0.25, 0.5, 0.75, 1.0)  # what from_dense tries when no width_choices are given


def _fail(field: str, value, expected: str) -> None:
    raise ValueError(f"SlimmableUNet config: {field}={value!r} is invalid: expected {expected}")


def validate_config(c) -> None:
    """Raise ``ValueError`` naming the first invalid field of a SlimmableUNet config ``c``, with what it expects."""
    _check_sizes(c)
    _check_width_choices(list(c.width_choices))
    _check_groups_and_heads(c)


def _check_sizes(c) -> None:
    chans = list(c.block_out_channels)
    if not chans or any(not isinstance(x, int) or x <= 0 for x in chans):
        _fail("block_out_channels", c.block_out_channels, "a non-empty list of positive ints")
    for field in ("sample_size", "in_channels", "out_channels", "layers_per_block", "channel_divisor"):
        v = getattr(c, field)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            _fail(field, v, "a positive int")
    if c.sample_size % 2 ** (len(chans) - 1):
        _fail("sample_size", c.sample_size, f"divisible by 2**{len(chans) - 1} for {len(chans)} levels")
    sizes = [c.sample_size // 2**i for i in range(len(chans))]
    for r in c.attention_resolutions:
        if r not in sizes:
            _fail("attention_resolutions", list(c.attention_resolutions), f"sizes among the levels' {sizes}")
    if not 0.0 <= c.dropout < 1.0:
        _fail("dropout", c.dropout, "a float in [0, 1)")
    if c.num_classes is not None and (not isinstance(c.num_classes, int) or c.num_classes <= 0):
        _fail("num_classes", c.num_classes, "None or a positive int")
    if c.attention_head_dim is not None and (not isinstance(c.attention_head_dim, int) or c.attention_head_dim <= 0):
        _fail("attention_head_dim", c.attention_head_dim, "None or a positive int")


def _check_width_choices(widths: list) -> None:
    if not widths or any(isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w <= 1 for w in widths):
        _fail("width_choices", widths, "a non-empty list of floats in (0, 1]")
    if len(set(float(w) for w in widths)) != len(widths):
        _fail("width_choices", widths, "distinct widths")
    if max(widths) != 1.0:
        _fail("width_choices", widths, "the full width 1.0 among them")


def _check_groups_and_heads(c) -> None:
    chans = list(c.block_out_channels)
    sizes = [c.sample_size // 2**i for i in range(len(chans))]
    cpg = c.norm_channels_per_group
    temb = c.time_embedding_dim or 4 * chans[0]
    groups_field, group_size = ("norm_channels_per_group", cpg) if cpg else ("norm_num_groups", c.norm_num_groups)
    if not isinstance(group_size, int) or group_size <= 0 or any(ch % group_size for ch in chans):
        _fail(groups_field, group_size, f"a positive divisor of every block_out_channels {chans}")
    head = c.attention_head_dim
    attn_chans = [chans[i] for i in range(len(chans)) if sizes[i] in set(c.attention_resolutions)]
    attn_chans += [chans[-1]] if c.mid_block_attention else []
    if head and any(ch % head for ch in attn_chans):
        _fail("attention_head_dim", head, f"a divisor of the attention layers' channels {attn_chans}")
    if temb <= 0:
        _fail("time_embedding_dim", c.time_embedding_dim, "a positive int")


def validate_widths(model) -> None:
    """Every width of a built :class:`SlimmableUNet` must give whole GroupNorm groups and attention heads in every
    layer, and the widths must give distinct networks."""
    c = model.config
    seen: Dict[Tuple[Tuple[int, ...], int], float] = {}
    for w in model.width_choices:
        for name, m in model.named_modules():
            _check_layer(name, m, w, c)
        plan = model.plan(w)
        key = (plan.channels, plan.temb)
        if key in seen:
            raise ValueError(f"SlimmableUNet config: width_choices entries {seen[key]} and {w} give the same "
                             f"channels {plan.channels} after rounding to channel_divisor={c.channel_divisor}")
        seen[key] = w


def _check_layer(name: str, m, w: float, c) -> None:
    """Raise if layer ``name`` of a model with config ``c`` has no whole groups or heads at width ``w``."""
    f = lambda ch: slim_channels(ch, w, c.channel_divisor)  # noqa: E731
    if isinstance(m, SlimGroupNorm):
        if m.num_channels % m.num_groups:
            _fail("norm_num_groups", c.norm_num_groups,
                  f"a divisor of the {m.num_channels} channels of {name}")
        active = sum(f(p) for p in m.in_parts)
        if active % m.channels_per_group:
            raise ValueError(
                f"SlimmableUNet config: width_choices entry {w} cannot be realised: {name} has "
                f"{active} channels at that width (parts {[f(p) for p in m.in_parts]}, channel_divisor="
                f"{c.channel_divisor}), not a multiple of its {m.channels_per_group} channels per group")
    elif isinstance(m, AttentionBlock) and m.head_dim:
        ch = f(m.to_q.out_features)
        if ch % m.head_dim:
            raise ValueError(
                f"SlimmableUNet config: width_choices entry {w} cannot be realised: {name} has {ch} "
                f"channels at that width, not a multiple of attention_head_dim={m.head_dim}")


def _width_problem(model, w: float) -> Optional[str]:
    """Why ``model`` (built at width 1.0 only) cannot run at width ``w``, or None."""
    try:
        for name, m in model.named_modules():
            _check_layer(name, m, w, model.config)
    except ValueError as e:
        return str(e).split("cannot be realised: ")[-1]
    return None


def _distinct(model, widths: Sequence[float]) -> Tuple[float, ...]:
    """``widths`` without those giving the same channels as an earlier one (no new network)."""
    c = model.config
    temb = c.time_embedding_dim or 4 * c.block_out_channels[0]
    seen, out = set(), []
    for w in widths:
        key = tuple(slim_channels(ch, w, c.channel_divisor) for ch in (*c.block_out_channels, temb))
        if key not in seen:
            seen.add(key)
            out.append(w)
    return tuple(out)


def dense_width_choices(build: Callable, config: dict, width_choices: Optional[Sequence[float]]) -> Tuple[float, ...]:
    """The width choices of a supernet converted from a dense UNet (``config``: ours, its width choices ignored;
    ``build``: the model class): ``width_choices`` when every one can be realised (whole GroupNorm groups and
    attention heads in every layer), else a ValueError listing the feasible ones. ``None`` picks the feasible,
    distinct ones of :data:`WIDTH_CANDIDATES`, and raises when none is narrower than 1.0."""
    if width_choices is not None:
        _check_width_choices(list(width_choices))
    with torch.device("meta"):  # layer shapes only: nothing allocated
        probe = build(**dict(config, width_choices=(1.0,)))
    asked = WIDTH_CANDIDATES if width_choices is None else tuple(float(w) for w in width_choices)
    problems = {w: _width_problem(probe, w) for w in sorted(set(asked) | set(WIDTH_CANDIDATES))}
    feasible = [w for w, why in problems.items() if why is None]
    bad = [w for w in asked if problems[w] is not None]
    where = (f"this UNet2DModel (block_out_channels={list(config['block_out_channels'])}, "
             f"norm_num_groups={config['norm_num_groups']}, attention_head_dim={config['attention_head_dim']}, "
             f"channel_divisor={config['channel_divisor']})")
    reasons = "; ".join(f"width {w}: {problems[w]}" for w in bad)
    if width_choices is not None:
        if bad:
            raise ValueError(f"from_dense: width_choices {bad} cannot be realised for {where}: {reasons}. "
                             f"Feasible widths: {feasible}")
        return asked
    chosen = _distinct(probe, [w for w in asked if problems[w] is None])
    if len(chosen) < 2:
        raise ValueError(f"from_dense: no width narrower than 1.0 among {list(WIDTH_CANDIDATES)} can be realised "
                         f"for {where}: {reasons}. Feasible widths: {list(chosen)} (at a width, every layer needs a "
                         "multiple of its GroupNorm channels per group and of attention_head_dim); pass "
                         "width_choices=(1.0,) to convert it at full width only (schedules of full width and skips)")
    return chosen


def load_dense(path: PathLike):
    """A dense diffusers ``UNet2DModel`` from a local ``save_pretrained`` folder, or with random weights from just
    its ``config.json`` (enough to convert a layout and count its MACs)."""
    from diffusers import UNet2DModel

    p = Path(path)
    config_file = p if p.is_file() else p / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{str(path)!r} is neither a UNet2DModel folder (no config.json there) nor a config "
                                "file; expected a folder written by UNet2DModel.save_pretrained or its config.json")
    config = json.loads(config_file.read_text())
    if config.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise ValueError(f"{str(path)!r} holds a {config['_class_name']}; expected a UNet2DModel (the DDPM/LDM "
                         "UNet); other UNets are not supported")
    if p.is_file():
        return UNet2DModel.from_config(config).eval()
    return UNet2DModel.from_pretrained(p, local_files_only=True).eval()


_DENSE_DEFAULTS = dict(center_input_sample=False, time_embedding_type="positional", downsample_type="conv",
                       upsample_type="conv", act_fn="silu", resnet_time_scale_shift="default", class_embed_type=None)


def config_from_dense(dc, width_choices: Sequence[float], channel_divisor: int) -> dict:
    """Our config for a dense diffusers UNet2DModel's config; raises on layouts we cannot reproduce exactly."""
    for key, expected in _DENSE_DEFAULTS.items():
        if dc.get(key, expected) != expected:
            raise ValueError(f"from_dense: UNet2DModel {key}={dc[key]!r} is not supported (expected {expected!r})")
    down, up = list(dc["down_block_types"]), list(dc["up_block_types"])
    allowed_down, allowed_up = {"DownBlock2D", "AttnDownBlock2D"}, {"UpBlock2D", "AttnUpBlock2D"}
    if set(down) - allowed_down or set(up) - allowed_up:
        raise ValueError(f"from_dense: block types {down} / {up} are not supported "
                         f"(expected {sorted(allowed_down)} / {sorted(allowed_up)})")
    attn = [t.startswith("Attn") for t in down]
    if attn != [t.startswith("Attn") for t in reversed(up)]:
        raise ValueError(f"from_dense: attention must sit at the same levels down and up; got {down} and {up}")
    if dc.get("mid_block_type", "UNetMidBlock2D") != "UNetMidBlock2D":
        raise ValueError(f"from_dense: mid_block_type={dc['mid_block_type']!r} is not supported "
                         "(expected 'UNetMidBlock2D')")
    attn_groups = dc.get("attn_norm_num_groups")
    if attn_groups not in (None, dc["norm_num_groups"]):
        raise ValueError(f"from_dense: attn_norm_num_groups={attn_groups} differs from norm_num_groups="
                         f"{dc['norm_num_groups']}; not supported")
    size = dc["sample_size"]
    if not isinstance(size, int):
        raise ValueError(f"from_dense: sample_size={size!r} must be one int (square samples)")
    return dict(
        sample_size=size, in_channels=dc["in_channels"], out_channels=dc["out_channels"],
        block_out_channels=tuple(dc["block_out_channels"]), layers_per_block=dc["layers_per_block"],
        attention_resolutions=tuple(size // 2**i for i, a in enumerate(attn) if a),
        mid_block_attention=dc.get("add_attention", True), attention_head_dim=dc.get("attention_head_dim"),
        dropout=dc.get("dropout", 0.0), norm_num_groups=dc["norm_num_groups"], norm_eps=dc["norm_eps"],
        num_classes=dc.get("num_class_embeds"), width_choices=tuple(width_choices), channel_divisor=channel_divisor,
        flip_sin_to_cos=dc["flip_sin_to_cos"], freq_shift=dc["freq_shift"],
        downsample_padding=dc["downsample_padding"], time_embedding_dim=dc.get("time_embedding_dim"),
        mid_block_scale_factor=float(dc.get("mid_block_scale_factor", 1.0)),
    )
