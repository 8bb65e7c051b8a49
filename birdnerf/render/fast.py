"""Evaluation rendering with the fused marching kernel (``csrc/march.cpp``).

:func:`render_rays_fast` is :func:`birdnerf.render.render_rays` with uniform steps and an
occupancy grid, its marching done in one C++ pass over the rays instead of a tensor per step. The
pass also gives each sample's point and direction, so the field is called without gathering them.
:func:`birdnerf.render.render_rays` is its reference twin: same samples, same field inputs, same
compositing (``tests/test_march_kernel.py``). Where the kernel cannot run (no compiler, rays not
float32 on the CPU, no grid), :func:`render_rays_fast` renders with the twin. The kernel also
renders each round's samples behind the earlier rounds (:class:`KernelGathered`, twin of
:class:`birdnerf.render.volume.Gathered`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from birdnerf.kernels import load_kernel
from birdnerf.render.occupancy import OccupancyGrid
from birdnerf.render.sampling import PackedSamples
from birdnerf.render.volume import Gathered, RenderOutput, Round, render_in_rounds, render_rays

SOURCE = Path(__file__).with_name("csrc") / "march.cpp"

PointsFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
"""``(points (S, 3), dirs (S, 3)) -> (rgbs (S, 3), sigmas (S,))``: the field at world points."""


@functools.cache
def march_kernel() -> ModuleType | None:
    """The compiled marching kernel, or None (one logged warning) when it cannot be built here."""
    return load_kernel("march", SOURCE, "marching evaluation rays in torch")


def kernel_can_march(grid: OccupancyGrid | None, *rays: Tensor) -> bool:
    """Whether :func:`march_occupied` can march rays given by ``rays`` (origins, directions,
    distances): all float32 on the CPU, a grid, and a kernel built here."""
    cpu32 = all(t.device.type == "cpu" and t.dtype == torch.float32 for t in rays)
    return grid is not None and cpu32 and march_kernel() is not None


def march_occupied(
    origins: Tensor,
    dirs: Tensor,
    t_near: Tensor,
    t_far: Tensor,
    step_size: float,
    grid: OccupancyGrid,
    cap: int,
) -> tuple[PackedSamples, Tensor, Tensor]:
    """``march_rays(origins, dirs, t_near, t_far, step_size, grid, max_samples_per_ray=cap)`` by the
    kernel (float32 CPU rays, uniform steps), and each sample's midpoint (S, 3) and direction (S, 3).
    """
    o_cells = grid.to_grid_coords(origins)
    d_cells = dirs / grid.cell_size.to(dirs.dtype)
    rays, starts, ends, t_resume, points, sample_dirs = march_kernel().march_occupied(
        *(t.contiguous() for t in (origins, dirs, o_cells, d_cells, t_near, t_far.to(t_near.dtype))),
        float(step_size),
        grid.binary.contiguous(),
        int(cap),
    )
    kept = torch.ones(origins.shape[0], dtype=torch.bool)
    return PackedSamples(rays, starts, ends, t_resume, kept), points, sample_dirs


class KernelGathered(Gathered):
    """:class:`~birdnerf.render.volume.Gathered` whose rounds are rendered by the kernel (float32
    CPU tensors): the same sums in one pass over each ray's samples."""

    __slots__ = ()

    def add(
        self,
        marched: PackedSamples,
        rays: Tensor,
        rgbs: Tensor,
        sigmas: Tensor,
        first_hit_opacity: float | None,
    ) -> None:
        hit = self.first_hit if self.first_hit is not None and first_hit_opacity is not None else None
        march_kernel().composite_round(
            rays.contiguous(),
            sigmas.contiguous(),
            rgbs.to(self.rgb.dtype).contiguous(),
            marched.t_starts.contiguous(),
            marched.t_ends.contiguous(),
            self.rgb,
            self.opacity,
            self.depth_sum,
            self.optical,
            self.rgb.new_zeros(0) if hit is None else hit,
            -math.log1p(-first_hit_opacity) if hit is not None else 0.0,
        )


@torch.no_grad()
def render_rays_fast(
    origins: Tensor,
    dirs: Tensor,
    t_near: Tensor,
    t_far: Tensor,
    points_fn: PointsFn,
    step_size: float,
    grid: OccupancyGrid | None,
    *,
    samples_per_round: int = 64,
    early_stop_eps: float = 1e-4,
    background: Tensor | None = None,
    first_hit_opacity: float | None = None,
) -> RenderOutput:
    """:func:`birdnerf.render.render_rays` (uniform steps) with the marching kernel; the field is
    ``points_fn(points, dirs)`` at the samples' midpoints. Arguments as for ``render_rays``."""
    if not kernel_can_march(grid, origins, dirs, t_near):

        def rgb_sigma(t0: Tensor, t1: Tensor, ray: Tensor) -> tuple[Tensor, Tensor]:
            return points_fn(origins[ray] + dirs[ray] * (0.5 * (t0 + t1))[:, None], dirs[ray])

        return render_rays(
            origins,
            dirs,
            t_near,
            t_far,
            rgb_sigma,
            step_size,
            grid,
            samples_per_round=samples_per_round,
            early_stop_eps=early_stop_eps,
            background=background,
            first_hit_opacity=first_hit_opacity,
        )

    def march_round(active: Tensor, t_cur: Tensor) -> Round:
        marched, points, sample_dirs = march_occupied(
            origins[active], dirs[active], t_cur, t_far[active], step_size, grid, samples_per_round
        )
        rays = active[marched.ray_indices]
        if rays.numel() == 0:
            return Round(marched, rays, None, None)
        return Round(marched, rays, *points_fn(points, sample_dirs))

    return render_in_rounds(
        march_round, t_near, t_far, early_stop_eps, background, first_hit_opacity, KernelGathered
    )
