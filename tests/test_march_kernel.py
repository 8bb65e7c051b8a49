"""The fused marching kernel against its torch twin: the same samples, bit for bit, and the same
renders (to the last bit of exp); the torch twin takes over where the kernel cannot run."""

from __future__ import annotations

import logging

import pytest
import torch

from birdnerf import kernels
from birdnerf.render import OccupancyGrid, march_rays, ray_aabb, render_rays
from birdnerf.render import fast as fast_module
from birdnerf.render.fast import KernelGathered, march_kernel, march_occupied, render_rays_fast
from birdnerf.render.sampling import PackedSamples
from birdnerf.render.volume import Gathered, exclusive_sum_per_ray

BOX = [-10.0, -20.0, 0.0, 30.0, 20.0, 8.0]


@pytest.fixture(scope="module")
def kernel():
    if march_kernel() is None:
        pytest.skip("the marching kernel cannot be built here (no C++ compiler or ninja)")
    return march_kernel()


def survey(n: int = 3000, seed: int = 0, occupied: float = 0.3):
    """A random grid and oblique rays aimed into the box from above (some start inside, some miss,
    some start on the box's faces or have no length)."""
    gen = torch.Generator().manual_seed(seed)
    grid = OccupancyGrid(BOX, resolution=(48, 40, 12))
    grid.binary.copy_(torch.rand(grid.resolution, generator=gen) < occupied)
    origins = torch.rand(n, 3, generator=gen) * torch.tensor([60.0, 60.0, 10.0]) + torch.tensor(
        [-25.0, -25.0, 25.0]
    )
    origins[: n // 10, 2] = torch.rand(n // 10, generator=gen) * 8.0  # inside the box
    target = torch.rand(n, 3, generator=gen) * torch.tensor([50.0, 50.0, 8.0]) + torch.tensor(
        [-15.0, -25.0, 0.0]
    )
    dirs = torch.nn.functional.normalize(target - origins, dim=-1)
    t_near, t_far, hit = ray_aabb(origins, dirs, grid.aabb)
    t_far = torch.where(hit, t_far, t_near)
    t_far[5:10] = t_near[5:10]  # no length
    return grid, origins, dirs, t_near, t_far


@pytest.mark.parametrize("cap", [1, 5, 64, 100_000])
def test_the_kernel_marches_the_reference_samples_bit_for_bit(kernel, cap):
    grid, origins, dirs, t_near, t_far = survey(seed=cap)
    ref = march_rays(origins, dirs, t_near, t_far, 0.05, grid, max_samples_per_ray=cap)
    got, points, sample_dirs = march_occupied(origins, dirs, t_near, t_far, 0.05, grid, cap)
    assert ref.ray_indices.numel() > 1000
    for name in ("ray_indices", "t_starts", "t_ends", "t_resume"):
        assert torch.equal(getattr(got, name), getattr(ref, name)), name
    rays, mid = ref.ray_indices, 0.5 * (ref.t_starts + ref.t_ends)
    assert torch.equal(points, origins[rays] + dirs[rays] * mid[:, None])
    assert torch.equal(sample_dirs, dirs[rays])
    if cap == 1:  # rays cut by the cap resume after their one sample
        assert (got.t_resume < t_far).sum() > 100


def test_an_empty_grid_and_a_full_grid(kernel):
    grid, origins, dirs, t_near, t_far = survey(n=200, occupied=0.0)
    got, points, _ = march_occupied(origins, dirs, t_near, t_far, 0.05, grid, 64)
    assert got.ray_indices.numel() == 0 and points.shape == (0, 3)
    assert torch.equal(got.t_resume, t_far)
    grid.binary.fill_(True)
    got, _, _ = march_occupied(origins, dirs, t_near, t_far, 0.5, grid, 100_000)
    ref = march_rays(origins, dirs, t_near, t_far, 0.5, grid)
    assert torch.equal(got.t_starts, ref.t_starts) and torch.equal(got.ray_indices, ref.ray_indices)


def haze_and_ground(points: torch.Tensor, dirs: torch.Tensor):
    """A field: thin haze, a dense layer below z = 2 + x / 10, colour from the position."""
    sigma = torch.where(points[:, 2] < 2.0 + 0.1 * points[:, 0], 40.0, 0.05)
    rgb = torch.sigmoid(torch.stack([points[:, 0] / 10, points[:, 1] / 10, dirs[:, 2]], dim=-1))
    return rgb, sigma


@pytest.mark.parametrize("first_hit", [None, 0.5])
def test_render_rays_fast_matches_render_rays(kernel, first_hit):
    grid, origins, dirs, t_near, t_far = survey(n=2000, occupied=0.6)

    def rgb_sigma(t0, t1, rays):
        return haze_and_ground(origins[rays] + dirs[rays] * (0.5 * (t0 + t1))[:, None], dirs[rays])

    kw = dict(samples_per_round=16, first_hit_opacity=first_hit, background=torch.ones(3))
    ref = render_rays(origins, dirs, t_near, t_far, rgb_sigma, 0.05, grid, **kw)
    got = render_rays_fast(origins, dirs, t_near, t_far, haze_and_ground, 0.05, grid, **kw)
    assert float(ref.opacity.max()) > 0.99 and float(ref.opacity.min()) == 0.0  # opaque rays and misses
    # Same samples and sums in the same order; only exp may round its last bit differently.
    for name in ("rgb", "opacity", "depth"):
        torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=1e-6, atol=1e-6, msg=name)
    assert (got.first_hit is None) == (ref.first_hit is None)
    if ref.first_hit is not None:
        assert torch.equal(got.first_hit, ref.first_hit)
        assert torch.isfinite(ref.first_hit).any() and torch.isinf(ref.first_hit).any()


@pytest.mark.parametrize("first_hit", [None, 1e-3, 0.5])
def test_kernel_rounds_add_up_as_the_torch_twin(kernel, first_hit):
    """Three rounds of packed samples (rays with none, one or many, empty space, opaque layers)
    rendered behind each other by the kernel and by torch."""
    gen = torch.Generator().manual_seed(3)
    n_rays = 500
    kinds = (torch.zeros(n_rays), torch.full((n_rays,), 0.01), torch.full((n_rays,), 50.0))
    both = [KernelGathered.empty(torch.zeros(n_rays), first_hit is not None)]
    both.append(Gathered.empty(torch.zeros(n_rays), first_hit is not None))
    t = torch.zeros(n_rays)
    for _ in range(3):
        counts = torch.randint(0, 9, (n_rays,), generator=gen)
        rays = torch.repeat_interleave(torch.arange(n_rays), counts)
        lengths = torch.rand(rays.shape[0], generator=gen) * 0.2
        starts = t[rays] + exclusive_sum_per_ray(lengths, rays)
        ends = starts + lengths
        pick = torch.randint(0, 3, (rays.shape[0],), generator=gen)
        sigmas = torch.stack(kinds)[pick, rays] * torch.rand(rays.shape[0], generator=gen)
        rgbs = torch.rand(rays.shape[0], 3, generator=gen)
        marched = PackedSamples(rays, starts, ends, t, torch.ones(n_rays, dtype=torch.bool))
        for gathered in both:
            gathered.add(marched, rays, rgbs, sigmas, first_hit)
        t = t + 2.0
    got, ref = both
    assert float(ref.opacity.max()) > 0.99 and float(ref.opacity.min()) == 0.0
    for name in ("rgb", "opacity", "depth_sum", "optical"):
        torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=1e-6, atol=1e-6, msg=name)
    if first_hit is not None:
        assert torch.equal(got.first_hit, ref.first_hit)
        assert torch.isfinite(ref.first_hit).any() and torch.isinf(ref.first_hit).any()
    else:
        assert got.first_hit is None


def test_the_torch_twin_renders_where_the_kernel_cannot(monkeypatch, caplog):
    grid, origins, dirs, t_near, t_far = survey(n=300, occupied=0.6)

    def rgb_sigma(t0, t1, rays):
        return haze_and_ground(origins[rays] + dirs[rays] * (0.5 * (t0 + t1))[:, None], dirs[rays])

    ref = render_rays(origins, dirs, t_near, t_far, rgb_sigma, 0.05, grid)

    def fail(name, source, native=True):
        raise RuntimeError(f"Error building extension\n{source.name}:1: error: no compiler here")

    monkeypatch.setattr(kernels, "build", fail)
    march_kernel.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="birdnerf"):
            got = render_rays_fast(origins, dirs, t_near, t_far, haze_and_ground, 0.05, grid)
            render_rays_fast(origins, dirs, t_near, t_far, haze_and_ground, 0.05, grid)
        torch.testing.assert_close(got.rgb, ref.rgb, rtol=0, atol=1e-6)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "march.cpp:1: error: no compiler here" in warnings[0], warnings
    finally:
        march_kernel.cache_clear()
    # float64 rays and a missing grid go to the twin too
    double = render_rays_fast(
        origins.double(), dirs.double(), t_near.double(), t_far.double(), haze_and_ground, 0.05, grid
    )
    torch.testing.assert_close(double.rgb.float(), ref.rgb, rtol=0, atol=1e-4)
    assert fast_module.kernel_can_march(None, origins, dirs) is False
