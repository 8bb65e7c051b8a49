"""RGB-D views of a block: its training viewpoints composited from the trained blocks.

Views are rendered through :func:`birdnerf.composite.render_view` (the fast path) with a
distortion-free pinhole camera of the photo's intrinsics, scaled, so that their depth maps back-
project exactly with :func:`unproject` and project with :func:`project`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from birdnerf.composite import BlendIndex, BlockCache, render_view
from birdnerf.partition.manifest import Block, Partition
from birdnerf.scene.camera import DISTORTION_KEYS, Camera
from birdnerf.scene.scene import Scene


@dataclass
class RenderedView:
    """One rendered viewpoint.

    Attributes:
        name: the photo it was rendered at.
        cam: pinhole intrinsics at the rendered size (no distortion).
        c2w: (4, 4) float64 camera-to-world, OpenCV axes, run's world frame.
        depth: (H, W) float64 z-depth along the optical axis (scene units); 0 where the ray's
            opacity stays under the threshold (it meets nothing solid).
        rgb: (H, W, 3) float32 colours in [0, 1].
    """

    name: str
    cam: Camera
    c2w: np.ndarray
    depth: Tensor
    rgb: Tensor

    @property
    def center(self) -> np.ndarray:
        return self.c2w[:3, 3]


def pinhole(cam: Camera, scale: float) -> Camera:
    """``cam`` resized by ``scale``, without lens distortion (renders are ideal pinhole images)."""
    return replace(cam.scaled(scale), **{k: 0.0 for k in DISTORTION_KEYS})


def block_views(scene: Scene, block: Block, max_views: int) -> list[int]:
    """Scene indices of the block's training photos, at most ``max_views`` of them, evenly spread
    over the block's list (which follows the photo names, so the flight order)."""
    lookup = {name: i for i, name in enumerate(scene.names)}
    indices = [lookup[n] for n in block.images if n in lookup]
    if len(indices) > max_views:
        picks = np.linspace(0, len(indices) - 1, max_views).round().astype(int)
        indices = [indices[k] for k in picks]
    return indices


def render_views(
    partition: Partition,
    cache: BlockCache,
    index: BlendIndex,
    scene: Scene,
    indices: list[int],
    scale: float,
    min_opacity: float,
) -> list[RenderedView]:
    """Render photos ``indices`` of ``scene`` (world frame) as RGB-D views."""
    views = []
    for i in indices:
        cam = pinhole(scene.cameras[i], scale)
        out = render_view(partition, cache, cam, scene.c2w[i], fast=True, index=index)
        depth = out.depth.double()
        solid = (out.opacity >= min_opacity) & torch.isfinite(depth) & (depth > 0)
        views.append(
            RenderedView(scene.names[i], cam, scene.c2w[i].copy(), torch.where(solid, depth, 0.0), out.rgb)
        )
    return views


def unproject(view: RenderedView, mask: Tensor) -> Tensor:
    """(N, 3) float64 world points of the pixels where ``mask`` (H, W) is set (their centres)."""
    v, u = torch.nonzero(mask, as_tuple=True)
    z = view.depth[v, u]
    cam = view.cam
    x = (u.double() + 0.5 - cam.cx) / cam.fx * z
    y = (v.double() + 0.5 - cam.cy) / cam.fy * z
    c2w = torch.from_numpy(view.c2w)
    return torch.stack([x, y, z], dim=1) @ c2w[:3, :3].T + c2w[:3, 3]


def project(view: RenderedView, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Pixel column (N,), row (N,) (int64, -1 outside the image) and z-depth (N,) of world points."""
    c2w = torch.from_numpy(view.c2w)
    p = (points - c2w[:3, 3]) @ c2w[:3, :3]
    z = p[:, 2]
    safe = z.clamp_min(1e-9)
    cam = view.cam
    u = torch.floor(p[:, 0] / safe * cam.fx + cam.cx)
    v = torch.floor(p[:, 1] / safe * cam.fy + cam.cy)
    inside = (z > 0) & (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
    u = torch.where(inside, u, -1).long()
    v = torch.where(inside, v, -1).long()
    return u, v, z
