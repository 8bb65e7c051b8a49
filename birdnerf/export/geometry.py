"""open3d, the optional geometry backend: normals of a point set and TSDF meshes of RGB-D views.

open3d is the ``export`` extra, imported on first use only.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np
import torch
from torch import Tensor

from birdnerf.errors import BirdnerfError
from birdnerf.export.views import RenderedView

OPEN3D_HINT = "pip install 'birdnerf[export]' (or: pip install open3d)"


def require_open3d() -> ModuleType:
    """The open3d module, or a BirdnerfError saying how to install it."""
    try:
        import open3d
    except ImportError:
        raise BirdnerfError(f"exporting point clouds and meshes needs open3d: {OPEN3D_HINT}") from None
    return open3d


def oriented_normals(xyz: np.ndarray, toward: np.ndarray, radius: float, max_nn: int = 30) -> np.ndarray:
    """(N, 3) unit normals of points (N, 3): open3d's local plane fit within ``radius`` (at most
    ``max_nn`` neighbours), each turned to face ``toward`` (N, 3), the side its cameras saw it
    from; where that is edge-on, to face up (+z)."""
    o3d = require_open3d()
    if len(xyz) == 0:
        return np.zeros((0, 3))
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.ascontiguousarray(xyz, np.float64)))
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=radius, max_nn=max_nn))
    normals = np.asarray(cloud.normals).copy()
    facing = np.einsum("ij,ij->i", normals, toward)
    up = np.where(np.abs(facing) < 1e-3, normals[:, 2], facing)
    normals[up < 0] *= -1
    return normals


@dataclass
class Mesh:
    """A triangle mesh: vertices (V, 3) float64, triangles (T, 3) int32, colours (V, 3) uint8,
    vertex normals (V, 3)."""

    vertices: np.ndarray
    triangles: np.ndarray
    colors: np.ndarray
    normals: np.ndarray


def tsdf_mesh(views: list[RenderedView], masks: list[Tensor], voxel: float, trunc_voxels: float) -> Mesh:
    """Integrate the masked depth of ``views`` into a TSDF (open3d's VoxelBlockGrid: voxel edge
    ``voxel`` in scene units, truncation ``trunc_voxels`` voxels) and extract its triangle mesh
    with vertex colours (marching cubes over voxels that at least one view observed)."""
    o3d = require_open3d()
    o3c = o3d.core
    grid = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight", "color"),
        attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
        attr_channels=((1), (1), (3)),
        voxel_size=float(voxel),
        block_resolution=8,
        block_count=4096,  # initial size of its hash table, which grows as blocks are touched
        device=o3c.Device("CPU:0"),
    )
    integrated = 0
    for view, mask in zip(views, masks, strict=True):
        depth = torch.where(mask, view.depth, 0.0).float().numpy()
        if not (depth > 0).any():
            continue
        integrated += 1
        cam = view.cam
        k = o3c.Tensor(np.array([[cam.fx, 0, cam.cx], [0, cam.fy, cam.cy], [0, 0, 1]]), o3c.float64)
        w2c = o3c.Tensor(np.linalg.inv(view.c2w), o3c.float64)
        depth_img = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(depth)))
        color_img = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(view.rgb.float().numpy())))
        far = float(depth.max()) * 1.01
        coords = grid.compute_unique_block_coordinates(depth_img, k, w2c, 1.0, far, trunc_voxels)
        grid.integrate(coords, depth_img, color_img, k, k, w2c, 1.0, far, trunc_voxels)
    if not integrated:
        return Mesh(
            np.zeros((0, 3)), np.zeros((0, 3), np.int32), np.zeros((0, 3), np.uint8), np.zeros((0, 3))
        )
    mesh = grid.extract_triangle_mesh(weight_threshold=1.0).to_legacy()
    mesh.compute_vertex_normals()
    colors = np.asarray(mesh.vertex_colors).reshape(-1, 3)
    return Mesh(
        vertices=np.asarray(mesh.vertices).copy(),
        triangles=np.asarray(mesh.triangles).astype(np.int32).reshape(-1, 3),
        colors=(np.clip(colors, 0, 1) * 255 + 0.5).astype(np.uint8),
        normals=np.asarray(mesh.vertex_normals).copy().reshape(-1, 3),
    )


def crop_mesh(mesh: Mesh, keep: np.ndarray) -> Mesh:
    """The triangles where ``keep`` (T,) is set, with only the vertices they use (renumbered)."""
    triangles = mesh.triangles[keep]
    used = np.unique(triangles)
    renumber = np.full(len(mesh.vertices), -1, dtype=np.int64)
    renumber[used] = np.arange(len(used))
    return Mesh(
        vertices=mesh.vertices[used],
        triangles=renumber[triangles].astype(np.int32),
        colors=mesh.colors[used],
        normals=mesh.normals[used],
    )
