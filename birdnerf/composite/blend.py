"""Bird-view blending weights: which blocks render a ground point, and how much each counts.

The weights form a separable partition of unity over the block grid. Along x, the weight of
column c is 1 inside its core, 0 beyond its neighbours' cores, and a smoothstep across a band of
half-width ``h`` around each shared core edge (``h`` = a fraction of the overlap, so blending
only uses regions both blocks were trained on); likewise along y. A block's weight is the
product of its column and row weights, so at every point the weights sum to exactly one:
``sum_b w_b = (sum_c wx_c) (sum_r wy_r) = 1``. Outside the surveyed area the border blocks
continue.
"""

from __future__ import annotations

import torch
from torch import Tensor

from birdnerf.partition.manifest import Block, Partition


def smoothstep(x: Tensor) -> Tensor:
    """3x^2 - 2x^3 on [0, 1], clamped outside."""
    x = x.clamp(0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def axis_weights(values: Tensor, edges: list[float], half_widths: list[float]) -> Tensor:
    """(..., C) weights of the C cells between ``edges`` (C + 1) at ``values`` (...); rows sum to 1.

    ``half_widths`` (C - 1) is the blend half-width at each interior edge.
    """
    n_cells = len(edges) - 1
    rise = []  # rise[k]: how far past interior edge k we are, 0 -> 1 across its band
    for k in range(1, n_cells):
        h = max(half_widths[k - 1], 1e-9)
        rise.append(smoothstep((values - (edges[k] - h)) / (2 * h)))
    cols = []
    for c in range(n_cells):
        w = torch.ones_like(values)
        if c > 0:
            w = w * rise[c - 1]
        if c < n_cells - 1:
            w = w * (1.0 - rise[c])
        cols.append(w)
    return torch.stack(cols, dim=-1)


def blend_half_widths(partition: Partition, fraction: float) -> tuple[list[float], list[float]]:
    """Half-widths of the blend bands at interior x and y edges: ``fraction`` of the overlap there.

    The grid may have holes (an update adds blocks only where new photos are), so each edge's
    overlap is read from any block of the columns (rows) on its two sides.
    """
    rows, cols = len(partition.y_edges) - 1, len(partition.x_edges) - 1
    in_col = {b.col: b for b in reversed(partition.blocks)}
    in_row = {b.row: b for b in reversed(partition.blocks)}

    def overlap(lo: Block | None, hi: Block | None, axis: int) -> float:
        if lo is None or hi is None:  # an empty row or column: no block there to blend with
            return 0.0
        return min(lo.expanded[2 + axis] - lo.core[2 + axis], hi.core[axis] - hi.expanded[axis])

    hx = [fraction * overlap(in_col.get(c), in_col.get(c + 1), 0) for c in range(cols - 1)]
    hy = [fraction * overlap(in_row.get(r), in_row.get(r + 1), 1) for r in range(rows - 1)]
    return hx, hy


def block_weights(points: Tensor, partition: Partition, fraction: float = 0.5) -> Tensor:
    """(..., B) blending weights of every block of ``partition`` at bird-view ``points`` (..., 2).

    Block order is ``partition.blocks``; each row sums to one; a point deep inside a block's
    core gets weight 1 for that block. Blocks too small to train get no weight: their share goes
    to the neighbours (a point that only such blocks cover gets none at all).
    """
    hx, hy = blend_half_widths(partition, fraction)
    wx = axis_weights(points[..., 0], partition.x_edges, hx)  # (..., cols)
    wy = axis_weights(points[..., 1], partition.y_edges, hy)  # (..., rows)
    w = torch.stack([wy[..., b.row] * wx[..., b.col] for b in partition.blocks], dim=-1)
    if all(b.trainable for b in partition.blocks):
        return w
    w = w * torch.tensor([b.trainable for b in partition.blocks], dtype=w.dtype)
    total = w.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, w / total.clamp_min(1e-12), w)
