"""Blending the blocks' tiles into the orthophoto and the DSM, one raster window at a time.

For a vertical ray the surface point's bird-view position is the ray's own x, y, so the blend
weights of a cell are the bird-view weights at its centre (the depth-guided pass of
:func:`birdnerf.composite.view.render_rays_view` changes nothing). The blocks' outputs are then
blended by the compositor's own :func:`~birdnerf.composite.view.blend_slots`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from birdnerf.composite.blend import BlendIndex
from birdnerf.composite.view import FAST_MIN_WEIGHT, _Slots, blend_slots, trimmed_weights
from birdnerf.ortho.grid import Window
from birdnerf.ortho.tiles import BlockTile

NODATA_HEIGHT = -9999.0
"""The DSM's value where no block sees a surface."""


@dataclass
class OrthoWindow:
    """The products over one raster window.

    Attributes:
        rgba: (H, W, 4) uint8: colour (not premultiplied) and alpha 255 where a surface was seen.
        height: (H, W) float32 surface height (world z at the median depth, metres),
            :data:`NODATA_HEIGHT` where no surface was seen.
        mean_height: (H, W) float32 world z at the expected depth (what the compositor's depth
            map gives), every cell.
        opacity: (H, W) float32 blended opacity.
    """

    rgba: np.ndarray
    height: np.ndarray
    mean_height: np.ndarray
    opacity: np.ndarray


class TileSource:
    """Block tiles by block index, loaded on demand and kept ``capacity`` at a time."""

    def __init__(self, load: Callable[[int], BlockTile], capacity: int = 8):
        self.load, self.capacity = load, max(1, capacity)
        self._tiles: OrderedDict[int, BlockTile] = OrderedDict()

    def get(self, block: int) -> BlockTile:
        if block in self._tiles:
            self._tiles.move_to_end(block)
        else:
            self._tiles[block] = self.load(block)
            if len(self._tiles) > self.capacity:
                self._tiles.popitem(last=False)
        return self._tiles[block]


def blend_window(
    index: BlendIndex, tiles: TileSource, window: Window, gsd: float, min_opacity: float
) -> OrthoWindow:
    """Blend the tiles of the blocks weighing on ``window``'s cells.

    Args:
        min_opacity: blended opacity below which a cell has no surface (alpha 0, DSM nodata).
    """
    centers = window.rays(gsd, 0.0).cell_centers(0, window.height)
    weights = trimmed_weights(index, centers.float(), FAST_MIN_WEIGHT)
    slots, surface = _Slots.empty(weights), _Slots.empty(weights)
    for b in weights.blocks():
        hit = (weights.index == b) & (weights.weight > 0)
        cells, slot = torch.nonzero(hit, as_tuple=True)
        tile = tiles.get(b)
        rows, cols = window.inside(tile.window)
        r = (cells // window.width).numpy() + rows.start
        c = (cells % window.width).numpy() + cols.start
        if r.min() < 0 or c.min() < 0 or r.max() >= tile.window.height or c.max() >= tile.window.width:
            raise RuntimeError(f"block {b} has weight outside its tile")  # a bug, not bad input
        slots.rgb[cells, slot] = torch.from_numpy(tile.rgb[r, c])
        slots.opacity[cells, slot] = torch.from_numpy(tile.opacity[r, c])
        slots.dist[cells, slot] = torch.from_numpy(tile.height[r, c])  # blended like a distance
        surface.dist[cells, slot] = torch.from_numpy(tile.surface[r, c])
    blend = blend_slots(slots)
    surface.opacity = slots.opacity
    median = blend_slots(surface).dist  # the median surfaces, with the same shares
    opacity = blend.opacity.numpy()
    seen = opacity >= min_opacity
    colour = (blend.rgb.clamp(0, 1).numpy() / np.maximum(opacity, 1e-6)[:, None]).clip(0.0, 1.0)
    rgba = np.zeros((len(opacity), 4), np.uint8)
    rgba[seen, :3] = np.round(colour[seen] * 255.0).astype(np.uint8)
    rgba[seen, 3] = 255
    height = np.where(seen, median.numpy(), NODATA_HEIGHT).astype(np.float32)
    shape = (window.height, window.width)
    mean_height = blend.dist.numpy().reshape(shape)
    return OrthoWindow(rgba.reshape(*shape, 4), height.reshape(shape), mean_height, opacity.reshape(shape))
