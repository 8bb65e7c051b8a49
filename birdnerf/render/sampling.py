"""Ray marching with empty-space skipping: packed samples in occupied cells only.

Marching places interval boundaries along each ray at ``b_0 = t_near`` and
``b_j = pos(j - 1 + u)`` for ``j >= 1``, clipped to ``t_far``, where ``pos(k)`` is the position
after ``k`` steps from ``t_near`` with step ``clamp(cone_angle * t, step_size, max_step_size)``
(uniform steps when ``cone_angle = 0``) and ``u`` is 1 at evaluation (``b_j = t_near + j *
step_size``) or uniform in (0, 1] per ray when stratified (the whole grid shifts by a random
fraction of a step). The intervals ``[b_{j-1}, b_j]`` tile ``[t_near, t_far]`` exactly; those whose
midpoint falls in an empty cell of the occupancy grid are dropped.

Samples come back *packed*: flat tensors of all kept intervals, grouped by ray in ray order and
sorted by ``t`` within a ray -- the layout :mod:`birdnerf.render.volume` expects.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor

from birdnerf.render.occupancy import OccupancyGrid


class PackedSamples(NamedTuple):
    """Intervals along rays, packed. S = number of samples, N = number of rays marched.

    Attributes:
        ray_indices: (S,) int64, non-decreasing: the ray (row of ``origins``) of each sample.
        t_starts: (S,) start of each interval, in ``t`` units (metres for unit directions).
        t_ends: (S,) end of each interval; the field is usually evaluated at the midpoint.
        t_resume: (N,) where marching of each ray stopped: ``t_far`` for a ray marched to the
            end, the last kept ``t_end`` for a ray cut by ``max_samples_per_ray``, ``t_near`` for
            a ray dropped by ``max_total_samples``. Marching again from ``t_near=t_resume``
            continues the same ray.
        ray_kept: (N,) bool; False for rays dropped whole by ``max_total_samples`` (they have no
            samples and should be left out of a loss or marched again).
    """

    ray_indices: Tensor
    t_starts: Tensor
    t_ends: Tensor
    t_resume: Tensor
    ray_kept: Tensor


class _StepSchedule:
    """``pos(k)``: where a ray is after ``k`` (real, >= 0) steps from ``t0`` (N,), and its inverse.

    With step ``s(t) = clamp(c * t, a, b)`` the march has three phases: uniform steps ``a`` while
    ``t < a / c``, geometric growth ``t * (1 + c)`` while ``t < b / c``, uniform steps ``b`` after.
    ``k1`` and ``k2`` are the step counts of the first two phases, ``g0`` and ``u0`` the positions
    where the second and third begin.
    """

    def __init__(self, t0: Tensor, a: float, b: float, c: float):
        self.t0, self.a, self.b, self.c = t0, a, b, c
        if c <= 0:
            return
        self.log_r = math.log1p(c)
        self.k1 = ((a / c - t0) / a).clamp_min(0).ceil()
        self.g0 = t0 + self.k1 * a
        self.k2 = (torch.log(b / c / self.g0) / self.log_r).clamp_min(0).ceil()
        self.u0 = self.g0 * torch.exp(self.k2 * self.log_r)

    def position(self, k: Tensor, rays: Tensor) -> Tensor:
        """``pos(k)`` for steps ``k`` (M,) of rays ``rays`` (M,)."""
        t0 = self.t0.index_select(0, rays)
        if self.c <= 0:
            return torch.addcmul(t0, k, k.new_tensor(self.a))
        k1, k2, g0 = (v.index_select(0, rays) for v in (self.k1, self.k2, self.g0))
        geometric = g0 * torch.exp((k - k1) * self.log_r)
        out = torch.where(k < k1, t0 + k * self.a, geometric)
        if math.isfinite(self.b):
            out = torch.where(k < k1 + k2, out, self.u0.index_select(0, rays) + (k - k1 - k2) * self.b)
        return out

    def steps_to(self, t: Tensor) -> Tensor:
        """The real ``k`` with ``pos(k) = t`` for every ray (t: (N,), ``t >= t0``)."""
        if self.c <= 0:
            return (t - self.t0) / self.a
        geometric = self.k1 + torch.log(t.clamp_min(1e-30) / self.g0) / self.log_r
        out = torch.where(t <= self.g0, (t - self.t0) / self.a, geometric)
        if math.isfinite(self.b):
            out = torch.where(t <= self.u0, out, self.k1 + self.k2 + (t - self.u0) / self.b)
        return out


@torch.no_grad()
def march_rays(
    origins: Tensor,
    dirs: Tensor,
    t_near: Tensor,
    t_far: Tensor,
    step_size: float,
    grid: OccupancyGrid | None = None,
    *,
    cone_angle: float = 0.0,
    max_step_size: float = float("inf"),
    stratified: bool = False,
    max_samples_per_ray: int | None = None,
    max_total_samples: int | None = None,
    chunk_steps: int = 1 << 20,
    generator: torch.Generator | None = None,
) -> PackedSamples:
    """March rays through ``[t_near, t_far]`` and keep the intervals in occupied cells.

    Args:
        origins: (N, 3) ray origins, world metres.
        dirs: (N, 3) ray directions (unit for ``t`` in metres).
        t_near: (N,) start of each ray's range, e.g. from :func:`birdnerf.render.ray_aabb`;
            rays with ``t_far <= t_near`` get no samples.
        t_far: (N,) end of each ray's range. It must be finite: the number of steps generated
            before skipping is ``(t_far - t_near) / step_size``.
        step_size: smallest step, in ``t`` units (e.g. ``aabb_diagonal(aabb) / 512``).
        grid: occupancy grid (world space); None keeps every interval.
        cone_angle: step growth ``step = clamp(cone_angle * t, step_size, max_step_size)``; 0 gives
            uniform steps (Instant-NGP uses 1/256 for large scenes).
        max_step_size: largest step when ``cone_angle > 0``.
        stratified: shift each ray's boundaries by a random fraction of a step (training);
            False gives the same samples on every call (evaluation).
        max_samples_per_ray: keep at most this many (occupied) samples per ray, the nearest ones;
            ``t_resume`` says where a cut ray stopped.
        max_total_samples: keep whole rays, in order, while the total stays within this budget;
            the rest are dropped (``ray_kept`` False).
        chunk_steps: rays are marched in groups of about this many steps, bounding memory.
        generator: random source for the stratified shift (on the rays' device).

    Returns:
        :class:`PackedSamples`; ``t_starts``/``t_ends`` in the dtype of ``t_near``, on the rays'
        device. No gradient flows through sampling.
    """
    if step_size <= 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    if max_samples_per_ray is not None and max_samples_per_ray < 1:
        raise ValueError(f"max_samples_per_ray must be at least 1, got {max_samples_per_ray}")
    n_rays = t_near.shape[0]
    t_far = t_far.to(t_near.dtype)
    shift = _boundary_shift(t_near, stratified, generator)
    schedule = _StepSchedule(t_near, step_size, max(max_step_size, step_size), cone_angle)
    n_steps = _interval_counts(schedule, t_near, t_far, shift)
    t_resume = t_far.clone()
    ray_kept = torch.ones(n_rays, dtype=torch.bool, device=t_near.device)
    out_rays, out_starts, out_ends = [], [], []
    budget_left = max_total_samples
    for r0, r1 in _chunks(n_steps, chunk_steps):
        rays, starts, ends = _march_chunk(origins, dirs, t_far, n_steps, shift, schedule, grid, r0, r1)
        if max_samples_per_ray is not None:
            rays, starts, ends = _cap_per_ray(rays, starts, ends, t_resume, r0, r1, max_samples_per_ray)
        exhausted = False
        if budget_left is not None:
            rays, starts, ends, exhausted = _within_budget(rays, starts, ends, ray_kept, r0, r1, budget_left)
            budget_left -= rays.numel()
        out_rays.append(rays)
        out_starts.append(starts)
        out_ends.append(ends)
        if exhausted:
            break
    t_resume = torch.where(ray_kept, t_resume, t_near)
    if not out_rays:
        empty = t_near.new_zeros(0)
        return PackedSamples(empty.long(), empty, empty.clone(), t_resume, ray_kept)
    return PackedSamples(torch.cat(out_rays), torch.cat(out_starts), torch.cat(out_ends), t_resume, ray_kept)


def _boundary_shift(t_near: Tensor, stratified: bool, generator: torch.Generator | None) -> Tensor:
    """(N,) ``u`` of each ray: uniform in (0, 1] when stratified, else 1 (``b_j = t_near + j step``)."""
    n_rays, device, dtype = t_near.shape[0], t_near.device, t_near.dtype
    if stratified:
        return 1.0 - torch.rand(n_rays, device=device, dtype=dtype, generator=generator)
    return torch.ones(n_rays, device=device, dtype=dtype)


def _interval_counts(schedule: _StepSchedule, t_near: Tensor, t_far: Tensor, shift: Tensor) -> Tensor:
    """(N,) int64 intervals of each ray: the first ``[t_near, b_1]``, then one per boundary
    ``b_j < t_far``; none for a ray with ``t_far <= t_near``."""
    span = (schedule.steps_to(t_far) - shift).ceil().clamp_min(0)
    return torch.where(t_far > t_near, span + 1, torch.zeros_like(span)).long()


def _chunks(n_steps: Tensor, chunk_steps: int) -> Iterator[tuple[int, int]]:
    """Consecutive ray ranges ``(r0, r1)`` of about ``chunk_steps`` steps each (at least one ray)."""
    n_rays = n_steps.shape[0]
    step_ends = torch.cumsum(n_steps, 0)
    r0 = 0
    while r0 < n_rays:
        before = int(step_ends[r0 - 1]) if r0 > 0 else 0
        r1 = max(int(torch.searchsorted(step_ends, before + chunk_steps, right=True)), r0 + 1)
        yield r0, r1
        r0 = r1


def _within_budget(
    rays: Tensor, starts: Tensor, ends: Tensor, ray_kept: Tensor, r0: int, r1: int, budget: int
) -> tuple[Tensor, Tensor, Tensor, bool]:
    """The whole rays of ``r0:r1``, in order, whose samples fit in ``budget``; when some do not,
    they and every later ray are marked dropped in ``ray_kept`` and the last value is True."""
    counts = torch.bincount(rays - r0, minlength=r1 - r0)
    fits = torch.cumsum(counts, 0) <= budget
    if bool(fits.all()):
        return rays, starts, ends, False
    keep = fits[rays - r0]
    ray_kept[r0:r1] = fits
    ray_kept[r1:] = False
    return rays[keep], starts[keep], ends[keep], True


def _march_chunk(
    origins: Tensor,
    dirs: Tensor,
    t_far: Tensor,
    n_steps: Tensor,
    shift: Tensor,
    schedule: _StepSchedule,
    grid: OccupancyGrid | None,
    r0: int,
    r1: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """All intervals of rays ``r0:r1`` whose midpoint is occupied: (ray, t_start, t_end)."""
    counts = n_steps[r0:r1]
    total = int(counts.sum())
    local = torch.repeat_interleave(torch.arange(r1 - r0, device=counts.device), counts, output_size=total)
    rays = local + r0
    first = torch.cumsum(counts, 0) - counts
    j = torch.arange(total, device=counts.device) - first.index_select(0, local)
    steps = j.to(shift.dtype) + shift.index_select(0, rays)
    ends = torch.minimum(schedule.position(steps, rays), t_far.index_select(0, rays))
    # Interval j starts where interval j - 1 of the same ray ends; the first at t_near.
    starts = torch.where(j == 0, schedule.t0.index_select(0, rays), ends.roll(1))
    keep = ends > starts
    if grid is not None:
        mid = 0.5 * (starts + ends)
        keep &= grid.query_along_rays(origins[r0:r1], dirs[r0:r1], local, mid)
    kept = keep.nonzero().squeeze(1)
    return rays.index_select(0, kept), starts.index_select(0, kept), ends.index_select(0, kept)


def _cap_per_ray(
    rays: Tensor, starts: Tensor, ends: Tensor, t_resume: Tensor, r0: int, r1: int, cap: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Keep the first ``cap`` samples of each ray; record where cut rays stopped in ``t_resume``."""
    counts = torch.bincount(rays - r0, minlength=r1 - r0)
    rank = torch.arange(rays.numel(), device=rays.device) - (torch.cumsum(counts, 0) - counts)[rays - r0]
    last = (rank == cap - 1) & (counts[rays - r0] > cap)
    t_resume[rays[last]] = ends[last]
    keep = rank < cap
    return rays[keep], starts[keep], ends[keep]


def sample_midpoints(origins: Tensor, dirs: Tensor, samples: PackedSamples) -> Tensor:
    """(S, 3) world points at the middle of each packed interval: ``o + d * (t_start + t_end) / 2``."""
    t_mid = 0.5 * (samples.t_starts + samples.t_ends)
    rays = samples.ray_indices
    return torch.addcmul(origins.index_select(0, rays), dirs.index_select(0, rays), t_mid[:, None])
