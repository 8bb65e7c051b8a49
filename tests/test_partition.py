import json

import numpy as np
import pytest

from birdnerf.errors import BirdnerfError
from birdnerf.partition import (
    PartitionConfig,
    compute_footprints,
    partition_scene,
    read_partition,
    write_partition,
)
from birdnerf.partition.footprint import ground_hits
from birdnerf.partition.layout import coverage, expanded_rects
from birdnerf.scene.frame import to_world_frame
from tests.surveys import lawnmower


def test_nadir_footprint_has_the_expected_size():
    scene = lawnmower(nx=1, ny=1, altitude=50.0, width=160, height=120, focal=120.0)
    fp = compute_footprints(scene)
    xmin, ymin, xmax, ymax = fp.bounds()
    # Ground width = altitude * image width / focal length.
    assert xmax - xmin == pytest.approx(50.0 * 160 / 120, rel=1e-6)
    assert ymax - ymin == pytest.approx(50.0 * 120 / 120, rel=1e-6)
    np.testing.assert_allclose(fp.center[0], [0.0, 0.0], atol=1e-9)


def test_rays_above_the_horizon_are_clipped_to_the_range():
    origins = np.array([[[0.0, 0.0, 10.0]]])
    dirs = np.array([[[1.0, 0.0, 0.2], [1.0, 0.0, -0.001], [0.0, 1.0, -1.0]]])
    hits = ground_hits(origins, dirs, ground_z=0.0, max_range_factor=3.0)
    np.testing.assert_allclose(hits[0, 0], [30.0, 0.0])  # above the horizon: cut at 3 x altitude
    np.testing.assert_allclose(hits[0, 1], [30.0, 0.0])  # grazing: would land 10 km away
    np.testing.assert_allclose(hits[0, 2], [0.0, 10.0])  # 45 degrees: exact


def test_every_training_photo_belongs_to_a_block_and_blocks_are_balanced():
    scene = lawnmower(nx=12, ny=10, jitter=0.5)
    part = partition_scene(scene, PartitionConfig(images_per_block=25))
    assert len(part.blocks) == 4  # 105 training photos / 25 -> 4 blocks, square site -> 2 x 2
    members = {name for b in part.blocks for name in b.images}
    train = {scene.names[i] for i in scene.indices("train")}
    assert members == train
    owned = [b.stats["n_core_images"] for b in part.blocks]
    assert sum(owned) == len(train)
    assert max(owned) - min(owned) <= 0.25 * np.mean(owned)


def test_cores_tile_the_surveyed_area_without_gaps_or_overlap():
    scene = lawnmower(nx=15, ny=9, jitter=1.0, seed=3)
    part = partition_scene(scene, PartitionConfig(blocks=(3, 4)))
    assert len(part.blocks) == 12
    bounds = compute_footprints(scene).bounds()
    area = (bounds[2] - bounds[0]) * (bounds[3] - bounds[1])
    assert sum(b.stats["core_area"] for b in part.blocks) == pytest.approx(area, rel=1e-9)
    rng = np.random.default_rng(0)
    pts = rng.uniform(bounds[:2], bounds[2:], size=(5000, 2))
    owners = np.zeros(len(pts), dtype=int)
    for b in part.blocks:
        x0, y0, x1, y1 = b.core
        owners += (pts[:, 0] >= x0) & (pts[:, 0] < x1) & (pts[:, 1] >= y0) & (pts[:, 1] < y1)
    assert np.all(owners == 1)


@pytest.mark.parametrize("overlap, overlap_m", [(0.2, None), (0.0, 7.5)])
def test_expanded_rectangle_is_core_plus_overlap(overlap, overlap_m):
    scene = lawnmower(nx=10, ny=10)
    part = partition_scene(scene, PartitionConfig(blocks=(2, 2), overlap=overlap, overlap_m=overlap_m))
    for b in part.blocks:
        w, h = b.core[2] - b.core[0], b.core[3] - b.core[1]
        ox = overlap_m if overlap_m is not None else overlap * w
        oy = overlap_m if overlap_m is not None else overlap * h
        np.testing.assert_allclose(
            b.expanded, [b.core[0] - ox, b.core[1] - oy, b.core[2] + ox, b.core[3] + oy]
        )
        assert b.box[0] == b.expanded[0] and b.box[4] == b.expanded[3]
        assert b.box[2] < 0.0 < b.box[5] < 50.0  # the slab holds the ground and stays below the drone


def test_box_reaches_half_the_flying_height_above_points_that_stay_low():
    # Sparse matching misses a forest canopy: points on open ground alone must not cap the box
    # at the ground, or the canopy is squeezed into a thin slab at the wrong depth.
    scene = lawnmower(nx=6, ny=6, altitude=50.0)
    rng = np.random.default_rng(0)
    ground = np.column_stack([rng.uniform(0, 50, (500, 2)), rng.normal(0.0, 0.3, 500)])
    tower = np.array([[20.0, 20.0, 40.0]] * 20)  # a tall structure the points do see
    for points, top in [(ground, 25.0), (np.vstack([ground, tower]), 40.0)]:
        scene.points = points
        for b in partition_scene(scene, PartitionConfig(blocks=(1, 1))).blocks:
            # The bottom still follows the points (measured: -1.0 and -4.9 m, the pad grows with
            # their range); the top reaches half the 50 m flight (measured: 25.0 m), or the points'
            # own top when higher (44.1 m), and stays below the cameras.
            assert -6.0 < b.box[2] < points[:, 2].min()
            assert top <= b.box[5] < 0.95 * 50.0 + 1e-9
    # Without headroom (what manifests written before the setting read as) the points cap the box.
    scene.points = ground
    (low,) = partition_scene(scene, PartitionConfig(blocks=(1, 1), headroom=0.0)).blocks
    assert 0.5 < low.box[5] < 2.0


def test_manifests_without_headroom_keep_boxes_capped_by_their_points(tmp_path):
    part = partition_scene(lawnmower(nx=6, ny=6), PartitionConfig(blocks=(1, 1)), dataset="survey")
    path = write_partition(tmp_path / "run", part)
    assert read_partition(tmp_path / "run").config.headroom == 0.5
    data = json.loads(path.read_text())
    del data["config"]["headroom"]
    path.write_text(json.dumps(data))
    assert read_partition(tmp_path / "run").config.headroom == 0.0  # so updates keep their boxes


def test_neighbour_coverage_matches_brute_force():
    scene = lawnmower(nx=9, ny=7, jitter=2.0, seed=5)
    fp = compute_footprints(scene)
    x_edges = np.array([-20.0, 15.0, 40.0, 60.0, 110.0])
    y_edges = np.array([-20.0, 30.0, 90.0])
    expanded = expanded_rects(x_edges, y_edges, overlap=0.3, overlap_m=None)
    photo, block, frac = coverage(fp.samples, x_edges, y_edges, expanded)
    got = {(p, b): f for p, b, f in zip(photo, block, frac, strict=True)}
    rects = expanded.reshape(-1, 4)
    s = fp.samples
    for b, (x0, y0, x1, y1) in enumerate(rects):
        inside = (s[..., 0] >= x0) & (s[..., 0] <= x1) & (s[..., 1] >= y0) & (s[..., 1] <= y1)
        for p, f in enumerate(inside.mean(axis=1)):
            assert got.get((p, b), 0.0) == pytest.approx(f)


def test_manifest_is_byte_for_byte_deterministic(tmp_path):
    paths = []
    for k in range(2):
        part = partition_scene(lawnmower(nx=8, ny=8, jitter=0.7, seed=1), PartitionConfig(), dataset="survey")
        paths.append(write_partition(tmp_path / f"run{k}", part))
    assert paths[0].read_bytes() == paths[1].read_bytes()
    data = json.loads(paths[0].read_text())
    assert data["schema"] == "birdnerf.partition" and data["schema_version"] == 1


def test_more_blocks_than_photos_is_a_clear_error():
    scene = lawnmower(nx=3, ny=2)
    with pytest.raises(BirdnerfError, match="blocks requested but only"):
        partition_scene(scene, PartitionConfig(blocks=(3, 3)), dataset="tiny")


def test_world_frame_recovers_a_tilted_scaled_survey():
    scene = lawnmower(nx=8, ny=6, jitter=0.3)
    scene.is_world_frame, scene.ground_z = False, None
    rng = np.random.default_rng(7)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    messy = np.eye(4)
    messy[:3, :3] = 0.37 * q
    messy[:3, 3] = [5.0, -3.0, 11.0]
    tilted = scene.transformed(messy)
    # Sparse "ground" points at z = 0 in the original frame, moved with the scene.
    ground = np.column_stack([rng.uniform(0, 70, 400), rng.uniform(0, 50, 400), np.zeros(400)])
    tilted.points = ground @ messy[:3, :3].T + messy[:3, 3]
    world, estimate = to_world_frame(tilted)
    assert estimate.up_source == "camera_plane"
    assert world.is_world_frame and world.ground_z == 0.0
    heights = world.centers[:, 2]
    np.testing.assert_allclose(heights, 50.0 * 0.37, rtol=1e-6)  # flying height, in input units
    np.testing.assert_allclose(world.c2w[:, :3, 2], np.tile([0, 0, -1.0], (len(world), 1)), atol=1e-9)
    # world_from_input composes every transform since the reader: here `messy`, then ours.
    to_tilted = messy @ np.linalg.inv(world.world_from_input)
    back = to_tilted @ np.column_stack([world.centers, np.ones(len(world))]).T
    np.testing.assert_allclose(back[:3].T, tilted.centers, atol=1e-9)


def test_repartitioning_a_trained_run_needs_force(mini_dataset, tmp_path):
    from birdnerf.partition import partition_dataset

    run = tmp_path / "run"
    partition_dataset(mini_dataset, run, PartitionConfig(blocks=(1, 2)))
    (run / "blocks" / "r00c00").mkdir(parents=True)
    partition_dataset(mini_dataset, run, PartitionConfig(blocks=(1, 2)))  # the same blocks: fine
    with pytest.raises(BirdnerfError, match="already has trained blocks"):
        partition_dataset(mini_dataset, run, PartitionConfig(blocks=(2, 2)))
    assert len(json.loads((run / "partition.json").read_text())["blocks"]) == 2  # untouched
    partition, _ = partition_dataset(mini_dataset, run, PartitionConfig(blocks=(2, 2)), force=True)
    assert len(partition.blocks) == 4 and not (run / "blocks").exists()
