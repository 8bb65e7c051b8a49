"""The orthophoto's raster: a north-up grid of square cells on a lattice anchored at the world origin.

Cell edges lie on multiples of the GSD in world x and y, so a block's tile keeps its cells when
the site grows (an update adds blocks) and a cached tile stays valid. The raster covers the union
of the trainable blocks' cores; each block renders the cells where its blend weight is non-zero
(its core and its share of the blend bands around it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from birdnerf.composite.blend import BlendIndex
from birdnerf.composite.rays import OrthoRays
from birdnerf.composite.view import FAST_MIN_WEIGHT, trimmed_weights
from birdnerf.errors import BirdnerfError
from birdnerf.partition.manifest import Partition
from birdnerf.scene.scene import Scene

MAX_CELLS = 1 << 31
"""Largest raster (cells) a GSD may ask for (see :mod:`birdnerf.ortho.budget`)."""
TOP_MARGIN_M = 1.0
"""How far above a block's box its vertical rays start (metres)."""


@dataclass(frozen=True)
class Window:
    """A rectangle of lattice cells: columns ``col0 ..`` (x = col * gsd at the west edge) and rows
    from the northern edge ``top`` (y = top * gsd) southwards."""

    col0: int
    top: int
    width: int
    height: int

    def rays(self, gsd: float, z_top: float) -> OrthoRays:
        return OrthoRays(self.col0 * gsd, self.top * gsd, gsd, self.width, self.height, z_top)

    def inside(self, outer: Window) -> tuple[slice, slice]:
        """(rows, cols) slices of this window within ``outer``'s array."""
        r, c = outer.top - self.top, self.col0 - outer.col0
        return slice(r, r + self.height), slice(c, c + self.width)

    def intersect(self, other: Window) -> Window | None:
        c0, c1 = max(self.col0, other.col0), min(self.col0 + self.width, other.col0 + other.width)
        t0, t1 = min(self.top, other.top), max(self.top - self.height, other.top - other.height)
        if c1 <= c0 or t0 <= t1:
            return None
        return Window(c0, t0, c1 - c0, t0 - t1)


def raster_window(partition: Partition, gsd: float) -> Window:
    """The lattice cells covering the trainable blocks' cores at ``gsd`` metres."""
    if not (math.isfinite(gsd) and gsd > 0):
        raise BirdnerfError(f"--gsd must be a positive number of metres, got {gsd:g}")
    cores = np.array([b.core for b in partition.blocks if b.trainable], dtype=np.float64)
    if len(cores) == 0:
        raise BirdnerfError("the run has no trainable block", partition.run_dir)
    col0, col1 = math.floor(cores[:, 0].min() / gsd), math.ceil(cores[:, 2].max() / gsd)
    row_bottom, top = math.floor(cores[:, 1].min() / gsd), math.ceil(cores[:, 3].max() / gsd)
    # Its size is checked against MAX_CELLS and the machine by birdnerf.ortho.budget.
    return Window(col0, top, col1 - col0, top - row_bottom)


def survey_gsd(scene: Scene, ground_z: float) -> float:
    """Median ground sampling distance of the training photos, metres per pixel: the distance
    along each photo's optical axis down to the ground plane over its focal length (nadir-exact)."""
    gsds = []
    for i in scene.indices("train") or range(len(scene)):
        c2w, cam = scene.c2w[i], scene.cameras[i]
        down = -c2w[2, 2]  # how steeply the optical axis points down
        height = c2w[2, 3] - ground_z
        if down > 0.1 and height > 0:
            gsds.append(height / down / cam.fx)
    if not gsds:
        raise BirdnerfError("no photo looks down on the ground: state the --gsd", scene.root)
    return float(np.median(gsds))


def block_windows(
    partition: Partition, index: BlendIndex, raster: Window, gsd: float, band_cells: int = 1 << 18
) -> dict[int, Window]:
    """Block index -> the smallest window of ``raster`` holding every cell where it has a weight
    (beyond :data:`~birdnerf.composite.view.FAST_MIN_WEIGHT`); one pass over the raster in bands."""
    rays = raster.rays(gsd, 0.0)
    lo: dict[int, list[int]] = {}  # block -> [row_min, row_max, col_min, col_max] in the raster
    band_rows = max(1, band_cells // raster.width)
    for r0 in range(0, raster.height, band_rows):
        n_rows = min(band_rows, raster.height - r0)
        w = trimmed_weights(index, rays.cell_centers(r0, n_rows).float(), FAST_MIN_WEIGHT)
        for b in w.blocks():
            cells, _ = w.of_block(b)
            rows, cols = cells // raster.width + r0, cells % raster.width
            box = [int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())]
            old = lo.setdefault(b, box)
            lo[b] = [min(old[0], box[0]), max(old[1], box[1]), min(old[2], box[2]), max(old[3], box[3])]
    return {
        b: Window(raster.col0 + c0, raster.top - r0, c1 - c0 + 1, r1 - r0 + 1)
        for b, (r0, r1, c0, c1) in sorted(lo.items())
    }


def block_mask(index: BlendIndex, block: int, window: Window, gsd: float) -> torch.Tensor:
    """(height, width) bool: the cells of ``window`` where block ``block`` has a weight."""
    centers = window.rays(gsd, 0.0).cell_centers(0, window.height).float()  # as the mosaic reads them
    w = trimmed_weights(index, centers, FAST_MIN_WEIGHT)
    return ((w.index == block) & (w.weight > 0)).any(dim=1).reshape(window.height, window.width)
