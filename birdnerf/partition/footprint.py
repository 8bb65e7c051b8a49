"""Ground footprints: where each photo's pixels meet the ground plane, seen from above.

A pixel's ray meets the plane z = ground_z at ``t = (ground_z - o_z) / d_z``. Oblique photos can
see to the horizon, so every ground point is clipped to a horizontal range of
``max_range_factor x altitude`` from the camera: rays that point above the horizon, or meet the
ground further away, are cut at that range along their bird-view direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from birdnerf.scene.camera import Camera, pixel_directions
from birdnerf.scene.scene import Scene

MAX_RANGE_FACTOR = 3.0
"""Default clip of oblique footprints and ground points: this multiple of the altitude."""


@dataclass
class Footprints:
    """Bird-view footprints of N photos.

    Attributes:
        outline: (N, K, 2) polygon of each photo's image border on the ground (x, y metres).
        samples: (N, G*G, 2) ground points of a G x G grid of pixels spread over each photo.
        center: (N, 2) ground point of each photo's central pixel.
        altitude: (N,) camera height above the ground plane.
    """

    outline: np.ndarray
    samples: np.ndarray
    center: np.ndarray
    altitude: np.ndarray

    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of all outlines: the surveyed area."""
        pts = self.outline.reshape(-1, 2)
        return (
            float(pts[:, 0].min()),
            float(pts[:, 1].min()),
            float(pts[:, 0].max()),
            float(pts[:, 1].max()),
        )


def _border_uv(cam: Camera, per_edge: int) -> np.ndarray:
    """(4 * per_edge, 2) pixel positions walking around the image border, clockwise."""
    s = np.linspace(0.0, 1.0, per_edge, endpoint=False)
    w, h = cam.width, cam.height
    top = np.stack([s * w, np.zeros_like(s)], 1)
    right = np.stack([np.full_like(s, w), s * h], 1)
    bottom = np.stack([(1 - s) * w, np.full_like(s, h)], 1)
    left = np.stack([np.zeros_like(s), (1 - s) * h], 1)
    return np.concatenate([top, right, bottom, left])


def _grid_uv(cam: Camera, g: int) -> np.ndarray:
    """(g * g, 2) pixel positions at the centres of a g x g tiling of the image."""
    u = (np.arange(g) + 0.5) / g * cam.width
    v = (np.arange(g) + 0.5) / g * cam.height
    uu, vv = np.meshgrid(u, v, indexing="xy")
    return np.stack([uu.ravel(), vv.ravel()], 1)


def ground_hits(
    origins: np.ndarray, dirs: np.ndarray, ground_z: float, max_range_factor: float
) -> np.ndarray:
    """Bird-view points where rays meet z = ground_z, clipped to the horizontal range.

    Args:
        origins: (N, 1, 3) camera centres; dirs: (N, P, 3) world ray directions.
    Returns:
        (N, P, 2) ground points.
    """
    altitude = np.maximum(origins[..., 2] - ground_z, 1e-6)  # (N, 1)
    horiz = dirs[..., :2]
    horiz_len = np.maximum(np.sqrt(horiz[..., 0] ** 2 + horiz[..., 1] ** 2), 1e-12)
    t_range = max_range_factor * altitude / horiz_len  # ray length that reaches the range limit
    dz = dirs[..., 2]
    down = dz < -1e-9
    t_ground = (ground_z - origins[..., 2]) / np.where(down, dz, -1.0)
    t = np.where(down, np.minimum(t_ground, t_range), t_range)
    return origins[..., :2] + t[..., None] * horiz


def compute_footprints(
    scene: Scene, grid: int = 8, per_edge: int = 6, max_range_factor: float = MAX_RANGE_FACTOR
) -> Footprints:
    """Footprints of every photo of a z-up ``scene`` on its ground plane ``scene.ground_z``.

    Photos sharing intrinsics are processed together, so 100k photos take about a second.
    """
    n = len(scene)
    ground_z = float(scene.ground_z or 0.0)
    k, p = 4 * per_edge, grid * grid
    outline = np.empty((n, k, 2))
    samples = np.empty((n, p, 2))
    center = np.empty((n, 2))
    groups: dict[Camera, list[int]] = {}
    for i, cam in enumerate(scene.cameras):
        groups.setdefault(cam, []).append(i)
    for cam, members in groups.items():
        idx = np.asarray(members)
        uv = np.concatenate([_border_uv(cam, per_edge), _grid_uv(cam, grid), [[cam.cx, cam.cy]]])
        d_cam = pixel_directions(cam, torch.from_numpy(uv)).numpy()  # (P', 3)
        rot = scene.c2w[idx, :3, :3]
        dirs = np.matmul(rot, d_cam.T).transpose(0, 2, 1)  # (n, P', 3)
        hits = ground_hits(scene.c2w[idx, None, :3, 3], dirs, ground_z, max_range_factor)
        outline[idx], samples[idx], center[idx] = hits[:, :k], hits[:, k : k + p], hits[:, -1]
    altitude = scene.c2w[:, 2, 3] - ground_z
    return Footprints(outline=outline, samples=samples, center=center, altitude=altitude)


def ground_points(
    origins: torch.Tensor, dirs: torch.Tensor, ground_z: float, max_range_factor: float = MAX_RANGE_FACTOR
) -> torch.Tensor:
    """(..., 2) bird-view points where rays meet the ground plane (clipped like footprints)."""
    o = origins.detach().double().cpu().numpy().reshape(-1, 1, 3)
    d = dirs.detach().double().cpu().numpy().reshape(-1, 1, 3)
    hits = ground_hits(o, d, ground_z, max_range_factor)
    return torch.from_numpy(hits.reshape(*origins.shape[:-1], 2)).to(origins)


def in_rect(points: torch.Tensor, rect: list[float]) -> torch.Tensor:
    """Boolean mask of (..., 2) points inside rect = (xmin, ymin, xmax, ymax)."""
    x, y = points[..., 0], points[..., 1]
    return (x >= rect[0]) & (x <= rect[2]) & (y >= rect[1]) & (y <= rect[3])
