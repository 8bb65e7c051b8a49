"""Projection-guided compositing: blend weights, block cache, view rendering, camera paths."""

from birdnerf.composite.blend import BlendIndex, SparseWeights, block_weights
from birdnerf.composite.cache import BlockCache, load_block_model
from birdnerf.composite.path import CameraPath, flyover_path, orbit_path, read_camera_path, write_camera_path
from birdnerf.composite.rays import OrthoRays, PinholeRays, RaySource
from birdnerf.composite.stage import RenderSummary, render_run
from birdnerf.composite.view import ViewRender, render_rays_view, render_view, visible_blocks

__all__ = [
    "BlendIndex",
    "SparseWeights",
    "BlockCache",
    "CameraPath",
    "OrthoRays",
    "PinholeRays",
    "RaySource",
    "RenderSummary",
    "ViewRender",
    "block_weights",
    "flyover_path",
    "load_block_model",
    "orbit_path",
    "read_camera_path",
    "render_rays_view",
    "render_run",
    "render_view",
    "visible_blocks",
    "write_camera_path",
]
