"""Block layout on the ground plane and assignment of photos to blocks.

Blocks form a rectilinear grid: column edges along x and row edges along y, placed at quantiles
of the photos' footprint centres so that blocks hold similar numbers of photos, with the outer
edges on the surveyed area's bounds. Core rectangles therefore tile the surveyed area exactly.
Each block's expanded rectangle adds the overlap on every side. A photo belongs to every block
whose expanded rectangle holds at least ``min_coverage`` of the photo's pixels (sampled on a
grid), and always to the block whose core holds its central pixel's ground point.
"""

from __future__ import annotations

import math

import numpy as np

from birdnerf.errors import BirdnerfError


def block_id(row: int, col: int) -> str:
    """Stable id of the block at grid (row, col), e.g. ``r00c03``; ``m`` marks a negative index
    (``r00cm01``: a column added left of the first by an update)."""

    def index(v: int) -> str:
        return f"m{-v:02d}" if v < 0 else f"{v:02d}"

    return f"r{index(row)}c{index(col)}"


def choose_shape(n_photos: int, width: float, height: float, images_per_block: int) -> tuple[int, int]:
    """Rows x cols for about ``n_photos / images_per_block`` blocks, following the aspect ratio."""
    n_blocks = max(1, round(n_photos / max(images_per_block, 1)))
    aspect = width / max(height, 1e-9)
    cols = max(1, round(math.sqrt(n_blocks * aspect)))
    rows = max(1, round(n_blocks / cols))
    return rows, cols


def balanced_edges(values: np.ndarray, lo: float, hi: float, n: int) -> np.ndarray:
    """n + 1 increasing edges from lo to hi with interior edges at quantiles of ``values``.

    Falls back to even spacing where quantiles would give an empty or degenerate interval.
    """
    if n == 1 or len(values) == 0:
        return np.linspace(lo, hi, n + 1)
    inner = np.quantile(values, np.arange(1, n) / n)
    edges = np.concatenate([[lo], inner, [hi]])
    min_width = (hi - lo) / (4 * n)
    if np.any(np.diff(edges) < min_width):
        return np.linspace(lo, hi, n + 1)
    return edges


def grid_edges(
    centers: np.ndarray, bounds: tuple[float, float, float, float], rows: int, cols: int, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """Column (x) and row (y) edges of a balanced rows x cols grid over ``bounds``."""
    if rows * cols > len(centers):
        raise BirdnerfError(
            f"{rows}x{cols} = {rows * cols} blocks requested but only {len(centers)} training photos", source
        )
    xmin, ymin, xmax, ymax = bounds
    return balanced_edges(centers[:, 0], xmin, xmax, cols), balanced_edges(centers[:, 1], ymin, ymax, rows)


def expanded_rects(
    x_edges: np.ndarray, y_edges: np.ndarray, overlap: float, overlap_m: float | None
) -> np.ndarray:
    """(rows, cols, 4) expanded rectangles (xmin, ymin, xmax, ymax): core + overlap on each side.

    The overlap is ``overlap_m`` metres if given, else ``overlap`` x the block's core size.
    """
    w = np.diff(x_edges)[None, :]
    h = np.diff(y_edges)[:, None]
    ox = np.full_like(w, overlap_m) if overlap_m is not None else overlap * w
    oy = np.full_like(h, overlap_m) if overlap_m is not None else overlap * h
    rows, cols = len(y_edges) - 1, len(x_edges) - 1
    out = np.empty((rows, cols, 4))
    out[..., 0] = (x_edges[:-1][None, :] - ox).repeat(rows, 0)
    out[..., 2] = (x_edges[1:][None, :] + ox).repeat(rows, 0)
    out[..., 1] = (y_edges[:-1][:, None] - oy).repeat(cols, 1)
    out[..., 3] = (y_edges[1:][:, None] + oy).repeat(cols, 1)
    return out


def core_cell(points: np.ndarray, x_edges: np.ndarray, y_edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of the core rectangle holding each (..., 2) point (clamped to the grid)."""
    col = np.clip(np.searchsorted(x_edges, points[..., 0], side="right") - 1, 0, len(x_edges) - 2)
    row = np.clip(np.searchsorted(y_edges, points[..., 1], side="right") - 1, 0, len(y_edges) - 2)
    return row, col


def coverage(
    samples: np.ndarray, x_edges: np.ndarray, y_edges: np.ndarray, expanded: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fraction of each photo's sampled pixels that land in each block's expanded rectangle.

    Only the blocks near each sample are tested, so the cost is O(photos x samples), not
    O(photos x samples x blocks).

    Args:
        samples: (N, P, 2) ground points of P pixels of each of N photos.
    Returns:
        (photo, block, fraction) arrays of the non-zero entries; block = row * cols + col.
    """
    n, p, _ = samples.shape
    rows, cols = len(y_edges) - 1, len(x_edges) - 1
    row, col = core_cell(samples, x_edges, y_edges)
    # A block k cells away can only reach a point through its overlap, which must then span the
    # k - 1 cores in between: k <= 1 + overlap / narrowest core.
    over_x = np.max(np.maximum(x_edges[:-1] - expanded[..., 0], expanded[..., 2] - x_edges[1:]))
    over_y = np.max(np.maximum(y_edges[:-1, None] - expanded[..., 1], expanded[..., 3] - y_edges[1:, None]))
    reach_x = 1 + int(over_x // np.min(np.diff(x_edges)))
    reach_y = 1 + int(over_y // np.min(np.diff(y_edges)))
    # Rectangles are separable: x bounds depend on the column only, y bounds on the row only.
    x_lo, x_hi = expanded[0, :, 0], expanded[0, :, 2]
    y_lo, y_hi = expanded[:, 0, 1], expanded[:, 0, 3]
    x, y = samples[..., 0], samples[..., 1]
    in_x = {}
    for dc in range(-reach_x, reach_x + 1):
        c = col + dc
        cc = np.clip(c, 0, cols - 1)
        in_x[dc] = (c >= 0) & (c < cols) & (x >= x_lo[cc]) & (x <= x_hi[cc])
    photo = np.broadcast_to(np.arange(n, dtype=np.int64)[:, None], (n, p))
    codes = []
    for dr in range(-reach_y, reach_y + 1):
        r = row + dr
        rr = np.clip(r, 0, rows - 1)
        in_y = (r >= 0) & (r < rows) & (y >= y_lo[rr]) & (y <= y_hi[rr])
        for dc, inside_x in in_x.items():
            inside = in_y & inside_x
            codes.append(photo[inside] * (rows * cols) + (r * cols + col + dc)[inside])
    unique, counts = np.unique(np.concatenate(codes), return_counts=True)
    return unique // (rows * cols), unique % (rows * cols), counts / p
