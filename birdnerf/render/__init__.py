"""Functional rendering core: ray/box intersection, occupancy-pruned marching, volume rendering.

Tensors in, tensors out, on the device of the inputs. Coordinates are world metres; ``t`` is the
distance along a ray in units of its direction's length (metres for unit directions).
"""

from birdnerf.render.occupancy import OccupancyGrid
from birdnerf.render.rays import aabb_diagonal, ray_aabb
from birdnerf.render.sampling import PackedSamples, march_rays, sample_midpoints
from birdnerf.render.volume import (
    RenderOutput,
    accumulate_along_rays,
    composite_background,
    distortion_loss,
    distortion_loss_dense,
    exclusive_sum_per_ray,
    opacity_entropy_loss,
    render_rays,
    render_weights,
    render_weights_dense,
    sparsity_loss,
    termination_mask,
    volume_render,
)

__all__ = [
    "OccupancyGrid",
    "PackedSamples",
    "RenderOutput",
    "aabb_diagonal",
    "accumulate_along_rays",
    "composite_background",
    "distortion_loss",
    "distortion_loss_dense",
    "exclusive_sum_per_ray",
    "march_rays",
    "opacity_entropy_loss",
    "ray_aabb",
    "render_rays",
    "render_weights",
    "render_weights_dense",
    "sample_midpoints",
    "sparsity_loss",
    "termination_mask",
    "volume_render",
]
