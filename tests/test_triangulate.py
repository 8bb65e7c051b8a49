"""Geometry measured from posed photos, the spacing guess's widened boxes, user-stated heights."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from birdnerf.errors import BirdnerfError
from birdnerf.partition import PartitionConfig, load_scene, partition_dataset, read_partition
from birdnerf.scene.frame import to_world_frame
from birdnerf.scene.load import load_dataset
from birdnerf.scene.triangulate import triangulate_scene

LIFT = 37.0
"""The plain datasets below are moved up by this much: their ground lies at z = 37, not 0."""


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    """The mini synthetic survey of conftest (90 m site, 80x60 px photos, flying 60 m high)."""
    from birdnerf.synthetic import SamplePreset, SiteConfig, SurveyConfig, generate_sample_scene

    out = tmp_path_factory.mktemp("tri") / "sample"
    preset = SamplePreset("mini", SiteConfig(extent_m=90.0), SurveyConfig(width=80, height=60, focal_px=64.0))
    generate_sample_scene(out, preset, seed=3)
    return out


def plain_copy(sample: Path, out: Path, focal: float | None = None, flat: bool = False) -> Path:
    """``sample`` as a plain nerfstudio dataset: poses and photos only (no birdnerf extras, no
    points, no depth maps), every pose moved up by ``LIFT``; optionally another focal length in
    the file, and photos of one flat colour."""
    shutil.copytree(sample / "images", out / "images")
    meta = json.loads((sample / "transforms.json").read_text())
    meta.pop("birdnerf")
    meta.pop("applied_transform", None)
    for frame in meta["frames"]:
        frame.pop("depth_file_path", None)
        frame["transform_matrix"][2][3] += LIFT
    if focal is not None:
        meta["fl_x"] = meta["fl_y"] = focal
    if flat:
        for path in (out / "images").iterdir():
            with Image.open(path) as im:
                Image.new("RGB", im.size, (118, 124, 109)).save(path)
    (out / "transforms.json").write_text(json.dumps(meta))
    return out


@pytest.fixture(scope="module")
def plain_dir(sample_dir, tmp_path_factory) -> Path:
    return plain_copy(sample_dir, tmp_path_factory.mktemp("plain"))


def truth(sample: Path) -> float:
    """Height of the sample's tallest object above its ground (metres)."""
    return json.loads((sample / "sample.json").read_text())["max_height_m"]


def world_z(frame: dict, height: float) -> float:
    """World z of a point at ``height`` (dataset z) under the middle of the survey."""
    load = np.asarray(frame["load_transform"])
    inv = np.linalg.inv(load)
    centre = inv @ np.array([0.0, 0.0, 0.0, 1.0])  # the survey's centre on the world ground
    return float((load @ np.array([centre[0], centre[1], height, 1.0]))[2])


def test_the_matcher_measures_the_ground_of_a_posed_survey(plain_dir):
    scene = load_dataset(plain_dir)
    assert scene.points is None and scene.depth_paths is None
    measured = triangulate_scene(scene)
    assert len(measured) > 2000 and measured.photos >= 15
    assert measured.points.shape == (len(measured), 3) and measured.colors.dtype == np.uint8
    assert np.all(measured.confidence >= 0.7)
    z = measured.points[:, 2]
    assert abs(np.median(z) - LIFT) < 1.0  # most of the site is flat ground
    assert abs(np.quantile(z, 0.3) - LIFT) < 0.5
    assert np.mean(np.abs(z - LIFT) < 2.5) > 0.7  # 2.5 m: one pixel of disparity at the ground
    assert np.quantile(z, 0.99) < LIFT + 1.2 * 24.0  # nothing far above the tallest objects
    again = triangulate_scene(scene)
    np.testing.assert_array_equal(again.points, measured.points)  # deterministic
    # Above its reach (the lowest over the photos) the matcher is blind: too close to the
    # cameras to match. It lies between the ground and the cameras.
    assert LIFT + 10.0 < measured.reach_z < scene.centers[:, 2].min()


def test_partition_measures_points_and_keeps_them_in_the_run(plain_dir, sample_dir, tmp_path):
    run = tmp_path / "run"
    partition, scene = partition_dataset(plain_dir, run, PartitionConfig(blocks=(1, 2)))
    frame = partition.frame
    assert frame["ground_source"] == "triangulated" and frame["points_file"] == "points.npz"
    assert frame["measured_points"] == len(scene.points) > 2000
    assert "ground_uncertainty_m" not in frame
    # The matcher cannot see close to the cameras: the record says from which height on.
    assert 0.0 < frame["points_reach_z"] < float(np.min(scene.centers[:, 2]))
    ground = world_z(frame, LIFT)
    assert abs(ground) < 0.5  # the measured ground is the true ground
    # The sample's own points are the truth: its tallest one, moved into this run's world frame.
    with np.load(sample_dir / "points.npz") as data:
        tallest = data["xyz"][np.argmax(data["xyz"][:, 2])] + [0.0, 0.0, LIFT]
    tallest = np.asarray(frame["load_transform"]) @ np.append(tallest, 1.0)
    assert tallest[2] == pytest.approx(world_z(frame, LIFT + truth(sample_dir)), abs=0.5)
    owners = 0
    for block in partition.blocks:
        assert block.box[2] <= ground - 0.5, block.box
        assert block.box[5] < scene.centers[:, 2].min()
        x0, y0, x1, y1 = block.core
        if x0 <= tallest[0] <= x1 and y0 <= tallest[1] <= y1:  # the block that owns the tallest roof
            assert block.box[5] >= tallest[2], block.box
            owners += 1
    assert owners == 1
    with np.load(run / "points.npz") as data:
        np.testing.assert_allclose(data["xyz"], scene.points)
        assert data["rgb"].dtype == np.uint8 and data["rgb"].shape == data["xyz"].shape
    again = load_scene(read_partition(run))
    np.testing.assert_allclose(again.points, scene.points)
    np.testing.assert_allclose(again.c2w, scene.c2w, atol=1e-3)  # the manifest rounds its transforms
    before = (run / "partition.json").read_bytes()
    partition_dataset(plain_dir, run, PartitionConfig(blocks=(1, 2)))
    assert (run / "partition.json").read_bytes() == before  # deterministic


def test_a_points_file_outside_the_run_is_refused(plain_dir, tmp_path):
    run = tmp_path / "run"
    partition_dataset(plain_dir, run, PartitionConfig(blocks=(1, 1)))
    data = json.loads((run / "partition.json").read_text())
    for bad in ("../points.npz", "/etc/passwd", ""):
        data["frame"]["points_file"] = bad
        (run / "partition.json").write_text(json.dumps(data))
        with pytest.raises(BirdnerfError, match="not a file inside the run"):
            read_partition(run)
    data["frame"]["points_file"] = "points.npz"
    (run / "partition.json").write_text(json.dumps(data))
    (run / "points.npz").unlink()
    with pytest.raises(BirdnerfError, match="missing"):
        load_scene(read_partition(run))


@pytest.mark.parametrize("focal", [64.0, 32.0])  # the guess: 20 m too low, 20 m too high
def test_textureless_photos_fall_back_to_a_loud_guess_with_wide_boxes(sample_dir, tmp_path, caplog, focal):
    data = plain_copy(sample_dir, tmp_path / "flat", focal=focal, flat=True)
    with caplog.at_level(logging.WARNING, logger="birdnerf"):
        partition, scene = partition_dataset(data, tmp_path / "run", PartitionConfig(blocks=(1, 2)))
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "too few stereo matches" in warning and "--ground-z" in warning
    frame = partition.frame
    assert frame["ground_source"] == "overlap_heuristic" and "points_file" not in frame
    ground = world_z(frame, LIFT)
    assert abs(ground) > 10.0  # the guess is off ...
    assert frame["ground_uncertainty_m"] > 0
    top = world_z(frame, LIFT + truth(sample_dir))
    for block in partition.blocks:  # ... but every box holds the true ground and the roofs
        assert block.box[2] < ground and block.box[5] > top
        assert block.box[5] < scene.centers[:, 2].min()  # and stays below the cameras
    assert not (tmp_path / "run" / "points.npz").exists()


def test_sample_datasets_are_unchanged(sample_dir, tmp_path):
    world, estimate = to_world_frame(load_dataset(sample_dir))
    assert (estimate.up_source, estimate.ground_source) == ("already_world", "scene")
    partition, _ = partition_dataset(sample_dir, tmp_path / "run", PartitionConfig(blocks=(1, 2)))
    keys = {"load_transform", "world_from_input", "ground_z", "up_source", "ground_source"}
    assert set(partition.frame) == keys
    config = json.loads((tmp_path / "run" / "partition.json").read_text())["config"]
    assert "ground_z" not in config and "z_range" not in config  # unchanged manifests


def test_cli_ground_z_and_z_range_are_honoured_and_recorded(plain_dir, tmp_path):
    from typer.testing import CliRunner

    import birdnerf_cli.partition  # noqa: F401
    from birdnerf_cli.main import app

    runner = CliRunner()
    run = tmp_path / "run"
    args = ["partition", str(plain_dir), "-o", str(run), "--blocks", "1x2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "ground from triangulated" in result.output and "surface points" in result.output
    result = runner.invoke(app, [*args, "--ground-z", "36.5", "--z-range", "35", "62"])
    assert result.exit_code == 0, result.output
    partition = read_partition(run)
    assert partition.config.ground_z == 36.5 and partition.config.z_range == (35.0, 62.0)
    frame = partition.frame
    assert frame["ground_source"] == "user" and "points_file" not in frame
    assert not (run / "points.npz").exists()  # the first partition's points went with it
    assert world_z(frame, 36.5) == pytest.approx(0.0, abs=1e-3)  # the stated ground is world z 0
    np.testing.assert_allclose(frame["z_range"], [-1.5, 25.5], atol=1e-6)
    for block in partition.blocks:
        assert block.box[2] == pytest.approx(-1.5) and block.box[5] == pytest.approx(25.5)
    saved = json.loads((run / "partition.json").read_text())["config"]
    assert saved["ground_z"] == 36.5 and saved["z_range"] == [35.0, 62.0]

    result = runner.invoke(app, [*args, "--z-range", "60", "35"])
    assert result.exit_code == 1 and "--z-range needs ZMIN < ZMAX" in result.output
    result = runner.invoke(app, [*args, "--z-range", "35", "200"])
    assert result.exit_code == 1 and "not below the cameras" in result.output
    help_text = runner.invoke(app, ["partition", "--help"]).output
    assert "--ground-z" in help_text and "metres" in help_text and "--z-range" in help_text


def test_real_survey_ground_matches_colmap_without_its_points(brighton_beach_dir):
    scene = load_dataset(brighton_beach_dir)
    world, estimate = to_world_frame(scene)
    assert estimate.ground_source == "sparse_points"
    colmap_ground = float(np.quantile(world.points[:, 2], 0.3))  # world ground_z 0 by construction
    altitude = float(np.median(world.centers[:, 2]) - colmap_ground)
    world.points = world.point_colors = None
    start = time.process_time()
    measured = triangulate_scene(world)
    seconds = time.process_time() - start
    ground = float(np.quantile(measured.points[:, 2], 0.3))
    print(
        f"brighton beach: {len(measured)} points from {measured.photos} photos in {seconds:.1f} s CPU; "
        f"ground {ground - colmap_ground:+.4f} from COLMAP's ({(ground - colmap_ground) / altitude:+.2%} "
        "of the flying height)"
    )
    assert len(measured) > 5000
    assert abs(ground - colmap_ground) < 0.02 * altitude  # measured: 0.15 %
