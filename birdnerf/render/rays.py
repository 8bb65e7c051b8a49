"""Where rays enter and leave an axis-aligned box: the slab test, and near/far bounds for marching.

A ray is ``x(t) = origin + t * dir``. ``t`` is measured in units of ``|dir|``, so with the unit
directions of :func:`birdnerf.scene.camera_rays` it is a distance in metres along the ray (not a
depth along the camera's z axis).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def as_aabb(aabb: Tensor | Sequence[float], like: Tensor) -> Tensor:
    """The box ``(xmin, ymin, zmin, xmax, ymax, zmax)`` as a (6,) tensor on ``like``'s device/dtype."""
    box = torch.as_tensor(aabb).to(device=like.device, dtype=like.dtype).reshape(-1)
    if box.numel() != 6:
        raise ValueError(f"an aabb has 6 values (xmin, ymin, zmin, xmax, ymax, zmax), got {box.numel()}")
    return box


def ray_aabb(
    origins: Tensor,
    dirs: Tensor,
    aabb: Tensor | Sequence[float],
    near_plane: float = 0.0,
    eps: float = 1e-12,
) -> tuple[Tensor, Tensor, Tensor]:
    """Intersect rays with an axis-aligned box by the slab method.

    Per axis a, the ray is between the box's two planes for ``t`` in
    ``[min(t0_a, t1_a), max(t0_a, t1_a)]`` with ``t0_a = (lo_a - o_a) / d_a`` and
    ``t1_a = (hi_a - o_a) / d_a``; the segment inside the box is the intersection over the three
    axes: ``t_near = max(near_plane, max_a min(t0_a, t1_a))`` and ``t_far = min_a max(t0_a, t1_a)``.
    A direction component with ``|d_a| < eps`` is parallel to that slab: the axis then allows every
    ``t`` when ``lo_a <= o_a <= hi_a`` (boundaries included) and none otherwise, without a division
    by zero, so the result never holds NaN.

    Args:
        origins: (..., 3) ray origins, world metres.
        dirs: (..., 3) ray directions (need not be unit; ``t`` is in units of ``|dir|``).
        aabb: (6,) box ``(xmin, ymin, zmin, xmax, ymax, zmax)``, world metres.
        near_plane: smallest ``t`` returned; rays starting inside the box get ``t_near = near_plane``
            (0 by default), and the box behind the origin is never reported.
        eps: threshold below which a direction component counts as zero.

    Returns:
        ``t_near`` (...,), ``t_far`` (...,) in the dtype of ``origins``, and ``hit`` (...,) bool: True
        where the ray crosses the box over a segment of positive length in front of ``near_plane``.
        Touching only an edge or a corner (a zero-length segment) counts as a miss. Where ``hit``
        is False, ``t_near = t_far = 0``, so a marcher places no sample on that ray.

    Example:
        >>> o = torch.tensor([[0.5, 0.5, 2.0]]); d = torch.tensor([[0.0, 0.0, -1.0]])
        >>> ray_aabb(o, d, torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]))
        (tensor([1.]), tensor([2.]), tensor([True]))
    """
    box = as_aabb(aabb, origins)
    lo, hi = box[:3], box[3:]
    dirs = dirs.to(origins.dtype)
    parallel = dirs.abs() < eps
    safe_dirs = torch.where(parallel, torch.ones_like(dirs), dirs)
    t0 = (lo - origins) / safe_dirs
    t1 = (hi - origins) / safe_dirs
    inf = torch.full_like(t0, float("inf"))
    within = (origins >= lo) & (origins <= hi)
    t_lo = torch.where(parallel, torch.where(within, -inf, inf), torch.minimum(t0, t1))
    t_hi = torch.where(parallel, torch.where(within, inf, -inf), torch.maximum(t0, t1))
    t_near = t_lo.amax(dim=-1).clamp_min(near_plane)
    t_far = t_hi.amin(dim=-1)
    # A zero direction inside the box gives t_far = inf: no finite segment, treat as a miss.
    hit = (t_far > t_near) & torch.isfinite(t_far)
    zero = torch.zeros_like(t_near)
    return torch.where(hit, t_near, zero), torch.where(hit, t_far, zero), hit


def aabb_diagonal(aabb: Tensor | Sequence[float]) -> float:
    """Length of the box's diagonal in metres; e.g. ``aabb_diagonal(box) / 512`` is a step size."""
    box = torch.as_tensor(aabb, dtype=torch.float64).reshape(-1)
    return float((box[3:] - box[:3]).norm())
