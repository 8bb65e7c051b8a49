"""Projection-guided rendering of a novel view from the blocks that own its pixels.

Pass 1: each pixel's ray is cut by the ground plane; the bird-view point gives blending weights
over blocks (:mod:`birdnerf.composite.blend`); every block with a non-zero weight renders those
pixels, and colours and depths are blended. Pass 2 (depth-guided): the rendered surface point
``o + depth * d`` is projected to bird view again; where tall structures or oblique rays put the
true surface in another block, the weights are recomputed there and the missing blocks render
the pixels they now own. Only blocks with non-zero weight are ever loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from birdnerf.composite.blend import block_weights
from birdnerf.composite.cache import BlockCache
from birdnerf.partition.manifest import Partition
from birdnerf.scene.camera import Camera, camera_rays, pixel_centers
from birdnerf.torch_globals import keep_torch_globals
from birdnerf.train.data import ground_points

MIN_WEIGHT = 1e-6


@dataclass
class ViewRender:
    """A rendered view.

    Attributes:
        rgb: (H, W, 3) colours in [0, 1].
        depth: (H, W) z-depth along the camera's optical axis, metres.
        opacity: (H, W) accumulated opacity.
        block_map: (H, W) index into ``partition.blocks`` of the block with the largest weight.
        blocks: ids of the blocks that rendered any pixel.
        reassigned: pixels whose owning block changed in the depth-guided pass.
        weights: final blend weight (H, W) of each block in ``blocks``; ``rgb`` is the sum over
            blocks of weight x the block's colour. Weights come from depths, which appearance
            codes do not change, so they hold for any codes (see :mod:`birdnerf.eval.appearance`).
    """

    rgb: Tensor
    depth: Tensor
    opacity: Tensor
    block_map: Tensor
    blocks: list[str]
    reassigned: int
    weights: dict[str, Tensor] = field(default_factory=dict)


class _Renders:
    """Per-block outputs over the view's pixels, filled in as blocks render more of them."""

    def __init__(self, n_pixels: int):
        self.n = n_pixels
        self.out: dict[int, tuple[Tensor, Tensor, Tensor, Tensor]] = {}  # rgb, dist, opacity, done

    def ensure(self, b: int, need: Tensor, render) -> None:
        if b not in self.out:
            self.out[b] = (
                torch.zeros(self.n, 3),
                torch.zeros(self.n),
                torch.zeros(self.n),
                torch.zeros(self.n, dtype=torch.bool),
            )
        rgb, dist, opacity, done = self.out[b]
        todo = need & ~done
        if todo.any():
            res = render(b, todo)
            rgb[todo], dist[todo], opacity[todo] = res.rgb, res.depth, res.opacity
            done |= todo

    def blend(self, weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        rgb, dist, opacity = torch.zeros(self.n, 3), torch.zeros(self.n), torch.zeros(self.n)
        for b, (rgb_b, dist_b, op_b, _) in self.out.items():
            w = weights[:, b]
            rgb += w[:, None] * rgb_b
            dist += w * dist_b
            opacity += w * op_b
        return rgb, dist, opacity


def visible_blocks(partition: Partition, cam: Camera, c2w: np.ndarray, fraction: float = 0.5) -> list[str]:
    """Ids of the blocks that have a non-zero weight at some pixel's ground point."""
    o, d = camera_rays(cam, torch.from_numpy(c2w), pixel_centers(cam, torch.float64)[::4, ::4])
    w = block_weights(ground_points(o, d, partition.frame["ground_z"]).reshape(-1, 2), partition, fraction)
    return [partition.blocks[b].id for b in torch.nonzero(w.amax(dim=0) > MIN_WEIGHT).flatten().tolist()]


@torch.no_grad()
@keep_torch_globals()
def render_view(
    partition: Partition,
    cache: BlockCache,
    cam: Camera,
    c2w: np.ndarray,
    *,
    depth_guided: bool = True,
    blend_fraction: float = 0.5,
    appearance: dict[str, Tensor] | None = None,
) -> ViewRender:
    """Render camera (``cam``, ``c2w`` OpenCV camera-to-world in the run's frame) from the blocks.

    ``appearance`` maps block ids to an appearance code (A,) for that block's rays (e.g. codes
    fitted to a held-out photo); blocks not in it use the mean of their photos' codes. The cached
    models are not changed.
    """
    codes = appearance or {}
    ground_z = float(partition.frame["ground_z"])
    origins, dirs = camera_rays(cam, torch.from_numpy(c2w), pixel_centers(cam, torch.float64))
    origins, dirs = origins.reshape(-1, 3).float(), dirs.reshape(-1, 3).float()
    renders = _Renders(origins.shape[0])

    def render(b: int, mask: Tensor):
        block = partition.blocks[b]
        return cache.get(block).render_eval(origins[mask], dirs[mask], appearance=codes.get(block.id))

    def composite(weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        for b in torch.nonzero(weights.amax(dim=0) > MIN_WEIGHT).flatten().tolist():
            renders.ensure(b, weights[:, b] > MIN_WEIGHT, render)
        return renders.blend(weights)

    weights = block_weights(ground_points(origins, dirs, ground_z), partition, blend_fraction)
    rgb, dist, opacity = composite(weights)
    reassigned = 0
    if depth_guided:
        hit = opacity > 0.5
        surface = origins + dirs * dist[:, None]
        surface_xy = torch.where(hit[:, None], surface[:, :2], ground_points(origins, dirs, ground_z))
        guided = block_weights(surface_xy, partition, blend_fraction)
        reassigned = int((guided.argmax(dim=1) != weights.argmax(dim=1)).sum())
        if reassigned:
            weights = guided
            rgb, dist, opacity = composite(weights)
    forward = torch.from_numpy(c2w[:3, 2]).float()
    z_depth = dist * (dirs @ forward)
    h, w = cam.height, cam.width
    return ViewRender(
        rgb=rgb.clamp(0, 1).reshape(h, w, 3),
        depth=z_depth.reshape(h, w),
        opacity=opacity.reshape(h, w),
        block_map=weights.argmax(dim=1).reshape(h, w),
        blocks=[partition.blocks[b].id for b in sorted(renders.out)],
        reassigned=reassigned,
        weights={partition.blocks[b].id: weights[:, b].reshape(h, w) for b in sorted(renders.out)},
    )
