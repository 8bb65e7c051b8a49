"""A trained block's score on its held-out pixels, read against the mean-colour baseline.

A block whose geometry is wrong (bad poses, a wrong ground height) still trains: its loss falls
to what the photos' average colour explains and its PSNR looks plausible. Only the comparison
with the mean colour of the same pixels shows that it learned nothing, so every finished block
records both (``done.json``'s ``quality``).
"""

from __future__ import annotations

import torch

from birdnerf.block.model import BlockModel
from birdnerf.eval.metrics import psnr_vs_baseline
from birdnerf.partition.manifest import Block
from birdnerf.scene.scene import Scene
from birdnerf.train.pixels import BlockPixels, held_out_pixels

QUALITY_RAYS = 4096
"""Most pixels scored per block: about a second of rendering on a CPU, and a PSNR known to
within ~0.1 dB."""
QUALITY_SEED = 0
"""Seed of the subsample: fixed, so a block's figures do not depend on its training seed."""


def subsample(n: int, k: int, seed: int = QUALITY_SEED) -> torch.Tensor:
    """Sorted indices of ``min(n, k)`` of ``n`` items, the same for the same arguments."""
    if n <= k:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


def block_quality(
    model: BlockModel,
    scene: Scene,
    block: Block,
    training: BlockPixels,
    max_rays: int = QUALITY_RAYS,
) -> dict:
    """PSNR (dB) of ``model`` and of the mean-colour baseline on the block's held-out pixels.

    Scored are the pixels of the block's test photos that belong to it (a deterministic subsample
    of at most ``max_rays``), rendered with the mean appearance code as an unseen photo would be.
    A block without test photos is scored on its ``training`` pixels instead, each with its own
    photo's code, which flatters it; ``scored`` says which.

    Returns ``{"psnr", "baseline_psnr", "margin_db", "scored": "held-out"|"training", "pixels"}``.
    """
    held_out = held_out_pixels(scene, block, block.test_images) if block.test_images else None
    if held_out is not None and len(held_out) > 0:
        rays, scored = held_out, "held-out"
    else:
        rays, scored = training, "training"
    pick = subsample(len(rays), max_rays)
    batch = rays.batch(pick)
    ids = batch.image_ids if scored == "training" else None
    pred = model.render_eval(batch.origins, batch.dirs, ids).rgb
    return {**psnr_vs_baseline(pred, batch.rgb), "scored": scored, "pixels": int(len(pick))}
