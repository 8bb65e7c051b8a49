"""The mean-colour baseline every quality figure is read against."""

import pytest
import torch

from birdnerf.eval.metrics import (
    MIN_MARGIN_DB,
    baseline_psnr,
    mean_color_baseline,
    psnr,
    psnr_vs_baseline,
    ssim,
)


def _photo() -> torch.Tensor:
    """A (24, 32, 3) image with structure (a gradient and a bright square) and noise."""
    g = torch.Generator().manual_seed(0)
    y, x = torch.meshgrid(torch.linspace(0, 1, 24), torch.linspace(0, 1, 32), indexing="ij")
    img = torch.stack([0.2 + 0.5 * x, 0.3 + 0.3 * y, 0.4 + 0.2 * x * y], dim=-1)
    img[6:14, 10:20] = torch.tensor([0.9, 0.8, 0.2])
    return (img + 0.05 * torch.randn(img.shape, generator=g)).clamp(0, 1)


def test_the_mean_colour_image_scores_the_baseline():
    target = _photo()
    base = mean_color_baseline(target)
    assert base.shape == target.shape
    assert torch.allclose(base, target.reshape(-1, 3).mean(0).expand_as(target))
    assert psnr(base, target) == pytest.approx(baseline_psnr(target))
    figures = psnr_vs_baseline(base, target)
    assert figures["psnr"] == pytest.approx(figures["baseline_psnr"])
    assert figures["margin_db"] == pytest.approx(0.0, abs=1e-9)


def test_no_constant_image_beats_the_baseline():
    target = _photo()
    base = baseline_psnr(target)
    for grey in (0.0, 0.3, 0.5, 0.7, 1.0):
        flat = torch.full_like(target, grey)
        assert psnr(flat, target) < base
        assert psnr_vs_baseline(flat, target)["margin_db"] < MIN_MARGIN_DB
    assert ssim(torch.full_like(target, 0.5), target) <= ssim(mean_color_baseline(target), target) + 1e-6


def test_a_good_prediction_clears_the_margin():
    target = _photo()
    near = (target + 0.02 * torch.randn(target.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert psnr_vs_baseline(near, target)["margin_db"] > 10.0


def test_masks_and_pixel_lists_use_only_the_scored_pixels():
    target = _photo()
    right = torch.zeros(target.shape[:2], dtype=torch.bool)
    right[:, 16:] = True
    base = mean_color_baseline(target, right)
    assert torch.allclose(base[0, 0], target[right].mean(0))  # unscored pixels hold the same colour
    assert baseline_psnr(target, right) == pytest.approx(baseline_psnr(target[:, 16:]))
    assert baseline_psnr(target[right]) == pytest.approx(baseline_psnr(target, right))
