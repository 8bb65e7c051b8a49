"""Multi-view depth consistency, and fusing a block's views into one coloured point set.

A pixel's surface point is kept when it reprojects into at least ``min_agree`` of the nearest
other views, in front of them, onto a pixel whose own rendered depth agrees with the point's
depth in that view within ``tolerance`` (relative: ``|d_j - z_j| <= tolerance * z_j``). A
single view's depth is the NeRF's guess along one ray; where several independent rays agree on
the surface it is measured, where they do not it is a floater or a smear and is dropped.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from birdnerf.export.views import RenderedView, project, unproject


def neighbours(views: list[RenderedView], count: int) -> list[list[int]]:
    """For each view, the ``count`` other views with the nearest camera centres."""
    centers = np.stack([v.center for v in views])
    dist = np.linalg.norm(centers[:, None] - centers[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    order = np.argsort(dist, axis=1, kind="stable")[:, : min(count, len(views) - 1)]
    return [row.tolist() for row in order]


def agreeing_views(points: Tensor, views: list[RenderedView], others: list[int], tolerance: float) -> Tensor:
    """(N,) how many of ``views[j] for j in others`` see the world ``points`` (N, 3) at their depth."""
    count = torch.zeros(points.shape[0], dtype=torch.long)
    for j in others:
        u, v, z = project(views[j], points)
        seen = u >= 0
        rendered = torch.zeros_like(z)
        rendered[seen] = views[j].depth[v[seen], u[seen]]
        agree = seen & (rendered > 0) & ((rendered - z).abs() <= tolerance * z)
        count += agree.long()
    return count


def consistent_masks(
    views: list[RenderedView], tolerance: float, min_agree: int, n_neighbours: int
) -> list[Tensor]:
    """Per view, the (H, W) pixels with a surface that ``min_agree`` neighbouring views confirm."""
    masks = []
    near = neighbours(views, n_neighbours)
    for view, others in zip(views, near, strict=True):
        solid = view.depth > 0
        keep = torch.zeros_like(solid)
        if len(others) >= min_agree:
            counts = agreeing_views(unproject(view, solid), views, others, tolerance)
            keep[solid] = counts >= min_agree
        masks.append(keep)
    return masks


def fused_points(views: list[RenderedView], masks: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """World points (N, 3) float64, colours (N, 3) float32 and unit vectors towards the camera
    that saw each (N, 3) float64, of every masked pixel of every view."""
    xyz, rgb, toward = [], [], []
    for view, mask in zip(views, masks, strict=True):
        p = unproject(view, mask)
        xyz.append(p)
        rgb.append(view.rgb[mask].float())
        d = torch.from_numpy(view.center) - p
        toward.append(d / d.norm(dim=1, keepdim=True).clamp_min(1e-12))
    if not xyz:
        return (
            torch.zeros(0, 3, dtype=torch.float64),
            torch.zeros(0, 3),
            torch.zeros(0, 3, dtype=torch.float64),
        )
    return torch.cat(xyz), torch.cat(rgb), torch.cat(toward)


def voxel_merge(xyz: Tensor, rgb: Tensor, toward: Tensor, voxel: float) -> tuple[Tensor, Tensor, Tensor]:
    """One point per occupied voxel (a grid of edge ``voxel`` anchored at the origin, so blocks'
    grids line up): the mean position, colour and camera direction of the points in it."""
    if xyz.shape[0] == 0:
        return xyz, rgb, toward
    keys = torch.floor(xyz / voxel).long()
    _, inverse, counts = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
    n = counts.shape[0]

    def mean(values: Tensor) -> Tensor:
        out = values.new_zeros(n, values.shape[1]).index_add_(0, inverse, values)
        return out / counts[:, None].to(values.dtype)

    merged_toward = mean(toward)
    merged_toward = merged_toward / merged_toward.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return mean(xyz), mean(rgb), merged_toward
