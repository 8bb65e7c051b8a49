"""A surface prior for aerial blocks: sparse points bound where the surface can be.

Seen from above, a site is close to a height field. For every vertical column of occupancy
cells, the sparse points near it bound the heights where the surface can lie; cells outside
``[low - pad, high + pad]`` are marked empty for good. Over open ground this cuts the samples of
a ray from the whole altitude slab to a thin shell, from the first training step on.

The bounds adapt to how much the points can be trusted:

- **where points are sparse the window dilates**: a column's neighbourhood grows (``radius``,
  twice, four times ... up to ``max_radius`` cells) until it holds ``min_points`` points, so a
  lone point never pins a column to its height;
- **tops are bounded loosely**: the upper bound comes from a window twice as wide as the lower
  bound's, because canopies and eaves overhang the points found on them (structure from motion
  finds few points on foliage, and cutting a tree's crown shows as staircase edges);
- **where points disagree the shell widens**: the pad grows with the spread of the heights in
  the window, whether it comes from noise or from real relief;
- **where there are none the prior is off**: a column with fewer than ``min_points`` points
  within ``max_radius`` cells keeps every cell, so a missing point never removes a surface and
  a stray one never pins a column to a wrong height.
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
    max_radius: int = 8,
    spread_factor: float = 0.5,
) -> Tensor:
    """(rx, ry, rz) bool mask of the cells that may hold the surface.

    Args:
        points: (M, 3) sparse points, world metres (None or empty: everything may be occupied).
        box: (xmin, ymin, zmin, xmax, ymax, zmax) of the grid.
        resolution: cells per axis.
        radius: smallest x/y neighbourhood, in cells, whose points bound a column.
        margin_cells: extra cells kept above and below the bounds.
        min_points: points a neighbourhood must hold before it is trusted; smaller ones dilate.
        max_radius: largest neighbourhood, in cells; columns with fewer than ``min_points`` points
            within it keep every cell.
        spread_factor: extra pad per metre of standard deviation of the heights in the window.
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
    count, zsum, zsq = np.zeros((rx, ry)), np.zeros((rx, ry)), np.zeros((rx, ry))
    zmin, zmax = np.full((rx, ry), np.inf), np.full((rx, ry), -np.inf)
    np.add.at(count, at, 1.0)
    np.add.at(zsum, at, pts[:, 2])
    np.add.at(zsq, at, pts[:, 2] ** 2)
    np.minimum.at(zmin, at, pts[:, 2])
    np.maximum.at(zmax, at, pts[:, 2])

    radii = [radius]
    while radii[-1] < max_radius:
        radii.append(min(2 * radii[-1], max_radius))
    low = np.full((rx, ry), np.nan)
    high = np.full((rx, ry), np.nan)
    spread = np.zeros((rx, ry))
    for r in radii:
        n = _window(count, r, np.add, 0.0)
        undecided = np.isnan(low) & (n >= min_points)
        if not undecided.any():
            continue
        mean = _window(zsum, r, np.add, 0.0) / np.maximum(n, 1)
        var = _window(zsq, r, np.add, 0.0) / np.maximum(n, 1) - mean**2
        top = _window(zmax, 2 * r, np.maximum, -np.inf)
        low[undecided] = _window(zmin, r, np.minimum, np.inf)[undecided]
        high[undecided] = top[undecided]
        spread[undecided] = np.sqrt(np.maximum(var, 0.0))[undecided]
    known = ~np.isnan(low)
    pad = margin_cells * cell[2] + spread_factor * spread
    z_centers = lo[2] + (np.arange(rz) + 0.5) * cell[2]
    with np.errstate(invalid="ignore"):
        keep = (z_centers >= (low - pad)[..., None]) & (z_centers <= (high + pad)[..., None])
    keep |= ~known[..., None]
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
