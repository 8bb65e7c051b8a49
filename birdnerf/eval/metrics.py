"""Image quality metrics: PSNR and SSIM (LPIPS only where its weights are available locally), and
the trivial baseline every score is read against.

A score alone says little: a flat grey image reaches 14 dB on a typical aerial photo, and the
photo's own mean colour more. :func:`mean_color_baseline` is that image (every pixel the mean
colour of the scored pixels); a model that does not beat it by :data:`MIN_MARGIN_DB` has learned
nothing useful about the scene.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

MIN_MARGIN_DB = 1.0
"""PSNR (dB) a model must gain over the mean-colour baseline of the same pixels to count as having
learned the scene; below it, renders are little more than each photo's average colour."""


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error of colours in [0, 1] (NaN stays NaN; floored at 100 dB)."""
    return -10.0 * math.log10(max(mse, 1e-10)) if mse == mse else float("nan")


def psnr(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> float:
    """Peak signal-to-noise ratio in dB of colours in [0, 1]; ``mask`` (H, W) limits the pixels."""
    err = (pred.float() - target.float()) ** 2
    if mask is not None:
        err = err[mask]
    return psnr_from_mse(float(err.mean()) if err.numel() else float("nan"))


def mean_color_baseline(target: Tensor, mask: Tensor | None = None) -> Tensor:
    """The mean-colour image of ``target`` (..., 3): every pixel the mean colour of the pixels
    ``mask`` (...) selects (all by default), colours in [0, 1]. Same shape as ``target``; works on
    images (H, W, 3) and on pixel lists (N, 3)."""
    pixels = target.float().reshape(-1, 3) if mask is None else target.float()[mask]
    return pixels.mean(dim=0).expand_as(target).clone()


def baseline_psnr(target: Tensor, mask: Tensor | None = None) -> float:
    """PSNR in dB of :func:`mean_color_baseline` against ``target`` over the same pixels."""
    return psnr(mean_color_baseline(target, mask), target, mask)


def psnr_vs_baseline(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> dict[str, float]:
    """PSNR (dB) of ``pred`` and of the mean-colour baseline over the same pixels of ``target``.

    Returns ``{"psnr", "baseline_psnr", "margin_db"}``; ``margin_db`` = psnr - baseline_psnr, to be
    compared with :data:`MIN_MARGIN_DB`.
    """
    score, base = psnr(pred, target, mask), baseline_psnr(target, mask)
    return {"psnr": score, "baseline_psnr": base, "margin_db": score - base}


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
