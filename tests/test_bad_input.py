"""Bad input through the command line: exit code 1, one ``error:`` line naming the file or option,
no traceback, and the run folder unchanged. Also valid layouts that must not be refused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from birdnerf.errors import BirdnerfError
from birdnerf.scene.colmap_text import read_images_text
from birdnerf.scene.images import load_rgb
from birdnerf.scene.nerfstudio import read_transforms
from birdnerf_cli.main import app


def checksums(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_error_line(result, *needles: str) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


@pytest.fixture
def trained_copy(mini_runs, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(mini_runs["split"], run)
    return run


def _break_done(run: Path) -> Path:
    done = next(run.glob("blocks/*/done.json"))
    done.write_text('{"finished": tr')
    return done


def _truncate_images_txt(root: Path) -> Path:
    path = root / "sparse" / "0" / "images.txt"
    lines = path.read_text().splitlines()
    header = [line for line in lines if line.startswith("#")]
    records = [line for line in lines if not line.startswith("#")]
    path.write_text("\n".join(header + records[:4]) + "\n")  # two of the six images, cut at a record
    return path


CASES = {
    "unknown backend": (["train", "{run}", "--backend", "nope"], None, ["backend 'nope'", "unknown"]),
    "unavailable backend": (["train", "{run}", "--backend", "tcnn"], None, ["backend 'tcnn'", "tinycudann"]),
    "unknown precision": (["train", "{run}", "--precision", "fp16"], None, ["precision 'fp16'", "unknown"]),
    "bf16 on the reference": (
        ["train", "{run}", "--backend", "torch", "--precision", "bf16"],
        None,
        ["precision 'bf16'", "fused backend only"],
    ),
    "malformed done.json": (["train", "{run}"], _break_done, ["done.json", "unreadable", "--force"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_to_a_trained_run(case, trained_copy):
    args, spoil, needles = CASES[case]
    if spoil is not None:
        spoil(trained_copy)
    before = checksums(trained_copy)
    result = CliRunner().invoke(app, [a.format(run=trained_copy) for a in args])
    one_error_line(result, *needles)
    assert checksums(trained_copy) == before


def test_a_photo_listed_twice_in_transforms_json_is_refused(mini_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(mini_dataset, data)
    meta = json.loads((data / "transforms.json").read_text())
    meta["frames"][3]["file_path"] = meta["frames"][2]["file_path"]
    (data / "transforms.json").write_text(json.dumps(meta))
    result = CliRunner().invoke(app, ["partition", str(data), "-o", str(tmp_path / "run")])
    one_error_line(result, "transforms.json", "frame 3", "already frame 2")
    assert not (tmp_path / "run" / "partition.json").exists()


def test_a_colmap_model_cut_at_a_record_boundary_is_refused(tmp_path):
    from test_import import make_colmap_dataset

    make_colmap_dataset(tmp_path / "data", binary=False)
    path = _truncate_images_txt(tmp_path / "data")
    with pytest.raises(BirdnerfError, match="announces 6 images, the file holds 2") as err:
        read_images_text(path)
    assert err.value.path == path
    result = CliRunner().invoke(app, ["partition", str(tmp_path / "data"), "-o", str(tmp_path / "run")])
    one_error_line(result, "images.txt", "announces 6 images")


def test_sixteen_bit_grey_photos_keep_their_range(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    rgb = load_rgb(tmp_path / "grey16.png")
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    expected = np.round(ramp / 257.0).astype(np.uint8)
    assert np.abs(rgb[..., 0].astype(int) - expected).max() <= 1
    assert 120 < rgb.mean() < 135  # a ramp, not the all-white image a clipping conversion gives


def test_a_symlinked_images_folder_inside_the_dataset_is_accepted(mini_dataset, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for entry in mini_dataset.iterdir():  # images/, depth/ ... as links to folders elsewhere
        if entry.is_dir():
            (data / entry.name).symlink_to(entry, target_is_directory=True)
        else:
            shutil.copy(entry, data)
    scene = read_transforms(data)
    assert len(scene.names) == len(read_transforms(mini_dataset).names)
    assert all(p.is_file() for p in scene.image_paths)


def _camera_path(tmp_path: Path, *, width=64, height=48, fov=50.0, matrix=None) -> Path:
    pose = np.eye(4) if matrix is None else np.asarray(matrix, dtype=float)
    pose[2, 3] = 60.0 if matrix is None else pose[2, 3]
    path = tmp_path / "path.json"
    frame = {"camera_to_world": pose.ravel().tolist(), "fov": fov}
    path.write_text(json.dumps({"render_width": width, "render_height": height, "camera_path": [frame]}))
    return path


CAMERA_PATHS = {
    "all-zero matrix": ({"matrix": np.zeros((4, 4))}, "not a rotation matrix"),
    "mirrored rotation": ({"matrix": np.diag([1.0, 1.0, -1.0, 1.0])}, "not a rotation matrix"),
    "180 degree fov": ({"fov": 180.0}, "between 0 and 180"),
    "negative fov": ({"fov": -5.0}, "between 0 and 180"),
    "zero width": ({"width": 0}, "render size 0x48"),
    "huge frame": ({"width": 40000, "height": 40000}, "render size 40000x40000"),
}


@pytest.mark.parametrize("case", sorted(CAMERA_PATHS))
def test_bad_camera_paths_are_refused_before_rendering(case, trained_copy, tmp_path):
    spoil, needle = CAMERA_PATHS[case]
    path = _camera_path(tmp_path, **spoil)
    before = checksums(trained_copy)
    result = CliRunner().invoke(app, ["render", str(trained_copy), "--camera-path", str(path)])
    one_error_line(result, "path.json", needle)
    assert checksums(trained_copy) == before


def test_folders_left_by_a_killed_import_are_removed_at_the_next_start(tmp_path):
    from birdnerf.atomic import partial_dir

    out = tmp_path / "data"
    dead = tmp_path / f".data.{2**22 + 17}.k3j.partial"  # a PID that is not running
    (dead / "images").mkdir(parents=True)
    live = tmp_path / f".data.{os.getpid()}.x9q.partial"  # a running writer's folder stays
    live.mkdir()
    other = tmp_path / f".other.{2**22 + 17}.k3j.partial"  # another output's folder stays
    other.mkdir()
    tmp = partial_dir(out)
    assert tmp.parent == tmp_path and tmp.name.startswith(f".data.{os.getpid()}.")
    assert not dead.exists() and live.exists() and other.exists()


PHOTO_DAMAGE = {
    "empty file": (lambda p: p.write_bytes(b""), "empty file"),
    "not an image": (lambda p: p.write_text("not a photo"), "not a readable image"),
    "wrong size": (
        lambda p: Image.new("RGB", (40, 30)).save(p, format="PNG"),
        "is 40x30, its camera says 80x60",
    ),
}


@pytest.mark.parametrize("case", sorted(PHOTO_DAMAGE))
def test_partition_reads_every_photo_header_and_lists_the_bad_ones(case, mini_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(mini_dataset, data)
    damage, needle = PHOTO_DAMAGE[case]
    photos = sorted((data / "images").iterdir())
    for photo in photos[3:5]:
        damage(photo)
    result = CliRunner().invoke(app, ["partition", str(data), "-o", str(tmp_path / "run")])
    line = one_error_line(result, str(data), f"2 of {len(photos)} photos are unusable", needle)
    assert photos[3].name in line and photos[4].name in line
    assert not (tmp_path / "run" / "partition.json").exists()


def test_a_run_follows_its_dataset_to_a_new_place_and_refuses_another(mini_dataset, tmp_path):
    old, new, other = tmp_path / "old", tmp_path / "new", tmp_path / "other"
    shutil.copytree(mini_dataset, old)
    run = tmp_path / "run"
    assert CliRunner().invoke(app, ["partition", str(old), "-o", str(run), "--blocks", "1x2"]).exit_code == 0
    (run / "blocks" / "r00c00").mkdir(parents=True)
    (run / "blocks" / "r00c00" / "model.pt").write_bytes(b"trained")  # stands for a trained block
    shutil.copytree(old, other)
    shutil.move(old, new)
    # Without --relink, the moved dataset is another partition of a run with trained blocks.
    one_error_line(
        CliRunner().invoke(app, ["partition", str(new), "-o", str(run), "--blocks", "1x2"]), "--force"
    )
    # Another survey (one photo fewer) is refused, and the run is left as it was.
    meta = json.loads((other / "transforms.json").read_text())
    meta["frames"].pop(0)
    (other / "transforms.json").write_text(json.dumps(meta))
    before = checksums(run)
    one_error_line(
        CliRunner().invoke(app, ["partition", str(other), "-o", str(run), "--relink"]), "not the run"
    )
    assert checksums(run) == before
    result = CliRunner().invoke(app, ["partition", str(new), "-o", str(run), "--relink"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "partition.json").read_text())["dataset"] == str(new.resolve())
    assert (run / "blocks" / "r00c00" / "model.pt").read_bytes() == b"trained"
    from birdnerf.partition import load_scene, read_partition

    assert len(load_scene(read_partition(run))) == len(list((new / "images").iterdir()))


def _no_points(data: Path) -> list[Path]:
    """Drop the dataset's points and recorded ground, so that its depth maps give the ground."""
    meta = json.loads((data / "transforms.json").read_text())
    for key in ("points_file", "ground_z"):
        meta.get("birdnerf", {}).pop(key, None)
    (data / "transforms.json").write_text(json.dumps(meta))
    return sorted((data / "depth").glob("*.npy"))


DEPTH_DAMAGE = {
    "missing": (lambda paths: [paths[0].unlink()], "depth map not found"),
    "pickled": (
        lambda paths: [np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True) for p in paths],
        "not a depth map (a .npy array of numbers)",
    ),
    "all zeros": (
        lambda paths: [np.save(p, np.zeros((60, 80), np.float32)) for p in paths],
        "depth maps hold no positive depth",
    ),
}


@pytest.mark.parametrize("case", sorted(DEPTH_DAMAGE))
def test_bad_depth_maps_are_one_line(case, mini_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(mini_dataset, data)
    damage, needle = DEPTH_DAMAGE[case]
    damage(_no_points(data))
    result = CliRunner().invoke(app, ["partition", str(data), "-o", str(tmp_path / "run")])
    one_error_line(result, needle)
    assert not (tmp_path / "run" / "partition.json").exists()


TOO_LARGE = {
    "training rays": (["train", "{run}", "--force", "--rays", "10000000000"], ["--rays", "of memory"]),
    "orthophoto cells": (
        ["ortho", "{run}", "--gsd", "0.001"],
        ["cells at --gsd 0.001 m", "of memory and", "of disk", "larger --gsd (at least"],
    ),
    "export views": (["export", "{run}", "--points", "{tmp}/c.ply", "--scale", "500"], ["40000x30000 px"]),
}


@pytest.mark.parametrize("case", sorted(TOO_LARGE))
def test_work_too_large_for_the_machine_is_refused_before_it_starts(case, trained_copy, tmp_path):
    args, needles = TOO_LARGE[case]
    before = checksums(trained_copy)
    result = CliRunner().invoke(app, [a.format(run=trained_copy, tmp=tmp_path) for a in args])
    one_error_line(result, "needs up to", *needles)
    assert checksums(trained_copy) == before
    assert not (trained_copy / "ortho").exists() and not (tmp_path / "c.ply").exists()


def test_an_orthophoto_or_mesh_over_the_memory_available_names_both_figures(
    trained_copy, tmp_path, monkeypatch
):
    from birdnerf import resources

    monkeypatch.setattr(resources, "available_memory", lambda: 1 << 30)
    before = checksums(trained_copy)
    result = CliRunner().invoke(app, ["ortho", str(trained_copy), "--gsd", "0.01"])
    line = one_error_line(result, "cells at --gsd 0.01 m", "(1.0 GB available)", "of disk (")
    assert "use a larger --gsd" in line
    mesh = tmp_path / "m.ply"
    monkeypatch.setattr(resources, "available_memory", lambda: 256 << 20)
    result = CliRunner().invoke(
        app, ["export", str(trained_copy), "--mesh", str(mesh), "--mesh-voxel", "0.001"]
    )
    one_error_line(result, "exporting", "of memory (256 MB available)", "--mesh-voxel")
    assert checksums(trained_copy) == before and not mesh.exists()
    assert not (trained_copy / "ortho").exists()


def test_import_refuses_bad_photos_up_front_unless_told_to_skip_them(tmp_path):
    from test_import import NAMES, make_colmap_dataset

    make_colmap_dataset(tmp_path / "src")
    images = tmp_path / "src" / "images"
    data = (images / NAMES[1]).read_bytes()
    (images / NAMES[1]).write_bytes(data[: len(data) // 2])  # truncated: its header still reads
    (images / NAMES[4]).write_bytes(b"")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["import", str(tmp_path / "src"), "-o", str(out)])
    line = one_error_line(result, str(images), "2 of 6 photos are unusable", "--skip-bad-photos")
    assert f"{NAMES[1]}: corrupt or truncated" in line and f"{NAMES[4]}: empty file" in line
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["src"]
    result = CliRunner().invoke(app, ["import", str(tmp_path / "src"), "-o", str(out), "--skip-bad-photos"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "import_report.json").read_text())
    assert sorted(s["name"] for s in report["skipped"]) == sorted([NAMES[1], NAMES[4]])
    assert report["photos_registered"] == 4
