"""``birdnerf import`` from COLMAP models: georeferencing, image cache, bad input, atomic output."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from birdnerf.errors import BirdnerfError
from birdnerf.geo import GeoPoint, enu_to_geodetic, geodetic_to_enu, make_exif
from birdnerf.ingest import ImportConfig, import_dataset
from birdnerf.scene.camera import Camera
from birdnerf.scene.colmap import write_colmap
from birdnerf.scene.colmap_model import rotmat_from_qvec
from birdnerf.scene.nerfstudio import read_transforms
from birdnerf.scene.scene import Scene

ORIGIN = GeoPoint(47.3769, 8.5417, 420.0)
NADIR = np.diag([1.0, -1.0, -1.0])
CAMERA = Camera(width=64, height=48, fx=50.0, fy=51.0, cx=31.5, cy=24.5, k1=-0.05, k2=0.01, p1=1e-3)
NAMES = [f"DJI_{i:04d}.JPG" for i in range(6)]


def make_colmap_dataset(
    root: Path, binary: bool = True, gps: list[bool] | None = None, cameras: list[Camera] | None = None
) -> np.ndarray:
    """Six nadir photos 40 m above ground over a 2x3 grid, in a COLMAP frame of arbitrary gauge.

    Photos carry EXIF GPS (where ``gps[i]``) of their true ENU positions around ORIGIN and are
    taken with ``cameras`` (default: CAMERA for all). Returns the (6, 3) true ENU camera centres.
    """
    cameras = cameras or [CAMERA] * 6
    rng = np.random.default_rng(0)
    enu = np.array([[12.0 * (i % 3), 10.0 * (i // 3), 40.0] for i in range(6)])
    c2w = np.tile(np.eye(4), (6, 1, 1))
    c2w[:, :3, :3], c2w[:, :3, 3] = NADIR, enu
    images = root / "images"
    images.mkdir(parents=True)
    lat, lon, alt = enu_to_geodetic(enu, ORIGIN)
    for i, name in enumerate(NAMES):
        texture = rng.integers(0, 255, (cameras[i].height, cameras[i].width, 3), dtype=np.uint8)
        point = GeoPoint(float(lat[i]), float(lon[i]), float(alt[i]))
        exif = make_exif(point, focal_35mm=28, make="DJI", model="FC300S") if gps is None or gps[i] else None
        Image.fromarray(texture).save(images / name, quality=90, exif=exif or Image.Exif())
    scene = Scene(
        root=images,
        image_paths=[images / n for n in NAMES],
        cameras=cameras,
        c2w=c2w,
        split=["train"] * 6,
        points=np.c_[rng.uniform(-5, 30, (40, 2)), rng.normal(0, 0.1, 40)],
        point_colors=rng.integers(0, 255, (40, 3), dtype=np.uint8),
    )
    q = rng.normal(size=4)
    gauge = np.eye(4)
    gauge[:3, :3] = 0.05 * rotmat_from_qvec(q / np.linalg.norm(q))
    gauge[:3, 3] = [1.0, 2.0, -3.0]
    write_colmap(scene.transformed(gauge), root / "sparse" / "0", binary=binary)
    return enu


def partials(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("binary", [True, False])
def test_colmap_import_is_georeferenced(tmp_path: Path, binary: bool):
    enu = make_colmap_dataset(tmp_path / "src", binary)
    report = import_dataset(tmp_path / "src", tmp_path / "out")
    assert (report.source_kind, report.photos_total, report.photos_registered) == ("colmap", 6, 6)
    assert report.skipped == [] and report.frame["source"] == "gps"
    assert report.gps["used"] == 6 and report.gps_rms_m < 1e-3
    scene = read_transforms(tmp_path / "out")
    assert scene.is_world_frame and scene.geo["frame"] == "ENU"
    origin = GeoPoint(scene.geo["lat"], scene.geo["lon"], scene.geo["alt"])
    lat, lon, alt = enu_to_geodetic(enu, ORIGIN)
    np.testing.assert_allclose(scene.centers, geodetic_to_enu(lat, lon, alt, origin), atol=1e-3)
    np.testing.assert_allclose(scene.c2w[:, 2, 2], -1.0, atol=1e-4)  # looking down, z up
    assert scene.ground_z == pytest.approx(-40.0, abs=0.2)  # ground 40 m below the mean camera
    assert scene.cameras == [CAMERA] * 6  # distortion kept, images not undistorted
    assert scene.points is not None and len(scene.points) == 40 and scene.point_colors.dtype == np.uint8
    for name in NAMES:
        assert (tmp_path / "out/images" / name).read_bytes() == (tmp_path / "src/images" / name).read_bytes()
    saved = json.loads((tmp_path / "out/import_report.json").read_text())
    assert saved["photos_registered"] == 6 and saved["gps"]["rms_m"] == report.gps["rms_m"]
    assert partials(tmp_path) == []


def test_downscale_scales_intrinsics_and_reuses_unchanged_copies(tmp_path: Path):
    make_colmap_dataset(tmp_path / "src")
    out = tmp_path / "out"
    report = import_dataset(tmp_path / "src", out, ImportConfig(max_width=32))
    assert report.images["written"] == 6 and report.images["reused"] == 0
    scene = read_transforms(out)
    assert scene.cameras == [CAMERA.scaled(0.5)] * 6
    assert Image.open(out / "images" / NAMES[0]).size == (32, 24)
    before = {n: (out / "images" / n).stat() for n in NAMES}

    report = import_dataset(tmp_path / "src", out, ImportConfig(max_width=32))
    assert report.images["reused"] == 6
    for name in NAMES:
        after = (out / "images" / name).stat()
        assert (after.st_mtime_ns, after.st_ino) == (before[name].st_mtime_ns, before[name].st_ino)

    # A changed source photo is rebuilt; the others are still reused.
    changed = tmp_path / "src/images" / NAMES[2]
    with Image.open(changed) as im:
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(changed, exif=im.getexif())
    os.utime(changed, ns=(before[NAMES[2]].st_mtime_ns + 10**9,) * 2)
    report = import_dataset(tmp_path / "src", out, ImportConfig(max_width=32))
    assert (report.images["written"], report.images["reused"]) == (1, 5)
    assert (out / "images" / NAMES[2]).stat().st_ino != before[NAMES[2]].st_ino

    # Another factor rebuilds every copy at the new size, with intrinsics to match.
    report = import_dataset(tmp_path / "src", out, ImportConfig(downscale=4))
    assert (report.images["written"], report.images["reused"]) == (6, 0)
    assert Image.open(out / "images" / NAMES[0]).size == (16, 12)
    assert read_transforms(out).cameras == [CAMERA.scaled(0.25)] * 6
    assert partials(tmp_path) == []


def test_mixed_cameras_keep_per_photo_intrinsics(tmp_path: Path):
    other = Camera(width=80, height=60, fx=70.0, fy=70.0, cx=40.0, cy=30.0)  # PINHOLE, another size
    cameras = [CAMERA, other] * 3
    make_colmap_dataset(tmp_path / "src", cameras=cameras)
    report = import_dataset(tmp_path / "src", tmp_path / "out", ImportConfig(max_width=40))
    assert report.photos_registered == 6
    meta = json.loads((tmp_path / "out/transforms.json").read_text())
    assert "fl_x" in meta["frames"][0] and meta["camera_model"] == "OPENCV"  # intrinsics per frame
    scene = read_transforms(tmp_path / "out")
    assert scene.cameras == [CAMERA.scaled(40 / 64), other.scaled(0.5)] * 3
    for name, cam in zip(scene.names, scene.cameras, strict=True):
        assert Image.open(tmp_path / "out" / name).size == (cam.width, cam.height) == (40, 30)


def test_bad_photos_are_skipped_with_reasons(tmp_path: Path):
    make_colmap_dataset(tmp_path / "src", gps=[True, True, True, True, False, True])
    images = tmp_path / "src/images"
    data = (images / NAMES[1]).read_bytes()
    (images / NAMES[1]).write_bytes(data[: len(data) // 2])  # truncated JPEG
    Image.new("RGB", (64, 48)).save(images / "extra.jpg")  # in the folder, not in the model
    with pytest.raises(BirdnerfError, match=rf"1 of 6 photos are unusable: {NAMES[1]}: corrupt.*--skip-bad"):
        import_dataset(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out").exists() and partials(tmp_path) == []
    report = import_dataset(tmp_path / "src", tmp_path / "out", ImportConfig(skip_bad_photos=True))
    assert (report.photos_total, report.photos_registered) == (7, 5)
    reasons = {s.name: s.reason for s in report.skipped}
    assert set(reasons) == {NAMES[1], "extra.jpg"}
    assert "corrupt" in reasons[NAMES[1]] and "truncated" in reasons[NAMES[1]]
    assert "not registered" in reasons["extra.jpg"]
    assert report.gps["photos_with_gps"] == 4 and report.gps["used"] == 4  # EXIF-less photo left out
    assert report.frame["source"] == "gps"
    scene = read_transforms(tmp_path / "out")
    assert len(scene) == 5 and not (tmp_path / "out/images" / NAMES[1]).exists()


def test_without_enough_gps_the_frame_is_estimated(tmp_path: Path):
    make_colmap_dataset(tmp_path / "src", gps=[True, True, False, False, False, False])
    report = import_dataset(tmp_path / "src", tmp_path / "out")
    assert report.frame["source"] == "estimated" and "only 2 of 6" in report.frame["reason"]
    scene = read_transforms(tmp_path / "out")
    assert scene.is_world_frame and scene.ground_z == 0.0 and scene.geo is None
    np.testing.assert_allclose(scene.c2w[:, 2, 2], -1.0, atol=1e-3)  # still z up
    report = import_dataset(tmp_path / "src", tmp_path / "out2", ImportConfig(geo=False))
    assert report.frame["reason"] == "georeferencing turned off"


def test_model_names_that_do_not_match_the_folder(tmp_path: Path):
    make_colmap_dataset(tmp_path / "src", binary=False)
    images = tmp_path / "src/images"
    (images / NAMES[0]).rename(images / "renamed.JPG")
    report = import_dataset(tmp_path / "src", tmp_path / "out")
    reasons = {s.name: s.reason for s in report.skipped}
    assert "in the COLMAP model but not in" in reasons[NAMES[0]]
    assert "not registered" in reasons["renamed.JPG"] and report.photos_registered == 5
    for name in NAMES[1:]:
        (images / name).rename(images / f"x_{name}")
    with pytest.raises(BirdnerfError, match=r"images\.txt.*none of the model's 6 image names.*DJI_0000"):
        import_dataset(tmp_path / "src", tmp_path / "out2")
    assert not (tmp_path / "out2").exists() and partials(tmp_path) == []


def test_truncated_model_fails_and_keeps_the_previous_dataset(tmp_path: Path):
    make_colmap_dataset(tmp_path / "src")
    out = tmp_path / "out"
    import_dataset(tmp_path / "src", out)
    transforms = (out / "transforms.json").read_bytes()
    model = tmp_path / "src/sparse/0/images.bin"
    model.write_bytes(model.read_bytes()[:100])
    with pytest.raises(BirdnerfError, match=r"images\.bin"):
        import_dataset(tmp_path / "src", out)
    assert (out / "transforms.json").read_bytes() == transforms
    assert len(read_transforms(out)) == 6 and partials(tmp_path) == []


def test_unusable_sources_and_outputs(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BirdnerfError, match="nothing to import"):
        import_dataset(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(BirdnerfError, match="no photos found"):
        import_dataset(tmp_path / "empty", tmp_path / "out", ImportConfig(source="images"))
    with pytest.raises(BirdnerfError, match="no such folder"):
        import_dataset(tmp_path / "missing", tmp_path / "out")
    make_colmap_dataset(tmp_path / "src")
    with pytest.raises(BirdnerfError, match="must not be the source"):
        import_dataset(tmp_path / "src", tmp_path / "src")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy/notes.txt").write_text("mine")
    with pytest.raises(BirdnerfError, match="not empty"):
        import_dataset(tmp_path / "src", tmp_path / "busy")
    with pytest.raises(BirdnerfError, match="not both"):
        import_dataset(tmp_path / "src", tmp_path / "out", ImportConfig(max_width=10, downscale=2))
    assert (tmp_path / "busy/notes.txt").read_text() == "mine" and not (tmp_path / "out").exists()
    assert partials(tmp_path) == []


def test_import_command(tmp_path: Path):
    from typer.testing import CliRunner

    from birdnerf_cli import import_data  # noqa: F401  (registers the command)
    from birdnerf_cli.main import app

    make_colmap_dataset(tmp_path / "src")
    runner = CliRunner()
    result = runner.invoke(
        app, ["import", str(tmp_path / "src"), "-o", str(tmp_path / "out"), "--downscale", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "Registered 6 of 6 photos" in result.output and "GPS residual" in result.output
    assert Image.open(tmp_path / "out/images" / NAMES[0]).size == (32, 24)
    result = runner.invoke(app, ["import", str(tmp_path / "nowhere"), "-o", str(tmp_path / "out2")])
    assert result.exit_code == 1 and "no such folder" in result.output
    help_text = runner.invoke(app, ["import", "--help"]).output
    assert "metres" in help_text and "--max-width" in help_text
