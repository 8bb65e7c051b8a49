"""Image quality metrics: PSNR and SSIM (LPIPS only where its weights are available locally)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def psnr(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> float:
    """Peak signal-to-noise ratio in dB of colours in [0, 1]; ``mask`` (H, W) limits the pixels."""
    err = (pred.float() - target.float()) ** 2
    if mask is not None:
        err = err[mask]
    mse = float(err.mean()) if err.numel() else float("nan")
    return -10.0 * math.log10(max(mse, 1e-10)) if mse == mse else float("nan")


def _gaussian(size: int = 11, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(pred: Tensor, target: Tensor, size: int = 11, sigma: float = 1.5) -> Tensor:
    """Per-pixel SSIM (Wang et al. 2004; Gaussian window 11, sigma 1.5) of (H, W, 3) images.

    Returns an (H - size + 1, W - size + 1) map ("valid" convolution, averaged over channels).
    """
    c1, c2 = 0.01**2, 0.03**2
    x = pred.double().permute(2, 0, 1)[:, None]  # (3, 1, H, W)
    y = target.double().permute(2, 0, 1)[:, None]
    g = _gaussian(size, sigma)
    kernel = (g[:, None] * g[None, :])[None, None]

    def blur(img: Tensor) -> Tensor:
        return F.conv2d(img, kernel)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (num / den).mean(dim=0)[0]


def ssim(pred: Tensor, target: Tensor, mask: Tensor | None = None, size: int = 11) -> float:
    """Mean SSIM of (H, W, 3) images in [0, 1]; ``mask`` (H, W) selects window centres."""
    m = ssim_map(pred, target, size)
    if mask is not None:
        r = size // 2
        m = m[mask[r : r + m.shape[0], r : r + m.shape[1]]]
    return float(m.mean()) if m.numel() else float("nan")


def lpips_unavailable_reason() -> str | None:
    """Why LPIPS cannot be computed here, or None if it can (never downloads weights)."""
    try:
        import lpips  # noqa: F401
    except ImportError:
        return "the 'lpips' package is not installed"
    return "LPIPS weights are not bundled with birdnerf (no download is attempted)"
