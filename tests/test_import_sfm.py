"""Raw drone photos -> structure from motion (pycolmap) -> georeferenced dataset."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from birdnerf.errors import BirdnerfError
from birdnerf.geo import GeoPoint, enu_to_geodetic, make_exif
from birdnerf.ingest import ImportConfig, import_dataset
from birdnerf.ingest.backend import require_pycolmap
from birdnerf.scene.nerfstudio import read_transforms
from birdnerf.synthetic import generate_sample_scene

try:
    import pycolmap  # noqa: F401

    HAS_PYCOLMAP = True
except ImportError:
    HAS_PYCOLMAP = False

ORIGIN = GeoPoint(46.8, 8.2, 500.0)
SENSOR_WIDTH_MM = 6.4
SMALL_CAMERA_ROWS = range(9)  # the first flight line is re-saved at 3/4 size: a second camera


def test_missing_pycolmap_is_a_clear_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "pycolmap", None)
    with pytest.raises(BirdnerfError, match=r"pip install 'birdnerf\[colmap\]'"):
        require_pycolmap()


def write_drone_photos(scene, folder: Path) -> None:
    """The synthetic survey's photos as JPEGs with EXIF GPS (from the true centres) and focal length."""
    folder.mkdir()
    lat, lon, alt = enu_to_geodetic(scene.centers, ORIGIN)
    for i, path in enumerate(scene.image_paths):
        image = Image.open(path).convert("RGB")
        cam = scene.cameras[i]
        if i in SMALL_CAMERA_ROWS:
            image = image.resize((cam.width * 3 // 4, cam.height * 3 // 4), Image.Resampling.LANCZOS)
        gps = None if i in (20, 40) else GeoPoint(float(lat[i]), float(lon[i]), float(alt[i]))
        focal_mm = cam.fx / cam.width * SENSOR_WIDTH_MM
        exif = make_exif(
            gps, focal_mm, sensor_width_mm=SENSOR_WIDTH_MM, image_width=image.width, make="Synth"
        )
        image.save(folder / f"{path.stem}.jpg", quality=95, exif=exif)


@pytest.mark.skipif(
    not HAS_PYCOLMAP, reason="raw-photo import needs pycolmap (pip install 'birdnerf[colmap]')"
)
def test_raw_photos_are_reconstructed_and_georeferenced(tmp_path: Path):
    truth = generate_sample_scene(tmp_path / "synthetic", "small")
    photos = tmp_path / "photos"
    write_drone_photos(truth, photos)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(photos / "noise.jpg")
    data = (photos / "photo_0030.jpg").read_bytes()
    (photos / "zz_corrupt.jpg").write_bytes(data[: len(data) // 3])

    report = import_dataset(photos, tmp_path / "out", ImportConfig(source="images", skip_bad_photos=True))
    assert report.source_kind == "images" and report.photos_total == len(truth) + 2
    assert report.photos_registered >= 0.9 * len(truth)
    reasons = {s.name: s.reason for s in report.skipped}
    assert "not registered by structure from motion" in reasons["noise.jpg"]
    assert "corrupt" in reasons["zz_corrupt.jpg"]
    assert report.frame["source"] == "gps" and report.gps["photos_with_gps"] == report.photos_registered - 2
    assert report.gps_rms_m < 1.0  # GPS here is exact: the residual is the reconstruction's error
    assert report.sfm["focal_fixed_from_exif"] and len(report.sfm["focal_px"]) == 2

    scene = read_transforms(tmp_path / "out")
    assert len(scene) == report.photos_registered and scene.is_world_frame
    # Photos fly 60 m above flat ground; the ENU origin is at the cameras' mean GPS height.
    assert scene.ground_z == pytest.approx(-60.0, abs=2.0)
    np.testing.assert_allclose(scene.c2w[:, 2, 2], -1.0, atol=0.02)  # nadir photos look down
    small = {f"images/photo_{i:04d}.jpg" for i in SMALL_CAMERA_ROWS}
    for name, cam in zip(scene.names, scene.cameras, strict=True):
        assert cam.width == (120 if name in small else 160)
        assert cam.fx == pytest.approx(96.0 if name in small else 128.0, rel=0.02)
    assert not (tmp_path / "out/images/noise.jpg").exists()
