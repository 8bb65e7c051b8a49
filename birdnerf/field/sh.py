"""Real spherical harmonics of view directions (the encoding of Instant-NGP / nerfstudio).

Degree ``D`` means bands ``l = 0 .. D-1`` and ``D^2`` components (degree 4 -> 16). The basis is
orthonormal on the unit sphere: ``∫ Y_i Y_j dΩ = δ_ij``; the sign convention follows the
Condon-Shortley phase used by tiny-cuda-nn, so features line up with its ``SphericalHarmonics``.
"""

from __future__ import annotations

import torch
from torch import Tensor

MAX_SH_DEGREE = 4


def sh_dim(degree: int) -> int:
    """Number of components of :func:`spherical_harmonics` (``degree^2``)."""
    return degree * degree


def spherical_harmonics(dirs: Tensor, degree: int = 4) -> Tensor:
    """Evaluate the real SH basis.

    Args:
        dirs: (..., 3) unit view directions (x, y, z) in the world frame.
        degree: 1 .. 4 (number of bands).
    Returns:
        (..., degree^2) basis values, e.g. ``Y_0 = 1 / (2 sqrt(pi))``, ``Y_1 = -sqrt(3 / 4pi) y``.

    Example:
        >>> spherical_harmonics(torch.tensor([[0.0, 0.0, 1.0]]), degree=2).shape
        torch.Size([1, 4])
    """
    if not 1 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"SH degree must be in 1..{MAX_SH_DEGREE}, got {degree}")
    x, y, z = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            1.0925484305920792 * x * y,
            -1.0925484305920792 * y * z,
            0.94617469575755997 * zz - 0.31539156525251999,
            -1.0925484305920792 * x * z,
            0.54627421529603959 * (xx - yy),
        ]
    if degree > 3:
        out += [
            0.59004358992664352 * y * (-3.0 * xx + yy),
            2.8906114426405538 * x * y * z,
            0.45704579946446572 * y * (1.0 - 5.0 * zz),
            0.3731763325901154 * z * (5.0 * zz - 3.0),
            0.45704579946446572 * x * (1.0 - 5.0 * zz),
            1.4453057213202769 * z * (xx - yy),
            0.59004358992664352 * x * (-xx + 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)
