"""Bird-view blending weights: which blocks render a ground point, and how much each counts.

The weights form a separable partition of unity over the block grid. Along x, the weight of
column c is 1 inside its core, 0 beyond its neighbours' cores, and a smoothstep across a band of
half-width ``h`` around each shared core edge (``h`` = a fraction of the overlap, so blending
only uses regions both blocks were trained on); likewise along y. A block's weight is the
product of its column and row weights. Each band is clamped to half of the narrower core beside
it, so two bands never meet and a point is in at most one band per axis: its weights live on the
2 x 2 cells around it and sum to one, ``(wx_c + wx_c') (wy_r + wy_r') = 1``, on any grid (uneven
cores, overlaps in metres wider than a core). Outside the surveyed area the border blocks
continue. Where the grid has holes or untrainable blocks, the share of the missing blocks goes
to the others; a point with none of its 2 x 2 blocks left goes wholly to the nearest block.

:class:`BlendIndex` finds a point's cell by a binary search over the grid edges and reads its
blocks from a (rows, cols) table: the cost is O(points), whatever the number of blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from birdnerf.partition.manifest import Block, Partition

SLOTS = 4
"""Candidate blocks per point: the 2 x 2 cells of the point's cell and its nearer neighbours."""


def smoothstep(x: Tensor) -> Tensor:
    """3x^2 - 2x^3 on [0, 1], clamped outside."""
    x = x.clamp(0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def blend_half_widths(partition: Partition, fraction: float) -> tuple[list[float], list[float]]:
    """Half-widths of the blend bands at interior x and y edges: ``fraction`` of the overlap there,
    at most half of the narrower of the two cores beside the edge.

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

    def clamp(edges: list[float], k: int, h: float) -> float:
        return max(0.0, min(h, 0.5 * (edges[k + 1] - edges[k]), 0.5 * (edges[k + 2] - edges[k + 1])))

    x, y = partition.x_edges, partition.y_edges
    hx = [clamp(x, c, fraction * overlap(in_col.get(c), in_col.get(c + 1), 0)) for c in range(cols - 1)]
    hy = [clamp(y, r, fraction * overlap(in_row.get(r), in_row.get(r + 1), 1)) for r in range(rows - 1)]
    return hx, hy


def _axis_pairs(values: Tensor, edges: Tensor, half_widths: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per value (N,): its cell, the neighbour cell across the nearer edge, and their weights.

    The two weights sum to one; the neighbour's weight is 0 outside the band (and on a one-cell
    axis, where the neighbour is the cell itself).
    """
    n_cells = edges.numel() - 1
    cell = (torch.searchsorted(edges, values.contiguous(), right=True) - 1).clamp(0, n_cells - 1)
    mid = 0.5 * (edges[cell] + edges[cell + 1])
    upper = values >= mid  # the nearer edge is the cell's upper one
    other = torch.where(upper, cell + 1, cell - 1)
    valid = (other >= 0) & (other < n_cells)
    other = torch.where(valid, other, cell)
    edge_k = torch.where(upper, cell, cell - 1).clamp(0, max(n_cells - 2, 0))  # interior edge index
    if n_cells > 1:
        h = half_widths[edge_k].clamp_min(1e-9)
        edge = edges[edge_k + 1]
        rise = smoothstep((values - (edge - h)) / (2 * h))  # weight of the upper cell
        w_other = torch.where(upper, rise, 1.0 - rise)
        w_other = torch.where(valid, w_other, torch.zeros_like(w_other))
    else:
        w_other = torch.zeros_like(values)
    return cell, other, 1.0 - w_other, w_other


@dataclass
class SparseWeights:
    """Blend weights of N points over at most :data:`SLOTS` blocks each.

    Attributes:
        index: (N, SLOTS) int64 index into ``partition.blocks``; -1 in empty slots.
        weight: (N, SLOTS) weights >= 0 (0 in empty slots), summing to one per point.
    """

    index: Tensor
    weight: Tensor

    def dense(self, n_blocks: int) -> Tensor:
        """(N, n_blocks): the same weights with a column per block."""
        out = self.weight.new_zeros(self.index.shape[0], n_blocks + 1)
        out.scatter_add_(1, torch.where(self.index >= 0, self.index, n_blocks), self.weight)
        return out[:, :n_blocks]

    def owner(self) -> Tensor:
        """(N,) the block with the largest weight at each point."""
        return self.index.gather(1, self.weight.argmax(dim=1, keepdim=True)).squeeze(1)

    def of_block(self, b: int) -> tuple[Tensor, Tensor]:
        """Rows (M,) of the points where block ``b`` has a positive weight, and that weight (M,)."""
        hit = (self.index == b) & (self.weight > 0)
        rows, slot = torch.nonzero(hit, as_tuple=True)
        return rows, self.weight[rows, slot]

    def blocks(self) -> list[int]:
        """Indices of the blocks with a positive weight at some point, ascending."""
        return torch.unique(self.index[self.weight > 0]).tolist()


class BlendIndex:
    """The block grid as lookup tables: blend weights of points in O(points x 4).

    Args:
        partition: the run's manifest.
        fraction: blend half-width as a fraction of the overlap (see :func:`blend_half_widths`).
    """

    def __init__(self, partition: Partition, fraction: float = 0.5):
        self.n_blocks = len(partition.blocks)
        rows, cols = len(partition.y_edges) - 1, len(partition.x_edges) - 1
        hx, hy = blend_half_widths(partition, fraction)
        self.x_edges = torch.tensor(partition.x_edges, dtype=torch.float64)
        self.y_edges = torch.tensor(partition.y_edges, dtype=torch.float64)
        self.hx = torch.tensor(hx + [0.0], dtype=torch.float64)
        self.hy = torch.tensor(hy + [0.0], dtype=torch.float64)
        table = np.full((rows, cols), -1, dtype=np.int64)
        for k, b in enumerate(partition.blocks):
            if b.trainable:
                table[b.row, b.col] = k
        self.table = torch.from_numpy(table)
        self.nearest = torch.from_numpy(_nearest_block(table, partition))

    def weights(self, points: Tensor) -> SparseWeights:
        """Weights at bird-view ``points`` (N, 2); on the device of ``points``, float64 inside."""
        device = points.device
        p = points.detach().to("cpu", torch.float64)
        cx, ox, wcx, wox = _axis_pairs(p[:, 0], self.x_edges, self.hx)
        cy, oy, wcy, woy = _axis_pairs(p[:, 1], self.y_edges, self.hy)
        rows = torch.stack([cy, cy, oy, oy], dim=1)
        cols = torch.stack([cx, ox, cx, ox], dim=1)
        weight = torch.stack([wcy * wcx, wcy * wox, woy * wcx, woy * wox], dim=1)
        index = self.table[rows, cols]
        weight = torch.where(index >= 0, weight, torch.zeros_like(weight))
        # A one-cell axis (or a border cell) pairs a cell with itself at weight 0: keep one slot.
        duplicate = torch.zeros_like(weight, dtype=torch.bool)
        duplicate[:, 1] = ox == cx
        duplicate[:, 2] = oy == cy
        duplicate[:, 3] = (ox == cx) | (oy == cy)
        weight = torch.where(duplicate, torch.zeros_like(weight), weight)
        total = weight.sum(dim=1, keepdim=True)
        orphan = total[:, 0] <= 1e-12
        weight = weight / total.clamp_min(1e-12)
        if orphan.any():  # none of the 2 x 2 blocks exists or trains: the nearest one takes it all
            weight[orphan] = 0.0
            index[orphan, 0] = self.nearest[cy[orphan], cx[orphan]]
            weight[orphan, 0] = 1.0
        index = torch.where(weight > 0, index, torch.full_like(index, -1))
        return SparseWeights(index.to(device), weight.to(device=device, dtype=points.dtype))


def _nearest_block(table: np.ndarray, partition: Partition) -> np.ndarray:
    """(rows, cols) index of the trainable block whose core centre is nearest each cell's centre."""
    x, y = np.asarray(partition.x_edges), np.asarray(partition.y_edges)
    cx, cy = 0.5 * (x[1:] + x[:-1]), 0.5 * (y[1:] + y[:-1])
    present = np.argwhere(table >= 0)
    if len(present) == 0:  # nothing trainable: keep the first block so indices stay valid
        return np.zeros(table.shape, dtype=np.int64)
    gy, gx = np.meshgrid(cy, cx, indexing="ij")
    d2 = (gx[..., None] - cx[present[:, 1]]) ** 2 + (gy[..., None] - cy[present[:, 0]]) ** 2
    best = present[d2.argmin(axis=-1)]
    return table[best[..., 0], best[..., 1]]


def axis_weights(values: Tensor, edges: list[float], half_widths: list[float]) -> Tensor:
    """(..., C) weights of the C cells between ``edges`` (C + 1) at ``values`` (...), every cell.

    ``half_widths`` (C - 1) is the blend half-width at each interior edge. The dense reference
    twin of :func:`_axis_pairs`.
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


def block_weights_reference(points: Tensor, partition: Partition, fraction: float = 0.5) -> Tensor:
    """(N, B) weights of every block at ``points`` (N, 2) by a scan over all blocks: the reference
    twin of :class:`BlendIndex` (O(points x blocks))."""
    hx, hy = blend_half_widths(partition, fraction)
    p = points.to(torch.float64)
    wx = axis_weights(p[:, 0], partition.x_edges, hx)
    wy = axis_weights(p[:, 1], partition.y_edges, hy)
    w = torch.stack([wy[:, b.row] * wx[:, b.col] * float(b.trainable) for b in partition.blocks], dim=-1)
    total = w.sum(dim=-1, keepdim=True)
    w = w / total.clamp_min(1e-12)
    orphan = total[:, 0] <= 1e-12
    if orphan.any():
        index = BlendIndex(partition, fraction)
        x = p[orphan, 0].contiguous()
        y = p[orphan, 1].contiguous()
        x_cell = (torch.searchsorted(index.x_edges, x, right=True) - 1).clamp(0, len(hx))
        y_cell = (torch.searchsorted(index.y_edges, y, right=True) - 1).clamp(0, len(hy))
        nearest = index.nearest[y_cell, x_cell]
        w[orphan] = torch.nn.functional.one_hot(nearest, len(partition.blocks)).to(w.dtype)
    return w


def block_weights(points: Tensor, partition: Partition, fraction: float = 0.5) -> Tensor:
    """(..., B) blending weights of every block of ``partition`` at bird-view ``points`` (..., 2).

    Block order is ``partition.blocks``; each row sums to one; a point deep inside a block's
    core gets weight 1 for that block. Blocks too small to train get no weight: their share goes
    to the neighbours. Dense, for inspection and tests; rendering uses :class:`BlendIndex`.
    """
    flat = points.reshape(-1, 2)
    dense = BlendIndex(partition, fraction).weights(flat).dense(len(partition.blocks))
    return dense.reshape(*points.shape[:-1], len(partition.blocks))
