"""Multiresolution hash encoding (Instant-NGP, Müller et al. 2022) in plain torch.

Level ``l`` of ``L`` has grid resolution ``N_l = floor(N_min * b**l)`` with the growth factor
``b = exp((ln N_max - ln N_min) / (L - 1))``. A point ``x`` in ``[0, 1]^3`` lies in the cell whose
lower corner is ``c = floor(x * N_l)`` (clamped to ``N_l - 1`` so that ``x = 1`` stays in the last
cell); its feature is the trilinear blend of the ``F`` features stored at the cell's 8 corners.
A level whose dense grid of ``(N_l + 1)^3`` vertices fits in the ``2^T``-row table is indexed
densely, ``i = c_x + (N_l + 1) c_y + (N_l + 1)^2 c_z``; finer levels use the spatial hash
``h(c) = (c_x * 1  XOR  c_y * 2654435761  XOR  c_z * 805459861) mod 2^T``.

All levels share one parameter ``table`` of shape ``(sum of level sizes, F)``; level ``l`` owns the
rows ``[offset_l, offset_l + size_l)``. Two implementations read the same table:

- :func:`encode_reference`: a per-level, per-corner loop, written to be read (the reference twin);
- :func:`encode_fast`: all levels at once in a level-major layout, written for ``torch.compile``;
- :func:`birdnerf.field.fused.fused_encode`: a C++/OpenMP kernel (the ``fused`` backend).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from birdnerf.field.compile import LazyCompile
from birdnerf.field.fused import fused_encode

HASH_PRIMES = (1, 2654435761, 805459861)
"""Per-axis multipliers of the spatial hash (x, y, z)."""

CORNERS = tuple((cx, cy, cz) for cx in (0, 1) for cy in (0, 1) for cz in (0, 1))
"""The 8 cell corners as offsets from the lower corner, in a fixed order shared by both encoders."""


@dataclass
class HashGridConfig:
    """Shape of a multiresolution hash grid; every field is plain JSON."""

    n_levels: int = 16
    """Number of resolution levels L."""
    n_features_per_level: int = 2
    """Features per table row F; the encoding has L * F channels."""
    log2_hashmap_size: int = 16
    """log2 of the rows per level T; 2^15-2^17 keeps a block's table inside the CPU cache."""
    base_resolution: int = 16
    """Resolution of the coarsest level N_min (cells per unit side)."""
    max_resolution: int = 2048
    """Resolution of the finest level N_max."""
    init_scale: float = 1e-4
    """Table entries start uniform in [-init_scale, init_scale]."""

    @property
    def output_dim(self) -> int:
        return self.n_levels * self.n_features_per_level

    @property
    def growth_factor(self) -> float:
        """b = exp((ln N_max - ln N_min) / (L - 1)); 1 for a single level."""
        if self.n_levels == 1:
            return 1.0
        return math.exp(
            (math.log(self.max_resolution) - math.log(self.base_resolution)) / (self.n_levels - 1)
        )

    def resolutions(self) -> list[int]:
        """N_l = floor(N_min * b^l) for l = 0 .. L-1 (a tiny epsilon absorbs float round-off)."""
        b = self.growth_factor
        return [int(math.floor(self.base_resolution * b**level + 1e-6)) for level in range(self.n_levels)]


@dataclass(frozen=True)
class GridLevel:
    """Where one level lives in the shared table."""

    resolution: int
    """Cells per unit side N_l; vertices run 0 .. N_l on each axis."""
    dense: bool
    """True when all (N_l + 1)^3 vertices get their own row (no hashing)."""
    size: int
    """Rows owned by the level: (N_l + 1)^3 when dense, else 2^T."""
    offset: int
    """First row of the level in the table."""


def grid_levels(config: HashGridConfig) -> list[GridLevel]:
    """The table layout: one :class:`GridLevel` per level, coarse to fine, rows packed in order."""
    table_rows = 2**config.log2_hashmap_size
    levels, offset = [], 0
    for resolution in config.resolutions():
        dense_rows = (resolution + 1) ** 3
        dense = dense_rows <= table_rows
        size = dense_rows if dense else table_rows
        levels.append(GridLevel(resolution, dense, size, offset))
        offset += size
    return levels


def hash_coords(coords: Tensor, log2_size: int) -> Tensor:
    """Spatial hash of integer vertex coordinates.

    Args:
        coords: (..., 3) int64 vertex coordinates (x, y, z) >= 0.
        log2_size: T; the result is taken modulo 2^T.
    Returns:
        (...) int64 in [0, 2^T): (x * 1 ^ y * 2654435761 ^ z * 805459861) & (2^T - 1). Products are
        exact in int64, so the low T bits equal those of the 32-bit arithmetic of Instant-NGP.
    """
    h = coords[..., 0] * HASH_PRIMES[0]
    h = h ^ (coords[..., 1] * HASH_PRIMES[1])
    h = h ^ (coords[..., 2] * HASH_PRIMES[2])
    return h & (2**log2_size - 1)


def grid_index(coords: Tensor, level: GridLevel, log2_size: int) -> Tensor:
    """Row of each vertex inside its level (add ``level.offset`` for the table row).

    Args:
        coords: (..., 3) int64 vertex coordinates in [0, N_l].
    Returns:
        (...) int64 in [0, level.size): dense ``x + (N+1) y + (N+1)^2 z`` or :func:`hash_coords`.
    """
    if level.dense:
        side = level.resolution + 1
        return coords[..., 0] + side * coords[..., 1] + side * side * coords[..., 2]
    return hash_coords(coords, log2_size)


def encode_reference(x: Tensor, table: Tensor, levels: list[GridLevel], log2_size: int) -> Tensor:
    """Hash-grid features by trilinear interpolation, one level and one corner at a time.

    Args:
        x: (N, 3) points in [0, 1]^3 (values outside are clamped to the cube).
        table: (R, F) the shared feature table laid out by ``levels``.
        levels: the layout from :func:`grid_levels`.
        log2_size: T of the config.
    Returns:
        (N, L * F) features, level-major: columns [l * F, (l + 1) * F) belong to level l.
        Differentiable w.r.t. ``table`` and ``x`` (inside the cube).
    """
    x = x.clamp(0.0, 1.0)
    features = []
    for level in levels:
        pos = x * level.resolution  # (N, 3) in [0, N_l]
        cell = pos.detach().floor().clamp(max=level.resolution - 1)  # lower corner, x = 1 stays inside
        frac = pos - cell  # (N, 3) in [0, 1]
        cell = cell.long()
        level_features = torch.zeros(x.shape[0], table.shape[1], dtype=table.dtype, device=x.device)
        for corner in CORNERS:
            coords = cell + torch.tensor(corner, device=x.device)
            weight = torch.ones_like(frac[:, 0])
            for axis, upper in enumerate(corner):
                weight = weight * (frac[:, axis] if upper else 1.0 - frac[:, axis])
            rows = level.offset + grid_index(coords, level, log2_size)
            level_features = level_features + weight[:, None] * table[rows]
        features.append(level_features)
    return torch.cat(features, dim=-1)


def level_tensors(levels: list[GridLevel], log2_size: int) -> dict[str, Tensor]:
    """Per-level constants of :func:`encode_fast` as small tensors.

    Returns ``scale`` (L,) float32 = N_l; ``mul`` (L, 3) int64 = per-axis multipliers (dense strides
    1, N_l + 1, (N_l + 1)^2 or the hash primes); ``dense`` (L,) bool; ``offset`` (L,) int64.
    """
    mul = []
    for level in levels:
        side = level.resolution + 1
        mul.append((1, side, side * side) if level.dense else HASH_PRIMES)
    return {
        "scale": torch.tensor([lv.resolution for lv in levels], dtype=torch.float32),
        "mul": torch.tensor(mul, dtype=torch.int64),
        "dense": torch.tensor([lv.dense for lv in levels], dtype=torch.bool),
        "offset": torch.tensor([lv.offset for lv in levels], dtype=torch.int64),
    }


def encode_fast(
    x: Tensor, table: Tensor, scale: Tensor, mul: Tensor, dense: Tensor, offset: Tensor, mask: int
) -> Tensor:
    """The same features as :func:`encode_reference`, all levels at once (made for ``torch.compile``).

    Work is laid out level-major, (L, 3, N), so the batch is the innermost, vectorisable axis.
    Corner indices are built per axis: the lower corner's term ``t_d = c_d * m_d`` and the upper
    one's ``t_d + m_d`` are combined by ``+`` (dense levels) or ``XOR`` then ``& mask`` (hashed).

    Args:
        x: (N, 3) points in [0, 1]^3 (clamped).
        table: (R, F) feature table.
        scale, mul, dense, offset: from :func:`level_tensors`, on ``x``'s device.
        mask: 2^T - 1.
    Returns:
        (N, L * F) features, level-major (same column order as the reference).
    """
    pos = x.clamp(0.0, 1.0).t().unsqueeze(0) * scale[:, None, None]  # (L, 3, N)
    cell = torch.minimum(pos.detach().floor(), (scale - 1.0)[:, None, None])
    frac = pos - cell
    lower = cell.long() * mul[:, :, None]  # (L, 3, N) per-axis index terms of the lower corner
    upper = lower + mul[:, :, None]
    one_minus = 1.0 - frac
    is_dense = dense[:, None]
    row0 = offset[:, None]
    out = None
    for cx, cy, cz in CORNERS:
        tx, ty, tz = (
            (upper if cx else lower)[:, 0],
            (upper if cy else lower)[:, 1],
            (upper if cz else lower)[:, 2],
        )
        rows = torch.where(is_dense, tx + ty + tz, (tx ^ ty ^ tz) & mask) + row0  # (L, N)
        weight = (frac if cx else one_minus)[:, 0] * (frac if cy else one_minus)[:, 1]
        weight = weight * (frac if cz else one_minus)[:, 2]
        term = weight[..., None] * table[rows]  # (L, N, F)
        out = term if out is None else out + term
    return out.permute(1, 0, 2).reshape(x.shape[0], -1)


_compiled_encode = LazyCompile(encode_fast, name="hash encoding")


class HashGrid(nn.Module):
    """Hash-grid encoding module for the ``torch``, ``compiled`` and ``fused`` backends (same parameters).

    ``forward(x)``: x (N, 3) float32 in [0, 1]^3 -> (N, L * F) float32. The only parameter is
    ``table`` (R, F); the level constants are non-persistent buffers rebuilt from the config, so a
    ``state_dict`` moves unchanged between the two backends.
    """

    def __init__(self, config: HashGridConfig, backend: str = "torch"):
        super().__init__()
        if backend not in ("torch", "compiled", "fused"):
            raise ValueError(f"HashGrid backend must be 'torch', 'compiled' or 'fused', got {backend!r}")
        self.config = config
        self.backend = backend
        self.levels = grid_levels(config)
        rows = self.levels[-1].offset + self.levels[-1].size
        table = torch.empty(rows, config.n_features_per_level)
        self.table = nn.Parameter(table.uniform_(-config.init_scale, config.init_scale))
        for name, value in level_tensors(self.levels, config.log2_hashmap_size).items():
            self.register_buffer(f"level_{name}", value, persistent=False)

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    def fast_args(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, int]:
        """The arguments after ``x`` of :func:`encode_fast` for this grid."""
        mask = 2**self.config.log2_hashmap_size - 1
        return (self.table, self.level_scale, self.level_mul, self.level_dense, self.level_offset, mask)

    def fused_levels(self) -> tuple[list[int], list[int], list[bool], int]:
        """The level arguments of :func:`birdnerf.field.fused.fused_encode` for this grid."""
        mask = 2**self.config.log2_hashmap_size - 1
        return (
            [lv.resolution for lv in self.levels],
            [lv.offset for lv in self.levels],
            [lv.dense for lv in self.levels],
            mask,
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.backend == "fused":
            return fused_encode(x, self.table, self.fused_levels())
        if self.backend == "compiled":
            return _compiled_encode((x,), self.fast_args())[0]
        return encode_reference(x, self.table, self.levels, self.config.log2_hashmap_size)
