"""Mega-NeRF's evaluation protocol: appearance codes fitted on the left half of a held-out photo.

A held-out photo has no appearance code of its own. Rendered with the mean code, its exposure
and white balance differences count as errors of the reconstruction. Mega-NeRF (Turki et al.,
2022) instead fits the photo's code on the left half of its pixels, with the model frozen, and
scores the right half only: the code learns the photo's lighting but never sees a scored pixel.

Here a pixel's colour is a blend of blocks, ``rgb(p) = sum_b w_b(p) rgb_b(p; a_b)``, and every
block has its own code space, so one fresh code ``a_b`` per block of the view is fitted, all of
them jointly through that same blend (a block's code is pulled by the pixels it colours, in
proportion to its weight). The weights ``w_b`` are the final ones of the view's mean-code render
(:attr:`birdnerf.composite.ViewRender.weights`): they follow from depths, i.e. densities, which
codes do not change, so they are also the weights of the render with the fitted codes. For the
same reason each block's samples, their volume-rendering weights and colour-MLP inputs are
computed once (:meth:`birdnerf.block.model.BlockModel.freeze`); an Adam step is then one
colour-MLP pass per block, and the loss sees the colours the final render gives for those
pixels (to within the renderer's early-termination tolerance). A block with no weight on the
left half gets no gradient and keeps its mean code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from birdnerf.block.model import BlockModel, FrozenRays
from birdnerf.composite.cache import BlockCache
from birdnerf.composite.view import MIN_WEIGHT
from birdnerf.partition.manifest import Partition
from birdnerf.scene.camera import Camera, camera_rays, pixel_centers


@dataclass(frozen=True)
class AppearanceFit:
    """How the codes of a held-out photo are fitted (Adam on the left half's pixels)."""

    steps: int = 100
    """Adam steps."""
    rays: int = 1024
    """Random left-half pixels (drawn once, without replacement); every step uses all of them.
    A code has only a few dozen values: on the test survey 1,024 pixels fit it as well as 4,096,
    in a quarter of the time."""
    lr: float = 0.3
    """Adam's learning rate. Adam moves a code by up to about ``lr`` per step and dimension; a
    photo 0.7x darker than the training photos needs moves of several units per dimension (on
    the test survey 32 steps at 0.03 recovered 0.9 dB of the 8.5 dB lost, 100 steps at 0.3 all
    of it)."""
    seed: int = 0
    """Seed of the pixel draws: the same photo and seed give the same codes."""


def left_width(width: int) -> int:
    """Columns ``[0, width // 2)`` are the left half (fitted); the rest is the right half (scored)."""
    return width // 2


class _Share(NamedTuple):
    """The drawn pixels one block colours: ``pred[rows] += weight * model.render_frozen(rays, code)``."""

    model: BlockModel
    block_id: str
    rows: Tensor
    weight: Tensor
    rays: FrozenRays


def fit_appearance(
    partition: Partition,
    cache: BlockCache,
    cam: Camera,
    c2w: np.ndarray,
    target: Tensor,
    weights: dict[str, Tensor],
    fit: AppearanceFit = AppearanceFit(),
) -> dict[str, Tensor]:
    """Codes (A,) per block id fitted to the left half of ``target`` (H, W, 3), colours in [0, 1].

    ``weights`` are the view's blend weights (block id -> (H, W)), i.e. ``render_view(...).weights``;
    pass the result to ``render_view(..., appearance=...)``. ``fit.rays`` left-half pixels are
    drawn once (fewer if the half is smaller) and every Adam step uses all of them; each code
    starts from its block's mean code. Only the columns left of :func:`left_width` are read from
    ``target``. Blocks without appearance codes are left out of the result but still add their
    colours to the blend. The cached models are not modified (gradients go to the codes alone).
    """
    half = left_width(cam.width)
    truth = target[:, :half].reshape(-1, 3).float()
    generator = torch.Generator().manual_seed(fit.seed)
    pixels = torch.randperm(truth.shape[0], generator=generator)[: fit.rays]
    truth = truth[pixels]
    origins, dirs = camera_rays(cam, torch.from_numpy(c2w), pixel_centers(cam, torch.float64)[:, :half])
    origins, dirs = origins.reshape(-1, 3)[pixels].float(), dirs.reshape(-1, 3)[pixels].float()
    by_id = {b.id: b for b in partition.blocks}
    shares: list[_Share] = []
    codes: dict[str, Tensor] = {}
    for block_id, w in weights.items():
        model = cache.get(by_id[block_id])
        mean = model.field.appearance(None)  # None: the block has no appearance codes
        if mean is not None:
            codes[block_id] = mean[0].detach().clone().requires_grad_(True)
        w = w[:, :half].reshape(-1)[pixels]
        rows = torch.nonzero(w > MIN_WEIGHT).flatten()
        if rows.numel():
            frozen = model.freeze(origins[rows], dirs[rows])
            shares.append(_Share(model, block_id, rows, w[rows, None], frozen))
    seen = {share.block_id for share in shares}
    fitted = [code for block_id, code in codes.items() if block_id in seen]
    if fitted:
        optimizer = torch.optim.Adam(fitted, lr=fit.lr)
        for _ in range(fit.steps):
            pred = torch.zeros_like(truth)
            for share in shares:
                rgb = share.model.render_frozen(share.rays, codes.get(share.block_id))
                pred = pred.index_add(0, share.rows, share.weight * rgb.to(pred.device))
            loss = torch.mean((pred - truth) ** 2)
            for code, grad in zip(fitted, torch.autograd.grad(loss, fitted), strict=True):
                code.grad = grad
            optimizer.step()
    return {block_id: code.detach() for block_id, code in codes.items()}
