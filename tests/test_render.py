"""Ray/box intersection and ray marching with an occupancy grid."""

from __future__ import annotations

import math

import pytest
import torch

from birdnerf.render import OccupancyGrid, aabb_diagonal, march_rays, ray_aabb, sample_midpoints

UNIT_BOX = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])


def test_ray_aabb_hand_made_rays() -> None:
    s = 1 / math.sqrt(2)
    origins = torch.tensor(
        [
            [0.5, 0.5, 2.0],  # straight down through the box
            [0.5, 0.5, 0.5],  # starts inside
            [2.0, 2.0, 2.0],  # points away: miss
            [0.5, 0.5, 2.0],  # parallel to the x and y slabs, inside them; |dir| = 2
            [2.0, 0.5, 0.5],  # parallel to x planes but outside them: miss
            [-0.5, -0.5, 0.5],  # the same, half a metre outside the plane x = 0: miss
            [0.0, -1.0, 0.5],  # in the face x = 0, parallel to it: grazing the face, hits
            [-1.0, 1.0, 0.5],  # touches only the edge x = 0, y = 0 (at t = sqrt 2): zero length, miss
            [0.5, 0.5, 2.0],  # zero direction: degenerate, miss
        ]
    )
    dirs = torch.tensor(
        [
            [0.0, 0.0, -1.0],
            [0.0, 0.0, 1.0],
            [1.0, 0.0, 0.0],
            [0.0, 0.0, -2.0],
            [0.0, 1.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 1.0, 0.0],
            [s, -s, 0.0],
            [0.0, 0.0, 0.0],
        ]
    )
    t_near, t_far, hit = ray_aabb(origins, dirs, UNIT_BOX)
    assert hit.tolist() == [True, True, False, True, False, False, True, False, False]
    assert not torch.isnan(t_near).any() and not torch.isnan(t_far).any()
    expected_near = torch.tensor([1.0, 0.0, 0.0, 0.5, 0.0, 0.0, 1.0, 0.0, 0.0])
    expected_far = torch.tensor([2.0, 0.5, 0.0, 1.0, 0.0, 0.0, 2.0, 0.0, 0.0])
    torch.testing.assert_close(t_near, expected_near)
    torch.testing.assert_close(t_far, expected_far)


def test_ray_aabb_batch_shape_and_near_plane() -> None:
    origins = torch.tensor([0.5, 0.5, 3.0]).expand(4, 2, 3)
    dirs = torch.tensor([0.0, 0.0, -1.0]).expand(4, 2, 3)
    t_near, t_far, hit = ray_aabb(origins, dirs, [0, 0, 0, 1, 1, 1], near_plane=2.5)
    assert t_near.shape == (4, 2) and hit.all()
    assert torch.all(t_near == 2.5) and torch.all(t_far == 3.0)
    assert aabb_diagonal(UNIT_BOX) == pytest.approx(math.sqrt(3))


def sphere_sigma(points: torch.Tensor, center=(0.5, 0.5, 0.4), radius: float = 0.25) -> torch.Tensor:
    return 50.0 * ((points - torch.tensor(center)).norm(dim=-1) < radius).float()


def sphere_grid(resolution: int = 32, updates: int = 4) -> OccupancyGrid:
    grid = OccupancyGrid(UNIT_BOX, resolution)
    gen = torch.Generator().manual_seed(0)
    for step in range(updates):
        grid.update(step, sphere_sigma, every_n=1, warmup_steps=2, step_size=0.01, generator=gen)
    return grid


def test_occupancy_grid_learns_sphere() -> None:
    grid = sphere_grid()
    truth = sphere_sigma(grid.cell_centers()) > 0
    occupied = grid.binary.reshape(-1)
    assert (occupied == truth).float().mean() > 0.95
    # Cells wholly inside the sphere are all occupied; cells wholly outside are all empty.
    distance = (grid.cell_centers() - torch.tensor([0.5, 0.5, 0.4])).norm(dim=-1)
    half_diagonal = math.sqrt(3) / 2 / 32
    assert occupied[distance < 0.25 - half_diagonal].all()
    assert not occupied[distance > 0.25 + half_diagonal].any()
    assert 0.05 < grid.occupied_fraction < 0.15  # sphere volume 4/3 pi 0.25^3 = 0.065
    corners = torch.tensor([[0.02, 0.02, 0.02], [0.98, 0.98, 0.98], [0.5, 0.5, 0.4], [0.5, 0.5, 1.5]])
    assert grid.query(corners).tolist() == [False, False, True, False]


def test_occupancy_grid_update_schedule_and_state() -> None:
    grid = OccupancyGrid([0, 0, 0, 4, 4, 2], resolution=(8, 8, 4))
    assert grid.binary.all()  # nothing known: nothing skipped
    outside = torch.tensor(
        [[1.0, 1.0, 1.0], [4.0, 4.0, 2.0], [4.1, 1.0, 1.0], [1.0, -0.1, 1.0], [1.0, 1.0, 2.5]]
    )
    assert grid.query(outside).tolist() == [True, True, False, False, False]
    assert grid.update(3, sphere_sigma, every_n=16) is False
    assert grid.update(0, lambda x: torch.ones(x.shape[0]), every_n=16, ema_decay=0.5)
    torch.testing.assert_close(grid.density, torch.ones(8, 8, 4))
    # After the warm-up a sampled cell decays; the maximum keeps the larger value.
    grid.update(512, lambda x: torch.full((x.shape[0],), 0.25), warmup_steps=256, ema_decay=0.5)
    assert set(grid.density.unique().tolist()) <= {0.5, 1.0}
    assert (grid.density == 0.5).any()
    restored = OccupancyGrid([0, 0, 0, 4, 4, 2], resolution=(8, 8, 4))
    restored.load_state_dict(grid.state_dict())
    assert set(grid.state_dict()) == {"aabb", "density", "binary"}
    assert torch.equal(restored.binary, grid.binary) and torch.equal(restored.density, grid.density)
    with pytest.raises(ValueError):
        OccupancyGrid([0, 0, 0, 1, 1, 0], 8)


def top_down_rays(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    xy = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    gx, gy = torch.meshgrid(xy, xy, indexing="ij")
    origins = torch.stack([gx.reshape(-1), gy.reshape(-1), torch.full((n * n,), 2.0)], dim=-1)
    dirs = torch.tensor([0.05, -0.03, -1.0]).expand_as(origins)
    return origins, dirs / dirs.norm(dim=-1, keepdim=True)


def test_sampling_skips_empty_cells_and_hits_sphere() -> None:
    grid = sphere_grid()
    origins, dirs = top_down_rays()
    t_near, t_far, _ = ray_aabb(origins, dirs, UNIT_BOX)
    samples = march_rays(origins, dirs, t_near, t_far, 0.01, grid)
    points = sample_midpoints(origins, dirs, samples)
    assert grid.query(points).all()  # no sample in an empty cell
    full = march_rays(origins, dirs, t_near, t_far, 0.01)
    assert samples.t_starts.numel() < 0.2 * full.t_starts.numel()
    # Rays that cross the sphere get samples; rays far from it get none.
    counts = torch.bincount(samples.ray_indices, minlength=origins.shape[0])
    mid_sigma = sphere_sigma(sample_midpoints(origins, dirs, full))
    crosses = torch.zeros(origins.shape[0]).index_add(0, full.ray_indices, mid_sigma) > 0
    assert crosses.sum() > 20 and (counts[crosses] > 0).all()
    far = (origins[:, :2] - 0.5).norm(dim=-1) > 0.45
    assert (counts[far] == 0).all()
    assert samples.ray_kept.all() and torch.equal(samples.t_resume, t_far)


def test_eval_sampling_is_deterministic_and_uniform() -> None:
    origins, dirs = top_down_rays(6)
    t_near, t_far, _ = ray_aabb(origins, dirs, UNIT_BOX)
    a = march_rays(origins, dirs, t_near, t_far, 0.05)
    b = march_rays(origins, dirs, t_near, t_far, 0.05)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    ray0 = a.ray_indices == 0
    k = torch.arange(int(ray0.sum()), dtype=torch.float32)
    torch.testing.assert_close(a.t_starts[ray0], t_near[0] + 0.05 * k)
    torch.testing.assert_close(a.t_ends[ray0], torch.clamp(t_near[0] + 0.05 * (k + 1), max=float(t_far[0])))


def test_stratified_samples_tile_their_ray_interval() -> None:
    origins, dirs = top_down_rays(6)
    t_near, t_far, _ = ray_aabb(origins, dirs, UNIT_BOX)
    gen = torch.Generator().manual_seed(1)
    s = march_rays(origins, dirs, t_near, t_far, 0.05, stratified=True, generator=gen)
    ref = march_rays(origins, dirs, t_near, t_far, 0.05)
    assert not torch.equal(s.t_starts[: ref.t_starts.numel()], ref.t_starts)
    lengths = s.t_ends - s.t_starts
    assert (lengths > 0).all() and (lengths <= 0.05 + 1e-6).all()
    assert (s.t_starts >= t_near[s.ray_indices]).all() and (s.t_ends <= t_far[s.ray_indices]).all()
    covered = torch.zeros_like(t_near).index_add(0, s.ray_indices, lengths)
    torch.testing.assert_close(covered, t_far - t_near)
    same_ray = s.ray_indices[1:] == s.ray_indices[:-1]
    torch.testing.assert_close(s.t_starts[1:][same_ray], s.t_ends[:-1][same_ray])  # contiguous


def test_sample_caps_and_resume() -> None:
    origins, dirs = top_down_rays(4)
    t_near, t_far, _ = ray_aabb(origins, dirs, UNIT_BOX)
    full = march_rays(origins, dirs, t_near, t_far, 0.05)
    capped = march_rays(origins, dirs, t_near, t_far, 0.05, max_samples_per_ray=7)
    assert torch.bincount(capped.ray_indices).max() == 7
    ray0 = capped.ray_indices == 0
    assert capped.t_resume[0] == capped.t_ends[ray0][-1] < t_far[0]
    rest = march_rays(origins[:1], dirs[:1], capped.t_resume[:1], t_far[:1], 0.05)
    resumed = torch.cat([capped.t_starts[ray0], rest.t_starts])
    torch.testing.assert_close(resumed, full.t_starts[full.ray_indices == 0])

    per_ray = torch.bincount(full.ray_indices, minlength=16)
    budget = int(per_ray[:5].sum()) + 3
    limited = march_rays(origins, dirs, t_near, t_far, 0.05, max_total_samples=budget, chunk_steps=10)
    assert limited.ray_kept.tolist() == [True] * 5 + [False] * 11
    assert limited.t_starts.numel() == budget - 3
    assert torch.equal(limited.t_resume[5:], t_near[5:]) and torch.equal(limited.t_resume[:5], t_far[:5])


def test_chunked_marching_equals_single_chunk() -> None:
    grid = sphere_grid()
    origins, dirs = top_down_rays(10)
    t_near, t_far, _ = ray_aabb(origins, dirs, UNIT_BOX)
    one = march_rays(origins, dirs, t_near, t_far, 0.02, grid)
    many = march_rays(origins, dirs, t_near, t_far, 0.02, grid, chunk_steps=37)
    for x, y in zip(one, many, strict=True):
        assert torch.equal(x, y)


def test_cone_angle_steps_grow_with_distance() -> None:
    origins = torch.zeros(1, 3)
    dirs = torch.tensor([[0.0, 0.0, 1.0]])
    t_near, t_far = torch.tensor([0.5]), torch.tensor([60.0])
    s = march_rays(origins, dirs, t_near, t_far, 0.01, cone_angle=0.01, max_step_size=0.3)
    lengths = (s.t_ends - s.t_starts)[:-1]
    expected = torch.clamp(0.01 * s.t_starts[:-1], 0.01, 0.3)
    torch.testing.assert_close(lengths, expected, rtol=1e-4, atol=1e-5)
    assert s.t_starts[0] == 0.5 and s.t_ends[-1] == 60.0
    assert lengths[0] == pytest.approx(0.01, rel=1e-4) and lengths[-1] == pytest.approx(0.3, rel=1e-4)


def test_grid_drops_samples_outside_its_box() -> None:
    grid = OccupancyGrid(UNIT_BOX, 8)  # fresh: every cell occupied
    origins, dirs = top_down_rays(3)
    t_near, t_far = torch.zeros(9), torch.full((9,), 3.0)
    samples = march_rays(origins, dirs, t_near, t_far, 0.01, grid)
    points = sample_midpoints(origins, dirs, samples)
    assert ((points >= 0) & (points <= 1)).all()
    enter, leave, _ = ray_aabb(origins, dirs, UNIT_BOX)
    covered = torch.zeros(9).index_add(0, samples.ray_indices, samples.t_ends - samples.t_starts)
    torch.testing.assert_close(covered, leave - enter, atol=0.011, rtol=0)
