"""Least-squares similarity alignment of two point sets (Umeyama, 1991), with its residuals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Similarity:
    """``dst ~= scale * rotation @ src + translation``, fitted to corresponding points.

    Attributes:
        scale: isotropic scale (e.g. metres per reconstruction unit).
        rotation: (3, 3) proper rotation (determinant +1).
        translation: (3,) translation, in ``dst`` units.
        residuals: (N,) distance of each transformed ``src`` point from its ``dst`` point, in
            ``dst`` units.
    """

    scale: float
    rotation: np.ndarray
    translation: np.ndarray
    residuals: np.ndarray

    @property
    def matrix(self) -> np.ndarray:
        """(4, 4) homogeneous matrix of the similarity."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m

    @property
    def rms(self) -> float:
        """Root-mean-square residual, in ``dst`` units."""
        return float(np.sqrt(np.mean(self.residuals**2))) if len(self.residuals) else 0.0

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform (..., 3) points of the ``src`` frame into the ``dst`` frame."""
        return self.scale * np.asarray(points, float) @ self.rotation.T + self.translation


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> Similarity:
    """The similarity minimising ``sum |dst_i - (s R src_i + t)|^2`` (Umeyama's closed form).

    Args:
        src: (N, 3) points, e.g. camera centres of a reconstruction (arbitrary units).
        dst: (N, 3) corresponding points, e.g. the same cameras' GPS positions in ENU metres.
        with_scale: fit the scale; otherwise ``scale`` is 1 (a rigid motion).

    Returns:
        The fitted :class:`Similarity` with per-point residuals in ``dst`` units.

    Raises:
        ValueError: for fewer than 3 points, mismatched shapes, or ``src`` points that all coincide.
            Collinear points leave the rotation about their line undetermined; check
            :func:`spread_ratio` first.
    """
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3:
        raise ValueError(f"expected two (N, 3) arrays of the same shape, got {src.shape} and {dst.shape}")
    if len(src) < 3:
        raise ValueError(f"a similarity needs at least 3 point pairs, got {len(src)}")
    mu_src, mu_dst = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - mu_src, dst - mu_dst
    var_src = float(np.mean(np.sum(a * a, axis=1)))
    if var_src <= 1e-24:
        raise ValueError("the source points all coincide")
    cov = b.T @ a / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2] = -1.0  # the nearest proper rotation, not a reflection
    rotation = u @ np.diag(sign) @ vt
    scale = float(np.sum(d * sign) / var_src) if with_scale else 1.0
    translation = mu_dst - scale * rotation @ mu_src
    residuals = np.linalg.norm(dst - (scale * src @ rotation.T + translation), axis=1)
    return Similarity(scale, rotation, translation, residuals)


def spread_ratio(points: np.ndarray) -> float:
    """Second over first singular value of the centred points: 0 when collinear, 1 when isotropic.

    A similarity fitted to points with a small ratio (a single straight flight line) cannot fix
    the rotation about that line.
    """
    points = np.asarray(points, float)
    if len(points) < 2:
        return 0.0
    s = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
    return float(s[1] / s[0]) if s[0] > 0 else 0.0
