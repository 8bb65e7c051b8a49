"""Pinhole cameras with lens distortion, and the rays through their pixels.

Convention (the only one inside birdnerf): a camera-to-world matrix ``c2w`` (4x4) maps camera
coordinates in the **OpenCV** frame -- x right, y down, z forward (the viewing direction) --
to world coordinates. Pixel (u, v) has its origin at the top-left corner of the top-left pixel,
so the centre of pixel (i, j) is (i + 0.5, j + 0.5). Readers convert to this at the boundary.

Distortion follows OpenCV's model: radial k1..k4 (polynomial in r^2 up to r^8) and tangential
p1, p2, applied to normalised image coordinates. SIMPLE_RADIAL / RADIAL / OPENCV / PINHOLE
cameras of COLMAP and nerfstudio are all special cases.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")


@dataclass(frozen=True)
class Camera:
    """Intrinsics of one photo, in pixels of the image as stored on disk."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    k1: float = 0.0
    k2: float = 0.0
    k3: float = 0.0
    k4: float = 0.0
    p1: float = 0.0
    p2: float = 0.0

    @property
    def has_distortion(self) -> bool:
        return any(getattr(self, k) != 0.0 for k in DISTORTION_KEYS)

    @property
    def model(self) -> str:
        """nerfstudio camera model name: PINHOLE without distortion, OPENCV with it."""
        return "OPENCV" if self.has_distortion else "PINHOLE"

    def scaled(self, factor: float) -> Camera:
        """The same camera for an image resized by ``factor`` (e.g. 0.5 halves width and height)."""
        return replace(
            self,
            width=int(round(self.width * factor)),
            height=int(round(self.height * factor)),
            fx=self.fx * factor,
            fy=self.fy * factor,
            cx=self.cx * factor,
            cy=self.cy * factor,
        )

    def validate(self) -> str | None:
        """Return a description of what is wrong with these intrinsics, or None."""
        values = [self.fx, self.fy, self.cx, self.cy] + [getattr(self, k) for k in DISTORTION_KEYS]
        if not all(float(v) == float(v) and abs(float(v)) != float("inf") for v in values):
            return "camera intrinsics contain NaN or infinity"
        if self.width <= 0 or self.height <= 0:
            return f"image size {self.width}x{self.height} is not positive"
        if self.fx <= 0 or self.fy <= 0:
            return f"focal length ({self.fx}, {self.fy}) must be positive"
        return None


def distort(cam: Camera, xy: Tensor) -> Tensor:
    """Apply lens distortion to normalised coordinates ``xy`` (..., 2) = (x/z, y/z)."""
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1 + r2 * (cam.k1 + r2 * (cam.k2 + r2 * (cam.k3 + r2 * cam.k4)))
    dx = 2 * cam.p1 * x * y + cam.p2 * (r2 + 2 * x * x)
    dy = cam.p1 * (r2 + 2 * y * y) + 2 * cam.p2 * x * y
    return torch.stack([x * radial + dx, y * radial + dy], dim=-1)


def undistort(cam: Camera, xy_distorted: Tensor, iterations: int = 12) -> Tensor:
    """Invert :func:`distort` by Newton's method on normalised coordinates (..., 2)."""
    if not cam.has_distortion:
        return xy_distorted
    xy = xy_distorted.clone()
    eps = 1e-6
    for _ in range(iterations):
        f = distort(cam, xy) - xy_distorted
        # Jacobian by finite differences: 2x2 per point, cheap and model-agnostic.
        jx = (distort(cam, xy + torch.tensor([eps, 0.0], dtype=xy.dtype)) - distort(cam, xy)) / eps
        jy = (distort(cam, xy + torch.tensor([0.0, eps], dtype=xy.dtype)) - distort(cam, xy)) / eps
        a, c = jx[..., 0], jx[..., 1]
        b, d = jy[..., 0], jy[..., 1]
        det = a * d - b * c
        det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
        step_x = (d * f[..., 0] - b * f[..., 1]) / det
        step_y = (-c * f[..., 0] + a * f[..., 1]) / det
        xy = xy - torch.stack([step_x, step_y], dim=-1)
    return xy


def pixel_directions(cam: Camera, uv: Tensor) -> Tensor:
    """Camera-frame (OpenCV) unit ray directions through pixel positions ``uv`` (..., 2)."""
    xy = torch.stack([(uv[..., 0] - cam.cx) / cam.fx, (uv[..., 1] - cam.cy) / cam.fy], dim=-1)
    xy = undistort(cam, xy)
    d = torch.cat([xy, torch.ones_like(xy[..., :1])], dim=-1)
    return d / d.norm(dim=-1, keepdim=True)


def camera_rays(cam: Camera, c2w: Tensor, uv: Tensor) -> tuple[Tensor, Tensor]:
    """World-space rays through pixel positions.

    Args:
        cam: intrinsics.
        c2w: (4, 4) or (3, 4) camera-to-world, OpenCV axes.
        uv: (..., 2) pixel positions (use ``+ 0.5`` for pixel centres).

    Returns:
        origins (..., 3) and unit directions (..., 3), in the dtype of ``uv``.
    """
    c2w = c2w.to(uv.dtype)
    d_cam = pixel_directions(cam, uv)
    dirs = d_cam @ c2w[:3, :3].T
    origins = c2w[:3, 3].expand_as(dirs)
    return origins, dirs


def pixel_centers(cam: Camera, dtype: torch.dtype = torch.float32) -> Tensor:
    """(H, W, 2) pixel-centre positions (u, v) of every pixel of ``cam``."""
    v, u = torch.meshgrid(
        torch.arange(cam.height, dtype=dtype) + 0.5,
        torch.arange(cam.width, dtype=dtype) + 0.5,
        indexing="ij",
    )
    return torch.stack([u, v], dim=-1)


def project(cam: Camera, c2w: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
    """Project world points (..., 3) to pixels (..., 2); also returns depth along +z (..., )."""
    c2w = c2w.to(points.dtype)
    R, t = c2w[:3, :3], c2w[:3, 3]
    p_cam = (points - t) @ R
    z = p_cam[..., 2]
    xy = p_cam[..., :2] / z.clamp_min(1e-9).unsqueeze(-1)
    xy = distort(cam, xy)
    uv = torch.stack([xy[..., 0] * cam.fx + cam.cx, xy[..., 1] * cam.fy + cam.cy], dim=-1)
    return uv, z
