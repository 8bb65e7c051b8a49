"""A surface prior for aerial blocks: sparse points bound where the surface can be.

Seen from above, a site is close to a height field. For every vertical column of occupancy
cells, the sparse points near it (within ``radius`` cells in x/y) bound the heights where the
surface can lie; cells outside ``[min z - margin, max z + margin]`` are marked empty for good.
Columns with no points nearby keep every cell, so a missing point never removes a surface, only
a point that is present narrows its column. Over open ground this cuts the samples of a ray
from the whole altitude slab to a thin shell, from the first training step on.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def surface_prior(
    points: np.ndarray | None,
    box: list[float],
    resolution: tuple[int, int, int],
    radius: int = 2,
    margin_cells: float = 1.5,
) -> Tensor:
    """(rx, ry, rz) bool mask of the cells that may hold the surface.

    Args:
        points: (M, 3) sparse points, world metres (None or empty: everything may be occupied).
        box: (xmin, ymin, zmin, xmax, ymax, zmax) of the grid.
        resolution: cells per axis.
        radius: x/y neighbourhood, in cells, whose points bound a column.
        margin_cells: extra cells kept above and below the points' height range.
    """
    rx, ry, rz = resolution
    mask = torch.ones(resolution, dtype=torch.bool)
    if points is None or len(points) == 0:
        return mask
    lo, hi = np.asarray(box[:3]), np.asarray(box[3:])
    cell = (hi - lo) / np.asarray(resolution)
    inside = np.all((points >= lo) & (points <= hi), axis=1)
    pts = points[inside]
    if len(pts) == 0:
        return mask
    ij = np.clip(((pts[:, :2] - lo[:2]) / cell[:2]).astype(int), 0, [rx - 1, ry - 1])
    zmin = np.full((rx, ry), np.inf)
    zmax = np.full((rx, ry), -np.inf)
    np.minimum.at(zmin, (ij[:, 0], ij[:, 1]), pts[:, 2])
    np.maximum.at(zmax, (ij[:, 0], ij[:, 1]), pts[:, 2])
    # Spread each column's range to its neighbours (a min/max filter over a square window).
    lo_z, hi_z = zmin.copy(), zmax.copy()
    for dx in range(-radius, radius + 1):
        for dy in range(-radius, radius + 1):
            lo_z = np.minimum(lo_z, _shift(zmin, dx, dy, np.inf))
            hi_z = np.maximum(hi_z, _shift(zmax, dx, dy, -np.inf))
    known = np.isfinite(lo_z)
    z_centers = lo[2] + (np.arange(rz) + 0.5) * cell[2]
    pad = margin_cells * cell[2]
    keep = (z_centers[None, None, :] >= lo_z[..., None] - pad) & (
        z_centers[None, None, :] <= hi_z[..., None] + pad
    )
    keep |= ~known[..., None]
    return torch.from_numpy(keep)


def _shift(a: np.ndarray, dx: int, dy: int, fill: float) -> np.ndarray:
    """``a`` moved by (dx, dy) cells, with ``fill`` where nothing moved in."""
    out = np.full_like(a, fill)
    nx, ny = a.shape
    xs, xd = (slice(0, nx - dx), slice(dx, nx)) if dx >= 0 else (slice(-dx, nx), slice(0, nx + dx))
    ys, yd = (slice(0, ny - dy), slice(dy, ny)) if dy >= 0 else (slice(-dy, ny), slice(0, ny + dy))
    out[xd, yd] = a[xs, ys]
    return out
