"""Fidelity to the full model: PSNR and SSIM between image batches in [-1, 1], pure torch.

Used as AdaptiveDiffusion and Flexiffusion use it: sample the same seeds with the full-width schedule and with a
cheaper one, and compare the two images of each seed. Every function returns per-image values (N,); take
``.mean()`` for the summary, or use :func:`fidelity_summary` for a JSON-ready dict.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F

DATA_RANGE = 2.0  # images in [-1, 1]
PSNR_CAP_DB = 100.0  # identical images have infinite PSNR; summaries cap each image at this value (JSON has no inf)


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape:
        raise ValueError(f"image batches differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim == 3:
        a, b = a.unsqueeze(0), b.unsqueeze(0)
    if a.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W) or (C, H, W), got shape {tuple(a.shape)}")
    return a, b


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = DATA_RANGE) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, in dB: 10 log10(data_range^2 / MSE), MSE over (C, H, W).

    Returns (N,) float64; identical images give ``inf``.
    """
    a, b = _check_pair(a, b)
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)  # (N,)
    return 10.0 * torch.log10(data_range**2 / mse)  # 1/0 -> inf


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()  # (size,)


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    data_range: float = DATA_RANGE,
    win_size: Optional[int] = None,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004), in (-1, 1]; returns (N,) float64.

    The standard setting: an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, L = ``data_range`` (2 for
    [-1, 1]); local statistics over the "valid" windows only (no padding, as the reference MATLAB code), each
    channel separately; the SSIM map is averaged over positions and channels. Images smaller than 11 pixels (e.g. 8x8
    digits) get the largest odd window that fits, with sigma scaled by ``win / 11``, unless ``win_size`` is given.
    """
    a, b = _check_pair(a, b)
    height, width = a.shape[-2:]
    if win_size is None:
        win_size = min(11, height, width)
        win_size -= 1 - win_size % 2  # odd
        sigma = sigma * win_size / 11
    if win_size < 1 or win_size % 2 == 0 or win_size > min(height, width):
        raise ValueError(f"win_size must be odd and at most the image size {height}x{width}, got {win_size}")
    x, y = a.double(), b.double()
    channels = x.shape[1]
    g = _gaussian_window(win_size, sigma, x.dtype, x.device)
    kernel_h = g.view(1, 1, 1, -1).expand(channels, 1, 1, win_size)
    kernel_v = g.view(1, 1, -1, 1).expand(channels, 1, win_size, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable Gaussian, valid region, per channel
        return F.conv2d(F.conv2d(t, kernel_h, groups=channels), kernel_v, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov_xy = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1)  # (N,)


def fidelity_summary(images: torch.Tensor, reference: torch.Tensor) -> Dict[str, float]:
    """PSNR / SSIM of ``images`` against ``reference`` (same seeds, full model) as plain floats for reports.

    ``psnr`` is the mean of per-image PSNR with each image capped at :data:`PSNR_CAP_DB` (identical images would
    otherwise make the mean infinite); ``num_identical`` counts the images that hit the cap.
    """
    p = psnr(images, reference)
    s = ssim(images, reference)
    return {
        "psnr": float(p.clamp(max=PSNR_CAP_DB).mean()),
        "psnr_min": float(p.min().clamp(max=PSNR_CAP_DB)),
        "ssim": float(s.mean()),
        "ssim_min": float(s.min()),
        "num_images": int(p.numel()),
        "num_identical": int(torch.isinf(p).sum()),
    }

