"""End-to-end import of the real Brighton Beach survey (18 DJI photos with EXIF GPS).

The data stays in ``../shared/data/brighton_beach``: the tests read it in place, or through
links in a temporary folder, and skip when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from birdnerf.ingest import ImportConfig, SfmOptions, import_dataset
from birdnerf.scene.nerfstudio import read_transforms

try:
    import pycolmap  # noqa: F401

    HAS_PYCOLMAP = True
except ImportError:
    HAS_PYCOLMAP = False

PHOTOS = 18
ALTITUDE_M = 46.0  # flight height above the beach, from the survey's description


def check_dataset(out: Path, report) -> None:
    assert report.photos_total == PHOTOS and report.photos_registered == PHOTOS and report.skipped == []
    assert report.frame["source"] == "gps" and report.gps["used"] == PHOTOS
    assert report.gps_rms_m < 1.0  # the survey's README: 0.37 m RMS after a similarity alignment
    assert report.gps["rms_horizontal_m"] < 1.0 and report.gps["rms_vertical_m"] < 1.0
    scene = read_transforms(out)
    assert len(scene) == PHOTOS and scene.is_world_frame and scene.geo["frame"] == "ENU"
    assert scene.geo["lat"] == pytest.approx(46.8427, abs=1e-3)
    assert scene.geo["lon"] == pytest.approx(-91.9940, abs=1e-3)
    assert -scene.ground_z == pytest.approx(ALTITUDE_M, abs=4.0)  # ENU origin at the cameras' height
    assert np.all(scene.c2w[:, 2, 2] < -0.95)  # nadir photos look down
    extent = np.ptp(scene.centers[:, :2], axis=0)
    assert np.all((extent > 30) & (extent < 90))  # photos spread over the 84 m x 84 m survey


@pytest.mark.parametrize("model_format", ["bin", "txt"])
def test_brighton_beach_from_colmap(brighton_beach_dir: Path, tmp_path: Path, model_format: str):
    src = tmp_path / "src"
    (src / "sparse/0").mkdir(parents=True)
    (src / "images").symlink_to(brighton_beach_dir / "images")
    for part in ("cameras", "images", "points3D"):
        (src / "sparse/0" / f"{part}.{model_format}").symlink_to(
            brighton_beach_dir / "sparse/0" / f"{part}.{model_format}"
        )
    report = import_dataset(src, tmp_path / "out", ImportConfig(max_width=400))
    check_dataset(tmp_path / "out", report)
    scene = read_transforms(tmp_path / "out")
    assert scene.cameras[0].width == 400 and scene.cameras[0].k1 != 0.0  # SIMPLE_RADIAL, halved
    assert scene.points is not None and len(scene.points) > 2000


@pytest.mark.skipif(
    not HAS_PYCOLMAP, reason="raw-photo import needs pycolmap (pip install 'birdnerf[colmap]')"
)
def test_brighton_beach_from_raw_photos(brighton_beach_dir: Path, tmp_path: Path):
    # 2048 features per photo (default 4096) register all 18 photos in about half the time.
    config = ImportConfig(sfm=SfmOptions(max_features=2048))
    report = import_dataset(brighton_beach_dir / "images", tmp_path / "out", config)
    assert report.source_kind == "images"
    check_dataset(tmp_path / "out", report)
    assert report.sfm["focal_fixed_from_exif"] and report.sfm["pairs_matched"] > 0
