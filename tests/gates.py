"""Trivial predictions that quality assertions must beat by a margin.

A fixed floor (``psnr > 14``) is passed by a flat grey image; a margin over what needs no model at
all -- each photo's mean colour, a flat plane at ground height -- is not.
"""

from __future__ import annotations

import numpy as np
import torch

from birdnerf.eval.metrics import mean_color_baseline, psnr, ssim
from birdnerf.scene.camera import camera_rays, pixel_centers
from birdnerf.scene.scene import Scene

GREY = 0.5
"""The flat image a fixed floor let through."""
ABOVE_GROUND_M = 1.0
"""Pixels whose true surface is this far above the ground are where geometry shows."""


def image_scores(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """PSNR (dB) and SSIM of ``pred``, of the photo's mean-colour image and of flat grey."""
    base, grey = mean_color_baseline(target), torch.full_like(target, GREY)
    return {
        "psnr": psnr(pred, target),
        "ssim": ssim(pred, target),
        "baseline_psnr": psnr(base, target),
        "baseline_ssim": ssim(base, target),
        "grey_psnr": psnr(grey, target),
        "grey_ssim": ssim(grey, target),
    }


def mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    """Each figure averaged over photos."""
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def depth_errors(
    scene: Scene,
    index: int,
    depth: np.ndarray,
    ground_z: float,
    truth: np.ndarray | None = None,
    above: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Absolute z-depth errors (metres) of ``depth`` (H, W) and of a flat plane at ``ground_z``,
    on the pixels of photo ``index`` whose true surface stands ``ABOVE_GROUND_M`` over the ground
    (roofs, trees: where a plane is wrong and geometry must be learned).

    ``truth`` is the true z-depth (default: the scene's depth map of the photo); ``above`` the
    (H, W) pixels to score (default: true surface above the flat ground ``ground_z``; on terrain,
    pass the pixels above the terrain)."""
    cam = scene.cameras[index]
    c2w = torch.from_numpy(scene.c2w[index])
    o, d = camera_rays(cam, c2w, pixel_centers(cam, torch.float64))
    o, d = o.numpy(), d.numpy()
    cos = d @ c2w[:3, 2].numpy()  # z-depth per metre along the ray
    if truth is None:
        truth = np.load(scene.depth_paths[index], allow_pickle=False)
    truth = truth.astype(np.float64)
    plane = (ground_z - o[..., 2]) / d[..., 2] * cos
    if above is None:
        above = o[..., 2] + d[..., 2] * truth / cos > ground_z + ABOVE_GROUND_M
    return np.abs(depth - truth)[above], np.abs(plane - truth)[above]
