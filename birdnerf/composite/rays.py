"""Ray sources of a composited view: where each band of pixel rows sends its rays.

:func:`birdnerf.composite.view.render_rays_view` blends the blocks along any rays; a ray source
says which. :class:`PinholeRays` is a photo-like camera (perspective, OpenCV axes, distortion
handled by :func:`birdnerf.scene.camera.camera_rays`); :class:`OrthoRays` is a true orthographic
camera looking straight down, one vertical ray per cell of a north-up ground raster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from birdnerf.scene.camera import Camera, camera_rays, pixel_centers


class RaySource(Protocol):
    """An image of ``height`` x ``width`` pixels whose rays come in bands of whole rows."""

    height: int
    width: int

    def band(self, row0: int, n_rows: int, device) -> tuple[Tensor, Tensor]:
        """Origins (n_rows * width, 3) and unit directions (same) of rows ``row0 .. row0 + n_rows``,
        row-major, float32 on ``device``."""
        ...

    def depth_axis(self) -> Tensor:
        """(3,) the axis along which the view's depth is measured (a camera's optical axis)."""
        ...


@dataclass
class PinholeRays:
    """The rays of camera ``cam`` at pose ``c2w`` ((4, 4) camera-to-world, OpenCV axes)."""

    cam: Camera
    c2w: np.ndarray

    def __post_init__(self) -> None:
        self.height, self.width = self.cam.height, self.cam.width
        self._centers = pixel_centers(self.cam, torch.float64)

    def band(self, row0: int, n_rows: int, device) -> tuple[Tensor, Tensor]:
        o, d = camera_rays(self.cam, torch.from_numpy(self.c2w), self._centers[row0 : row0 + n_rows])
        return o.reshape(-1, 3).float().to(device), d.reshape(-1, 3).float().to(device)

    def depth_axis(self) -> Tensor:
        return torch.from_numpy(np.asarray(self.c2w)[:3, 2]).float()


@dataclass
class OrthoRays:
    """Vertical rays (0, 0, -1) from height ``z_top`` through the cell centres of a raster.

    Column ``i``, row ``j`` is the cell whose centre is ``(x0 + (i + 0.5) gsd, y1 - (j + 0.5) gsd)``:
    row 0 is the northern (largest y) edge, as in a north-up image. Depth is the distance below
    ``z_top``, so a surface's height is ``z_top - depth``.

    Attributes:
        x0: world x of the raster's western edge, metres.
        y1: world y of its northern edge, metres.
        gsd: cell size (ground sampling distance), metres.
        width, height: cells along x and y.
        z_top: world z the rays start from, metres (above every block's box).
    """

    x0: float
    y1: float
    gsd: float
    width: int
    height: int
    z_top: float

    def cell_centers(self, row0: int, n_rows: int, col0: int = 0, n_cols: int | None = None) -> Tensor:
        """(n_rows * n_cols, 2) float64 world x, y of a window's cell centres, row-major."""
        n_cols = self.width - col0 if n_cols is None else n_cols
        x = self.x0 + (torch.arange(col0, col0 + n_cols, dtype=torch.float64) + 0.5) * self.gsd
        y = self.y1 - (torch.arange(row0, row0 + n_rows, dtype=torch.float64) + 0.5) * self.gsd
        yy, xx = torch.meshgrid(y, x, indexing="ij")
        return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)

    def band(self, row0: int, n_rows: int, device) -> tuple[Tensor, Tensor]:
        xy = self.cell_centers(row0, n_rows)
        origins = torch.cat([xy, torch.full_like(xy[:, :1], self.z_top)], dim=1).float().to(device)
        dirs = torch.zeros_like(origins)
        dirs[:, 2] = -1.0
        return origins, dirs

    def depth_axis(self) -> Tensor:
        return torch.tensor([0.0, 0.0, -1.0])
