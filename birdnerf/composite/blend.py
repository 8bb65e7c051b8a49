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

from birdnerf.partition.manifest import Partition


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
    """Half-widths of the blend bands at interior x and y edges: ``fraction`` of the overlap there."""
    rows, cols = len(partition.y_edges) - 1, len(partition.x_edges) - 1
    grid = {(b.row, b.col): b for b in partition.blocks}

    def overlap_x(c: int) -> float:  # overlap of column c to its right neighbour
        b = grid[(0, c)]
        return min(b.expanded[2] - b.core[2], grid[(0, c + 1)].core[0] - grid[(0, c + 1)].expanded[0])

    def overlap_y(r: int) -> float:
        b = grid[(r, 0)]
        return min(b.expanded[3] - b.core[3], grid[(r + 1, 0)].core[1] - grid[(r + 1, 0)].expanded[1])

    hx = [fraction * overlap_x(c) for c in range(cols - 1)]
    hy = [fraction * overlap_y(r) for r in range(rows - 1)]
    return hx, hy


def block_weights(points: Tensor, partition: Partition, fraction: float = 0.5) -> Tensor:
    """(..., B) blending weights of every block of ``partition`` at bird-view ``points`` (..., 2).

    Block order is ``partition.blocks``; each row sums to one; a point deep inside a block's
    core gets weight 1 for that block.
    """
    hx, hy = blend_half_widths(partition, fraction)
    wx = axis_weights(points[..., 0], partition.x_edges, hx)  # (..., cols)
    wy = axis_weights(points[..., 1], partition.y_edges, hy)  # (..., rows)
    return torch.stack([wy[..., b.row] * wx[..., b.col] for b in partition.blocks], dim=-1)
