"""A surface prior for aerial blocks: sparse points bound where the surface can be.

Seen from above, a site is close to a height field. For every vertical column of occupancy
cells, the sparse points near it bound the heights where the surface can lie; cells outside
``[low - pad, high + pad]`` are marked empty for good. Over open ground this cuts the samples of
a ray from the whole altitude slab to a thin shell, from the first training step on.

The bounds adapt to how much the points can be trusted:

- **where points are sparse the shell dilates**: the pad above and below a column's bounds grows
  as the points in its neighbourhood thin out (up to ``1 + dilation`` times the margin for a
  single point), since a few points say little about what lies between them;
- **where there are none the prior is off**: a column with no point in its neighbourhood keeps
  every cell, so a missing point (water, a textureless roof) never removes a surface.

Two further adaptations were measured and left out, because every cell they open costs samples
on every ray that crosses it: bounding tops over a wider neighbourhood than bottoms (for crowns
that overhang their points) and padding by the spread of the heights nearby. On the flat sample
scene they kept 10-25 % more cells and cost 0.6-1.0 dB of held-out PSNR at 250 steps (the
dilation alone: 0.04 dB); on Brighton Beach the prior makes no measurable difference at all.
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
    min_points: int = 8,
    dilation: float = 2.0,
) -> Tensor:
    """(rx, ry, rz) bool mask of the cells that may hold the surface.

    Args:
        points: (M, 3) sparse points, world metres (None or empty: everything may be occupied).
        box: (xmin, ymin, zmin, xmax, ymax, zmax) of the grid.
        resolution: cells per axis.
        radius: x/y neighbourhood, in cells, whose points bound a column.
        margin_cells: cells kept above and below the bounds where points are dense.
        min_points: points a neighbourhood needs for the plain margin; fewer dilate it.
        dilation: extra margin, in multiples of ``margin_cells``, for a single point.
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
    at = (ij[:, 0], ij[:, 1])
    count = np.zeros((rx, ry))
    zmin, zmax = np.full((rx, ry), np.inf), np.full((rx, ry), -np.inf)
    np.add.at(count, at, 1.0)
    np.minimum.at(zmin, at, pts[:, 2])
    np.maximum.at(zmax, at, pts[:, 2])

    n = _window(count, radius, np.add, 0.0)
    low = _window(zmin, radius, np.minimum, np.inf)
    high = _window(zmax, radius, np.maximum, -np.inf)
    sparse = np.clip((min_points - n) / max(min_points - 1, 1), 0.0, 1.0)
    pad = margin_cells * cell[2] * (1.0 + dilation * sparse)
    z_centers = lo[2] + (np.arange(rz) + 0.5) * cell[2]
    with np.errstate(invalid="ignore"):
        keep = (z_centers >= (low - pad)[..., None]) & (z_centers <= (high + pad)[..., None])
    keep |= (n == 0)[..., None]
    return torch.from_numpy(keep)


def _window(a: np.ndarray, r: int, op: np.ufunc, fill: float) -> np.ndarray:
    """``op`` (add, minimum or maximum) over the (2r+1)^2 square window around each cell.

    Separable: one pass along x, then one along y, with ``fill`` beyond the edges.
    """
    out = a
    for axis in (0, 1):
        acc = out.copy()
        for d in range(1, r + 1):
            acc = op(acc, _shift(out, d, axis, fill))
            acc = op(acc, _shift(out, -d, axis, fill))
        out = acc
    return out


def _shift(a: np.ndarray, d: int, axis: int, fill: float) -> np.ndarray:
    """``a`` moved by ``d`` cells along ``axis``, with ``fill`` where nothing moved in."""
    out = np.full_like(a, fill)
    n = a.shape[axis]
    if abs(d) >= n:
        return out
    src = [slice(None)] * a.ndim
    dst = [slice(None)] * a.ndim
    src[axis], dst[axis] = (slice(0, n - d), slice(d, n)) if d >= 0 else (slice(-d, n), slice(0, n + d))
    out[tuple(dst)] = a[tuple(src)]
    return out
