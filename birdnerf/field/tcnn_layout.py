"""tiny-cuda-nn's hash-grid layout in plain torch: the reference twin of the ``tcnn`` backend.

tiny-cuda-nn (``HashGrid``, linear interpolation, 3 dimensions) places its levels differently
from :mod:`birdnerf.field.hashgrid`:

- level ``l`` has ``scale_l = 2^(l log2 b) N_min - 1`` (float32 arithmetic) and vertices
  ``R_l = ceil(scale_l) + 1`` per axis; a point's position is ``p = x scale_l + 0.5`` (the half
  cell staggers the levels), its cell ``floor(p)`` and its weights ``p - floor(p)``;
- a level owns ``min(next multiple of 8 of R_l^3, 2^T)`` rows; its vertex index is the dense
  ``c_x + R_l c_y + R_l^2 c_z`` (strides stop growing once they pass the level's rows) unless
  that needs more rows than it owns, then the spatial hash with the same primes
  (``c_x ^ c_y 2654435761 ^ c_z 805459861`` in uint32); either is taken modulo the rows, so the
  upper corner of the last dense cell wraps around;
- parameters are one flat vector, row-major (row, feature), the levels packed in order.

tcnn computes in half precision, so it agrees with :func:`encode_tcnn_reference` to about
1e-3 of the features' scale; the vertex positions differ from the reference layout's, which is
why weights do not convert exactly between the two (a layout mismatch is an error, see
:func:`birdnerf.block.model.backend_for_layout`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from birdnerf.field.hashgrid import CORNERS, HASH_PRIMES, HashGridConfig


@dataclass(frozen=True)
class TcnnLevel:
    """One level of tcnn's grid."""

    scale: float
    """Position multiplier: p = x * scale + 0.5."""
    resolution: int
    """Vertices per axis R = ceil(scale) + 1 (dense strides are 1, R, R^2)."""
    size: int
    """Rows owned by the level."""
    offset: int
    """First row of the level."""
    hashed: bool
    """Whether vertices are hashed (the dense index needs more rows than the level owns)."""
    strides: tuple[int, int, int]
    """Dense stride per axis (0 where tcnn's stride loop stopped)."""


def tcnn_levels(config: HashGridConfig) -> list[TcnnLevel]:
    """tcnn's layout for ``config`` (as :func:`birdnerf.field.tcnn_backend.tcnn_encoding_config`
    passes it: ``per_level_scale`` = the growth factor, in float32)."""
    log2_scale = np.float32(np.log2(np.float32(config.growth_factor)))
    table = 2**config.log2_hashmap_size
    levels, offset = [], 0
    for level in range(config.n_levels):
        scale = float(
            np.float32(np.exp2(np.float32(level) * log2_scale)) * np.float32(config.base_resolution) - 1
        )
        resolution = int(np.ceil(np.float32(scale))) + 1
        dense_rows = resolution**3
        size = min(-(-dense_rows // 8) * 8, table)
        strides, stride = [], 1
        for _ in range(3):
            if stride <= size:
                strides.append(stride)
                stride *= resolution
            else:
                strides.append(0)
        levels.append(TcnnLevel(scale, resolution, size, offset, size < stride, tuple(strides)))
        offset += size
    return levels


def tcnn_param_count(config: HashGridConfig) -> int:
    """Length of tcnn's flat parameter vector for ``config``."""
    last = tcnn_levels(config)[-1]
    return (last.offset + last.size) * config.n_features_per_level


def _vertex_rows(coords: Tensor, level: TcnnLevel) -> Tensor:
    if level.hashed:
        h = coords[..., 0] * HASH_PRIMES[0]
        h = h ^ (coords[..., 1] * HASH_PRIMES[1])
        h = (h ^ (coords[..., 2] * HASH_PRIMES[2])) & 0xFFFFFFFF
    else:
        sx, sy, sz = level.strides
        h = coords[..., 0] * sx + coords[..., 1] * sy + coords[..., 2] * sz
    return level.offset + h % level.size


def encode_tcnn_reference(x: Tensor, params: Tensor, config: HashGridConfig) -> Tensor:
    """Features (N, L * F) of points x (N, 3) in [0, 1]^3 from tcnn's flat ``params`` (P,).

    Full precision in ``params``' dtype (tcnn itself rounds to half); level-major columns like
    tcnn's output. Differentiable w.r.t. ``params``.
    """
    n_features = config.n_features_per_level
    table = params.reshape(-1, n_features)
    x = x.to(params.dtype)
    out = []
    for level in tcnn_levels(config):
        pos = x * level.scale + 0.5
        cell = pos.detach().floor()
        frac = pos - cell
        cell = cell.long()
        feats = torch.zeros(x.shape[0], n_features, dtype=params.dtype, device=x.device)
        for corner in CORNERS:
            weight = torch.ones_like(frac[:, 0])
            for axis, upper in enumerate(corner):
                weight = weight * (frac[:, axis] if upper else 1.0 - frac[:, axis])
            rows = _vertex_rows(cell + torch.tensor(corner, device=x.device), level)
            feats = feats + weight[:, None] * table[rows]
        out.append(feats)
    return torch.cat(out, dim=-1)
