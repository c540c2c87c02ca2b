"""The domain feature network: a small CNN classifier (:class:`DomainClassifier`) whose penultimate layer gives the
features, and :class:`DomainFeatures`, a trained one used as a named feature network (see :mod:`.domain` for its
training and cache)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ARCH", "DomainClassifierConfig", "DomainClassifier", "DomainFeatures"]

ARCH = "cnn-v1"
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class DomainClassifierConfig:
    in_channels: int = 1  # input is converted to this: RGB -> gray by luma, gray -> RGB by repeating
    input_size: int = 28  # every input is resized (bilinear) to input_size x input_size; divisible by 4
    channels: Tuple[int, int] = (16, 32)  # conv widths of the two stages (two 3x3 convs each, then 2x2 max pool)
    feature_dim: int = 128  # width of the penultimate layer: the features
    num_classes: int = 10
    dropout: float = 0.3  # before the classifier head (training only)

    def __post_init__(self):
        if self.input_size % 4 != 0:
            raise ValueError(f"input_size must be divisible by 4 (two 2x2 pools), got {self.input_size}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DomainClassifier(nn.Module):
    """Two conv stages (conv-BN-ReLU x2, max pool) -> Linear (the features) -> ReLU -> dropout -> Linear (logits).

    Input: images in [-1, 1], (N, C, H, W), any C in {1, 3} and any size.
    """

    def __init__(self, config: DomainClassifierConfig = DomainClassifierConfig()):
        super().__init__()
        self.config = config
        c1, c2 = config.channels
        self.body = nn.Sequential(
            _conv_bn_relu(config.in_channels, c1),
            _conv_bn_relu(c1, c1),
            nn.MaxPool2d(2),  # input_size / 2
            _conv_bn_relu(c1, c2),
            _conv_bn_relu(c2, c2),
            nn.MaxPool2d(2),  # input_size / 4
        )
        self.embed = nn.Linear(c2 * (config.input_size // 4) ** 2, config.feature_dim)
        self.head = nn.Sequential(
            nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(config.feature_dim, config.num_classes)
        )

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Channels and size as the network expects: (N, in_channels, input_size, input_size)."""
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        x = images.float()
        channels, want = x.shape[1], self.config.in_channels
        if channels != want:
            if channels == 3 and want == 1:  # ITU-R 601-2 luma, as ddsm.data converts RGB
                x = torch.einsum("nchw,c->nhw", x, x.new_tensor(_LUMA)).unsqueeze(1)
            elif channels == 1 and want == 3:
                x = x.expand(-1, 3, -1, -1)
            else:
                raise ValueError(f"images have {channels} channels; this classifier takes 1 or 3 (uses {want})")
        size = self.config.input_size
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return x

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features (before its ReLU), (N, feature_dim)."""
        return self.embed(self.body(self.preprocess(images)).flatten(1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))  # (N, num_classes) logits


class DomainFeatures(nn.Module):
    """A trained :class:`DomainClassifier` used as a feature network: images in [-1, 1] -> (N, feature_dim).

    ``name`` identifies the network in reports (e.g. ``"mnist-5k-16px-cnn-v1-3fa2b1c0"``: data set, resolution,
    architecture, the first 8 hex digits of the weights' sha256); ``test_accuracy`` is its held-out accuracy when
    known; ``info`` what its cache entry records (the key, the held-out images under ``"held_out"``...), or ``{}``.
    """

    def __init__(self, classifier: DomainClassifier, name: str, test_accuracy: Optional[float] = None,
                 info: Optional[Dict[str, Any]] = None):
        super().__init__()
        self.classifier = classifier
        self.name = name
        self.test_accuracy = test_accuracy
        self.info = dict(info or {})
        self.feature_dim = classifier.config.feature_dim
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "DomainFeatures":
        return super().train(False)  # a fixed feature extractor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images)
