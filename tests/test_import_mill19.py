"""Mega-NeRF / Mill19 folders: axes, scale, splits, and safe loading of user .pt files."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from birdnerf.errors import BirdnerfError
from birdnerf.ingest import ImportConfig, import_dataset
from birdnerf.scene.camera import Camera
from birdnerf.scene.colmap_model import rotmat_from_qvec
from birdnerf.scene.mill19 import read_mill19
from birdnerf.scene.nerfstudio import read_transforms

# COLMAP world axes as Mega-NeRF's colmap_to_mega_nerf.py assumes them: y is down. Rows: the
# COLMAP axes (east, down, north) in ENU.
COLMAP_FROM_ENU = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
RDF_TO_DRB = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
SCALE = 50.0
ORDER = [0, 1, 2, 3, 5, 6, 7, 8, 4]  # the reader's order: train photos by name, then val
CAMERA = Camera(width=64, height=48, fx=60.0, fy=60.0, cx=32.0, cy=24.0)


def nadir_c2w(x: float, y: float, z: float, heading_deg: float) -> np.ndarray:
    """OpenCV camera-to-world (ENU) looking straight down, its image 'up' along ``heading_deg``."""
    h = np.radians(heading_deg)
    right = np.array([np.cos(h), -np.sin(h), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, np.cross(down, right), down], axis=1)
    c2w[:3, 3] = [x, y, z]
    return c2w


def mega_nerf_record(c2w_enu: np.ndarray, origin_drb: np.ndarray) -> torch.Tensor:
    """The (3, 4) c2w that Mega-NeRF's converter writes for a COLMAP pose of this camera."""
    rot = COLMAP_FROM_ENU @ c2w_enu[:3, :3]  # COLMAP camera-to-world (OpenCV camera axes)
    centre = COLMAP_FROM_ENU @ c2w_enu[:3, 3]
    drb = np.hstack([RDF_TO_DRB @ rot @ np.linalg.inv(RDF_TO_DRB), (RDF_TO_DRB @ centre)[:, None]])
    drb[:, 3] = (drb[:, 3] - origin_drb) / SCALE
    return torch.from_numpy(np.concatenate([drb[:, 1:2], -drb[:, :1], drb[:, 2:4]], axis=1)).float()


def make_mill19(root: Path, image_scale: float = 0.5) -> tuple[list[np.ndarray], np.ndarray]:
    """A 3x3 nadir survey (ENU metres); the fourth photo goes to val. Returns poses and origin."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    poses = [nadir_c2w(20.0 * (i % 3), 20.0 * (i // 3), 80.0, 30.0 * i) for i in range(9)]
    centres_drb = np.array([RDF_TO_DRB @ COLMAP_FROM_ENU @ p[:3, 3] for p in poses])
    origin = 0.5 * (centres_drb.min(axis=0) + centres_drb.max(axis=0))
    torch.save({"origin_drb": torch.from_numpy(origin), "pose_scale_factor": SCALE}, root / "coordinates.pt")
    size = (int(CAMERA.width * image_scale), int(CAMERA.height * image_scale))
    for i, pose in enumerate(poses):
        split = "val" if i == 4 else "train"
        (root / split / "metadata").mkdir(parents=True, exist_ok=True)
        (root / split / "rgbs").mkdir(parents=True, exist_ok=True)
        record = {
            "W": CAMERA.width,
            "H": CAMERA.height,
            "intrinsics": torch.tensor([CAMERA.fx, CAMERA.fy, CAMERA.cx, CAMERA.cy]),
            "c2w": mega_nerf_record(pose, origin),
            "distortion": torch.tensor([0.01, 0.0, 0.0, 0.0]),  # images already undistorted
        }
        torch.save(record, root / split / "metadata" / f"{i:06d}.pt")
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / split / "rgbs" / f"{i:06d}.jpg")
    return poses, origin


def test_mill19_axes_scale_and_splits(tmp_path: Path):
    poses, _ = make_mill19(tmp_path)
    scene = read_mill19(tmp_path)
    assert len(scene) == 9 and scene.split == ["train"] * 8 + ["test"]
    expected = COLMAP_FROM_ENU.T @ RDF_TO_DRB.T  # ENU from Mega-NeRF's (down, right, back) world
    # birdnerf's frame for Mill19 is x right (east here), y forward (north), z up: ENU itself.
    np.testing.assert_allclose(scene.world_from_input[:3, :3], SCALE * expected, atol=1e-9)
    for i, pose in enumerate(poses[j] for j in ORDER):
        np.testing.assert_allclose(scene.c2w[i, :3, :3], pose[:3, :3], atol=1e-6)
        np.testing.assert_allclose(scene.c2w[i, :3, 3], pose[:3, 3], atol=1e-4)
        np.testing.assert_allclose(scene.c2w[i, :3, 2], [0.0, 0.0, -1.0], atol=1e-6)  # looks down
    assert scene.cameras[0] == CAMERA.scaled(0.5)  # metadata size 64x48, photos 32x24


def test_mill19_oblique_camera_keeps_its_view_direction(tmp_path: Path):
    rng = np.random.default_rng(1)
    q = rng.normal(size=4)
    pose = np.eye(4)
    pose[:3, :3] = rotmat_from_qvec(q / np.linalg.norm(q))
    pose[:3, 3] = [5.0, -3.0, 40.0]
    origin = np.array([-40.0, 5.0, 3.0])
    torch.save(
        {"origin_drb": torch.from_numpy(origin), "pose_scale_factor": SCALE}, tmp_path / "coordinates.pt"
    )
    (tmp_path / "train/metadata").mkdir(parents=True)
    (tmp_path / "train/rgbs").mkdir(parents=True)
    record = {
        "W": 8,
        "H": 6,
        "intrinsics": torch.tensor([7.0, 7.0, 4.0, 3.0]),
        "c2w": mega_nerf_record(pose, origin),
    }
    torch.save(record, tmp_path / "train/metadata/a.pt")
    Image.new("RGB", (8, 6)).save(tmp_path / "train/rgbs/a.png")
    scene = read_mill19(tmp_path)
    np.testing.assert_allclose(scene.c2w[0], pose, atol=1e-5)


def test_mill19_refuses_pickled_objects(tmp_path: Path):
    make_mill19(tmp_path)
    bad = tmp_path / "train/metadata/000002.pt"
    torch.save({"W": 64, "H": 48, "when": datetime.date(2020, 1, 1)}, bad)
    with pytest.raises(BirdnerfError, match="000002.pt: not a readable tensor file"):
        read_mill19(tmp_path)
    skipped: list[tuple[str, str]] = []
    scene = read_mill19(tmp_path, skipped)
    assert len(scene) == 8 and skipped[0][0] == "train/rgbs/000002"
    (tmp_path / "coordinates.pt").write_bytes(b"garbage")
    with pytest.raises(BirdnerfError, match="coordinates.pt"):
        read_mill19(tmp_path)


def test_mill19_import(tmp_path: Path):
    poses, _ = make_mill19(tmp_path / "src", image_scale=1.0)
    (tmp_path / "src/train/rgbs/000007.jpg").unlink()
    with pytest.raises(BirdnerfError, match="1 of 9 photos are unusable: train/rgbs/000007: .*no photo"):
        import_dataset(tmp_path / "src", tmp_path / "out")
    report = import_dataset(tmp_path / "src", tmp_path / "out", ImportConfig(skip_bad_photos=True))
    assert (report.source_kind, report.photos_total, report.photos_registered) == ("mill19", 9, 8)
    assert report.skipped[0].name == "train/rgbs/000007" and "no photo" in report.skipped[0].reason
    assert report.frame["source"] == "mill19_axes" and report.frame["reason"] == "no photo has a GPS position"
    assert any("no sparse points" in w for w in report.warnings)
    scene = read_transforms(tmp_path / "out")
    assert scene.is_world_frame and scene.ground_z is not None
    names = scene.names
    assert "images/val/000004.jpg" in names and scene.split[names.index("images/val/000004.jpg")] == "test"
    kept = [poses[j] for j in ORDER if j != 7]
    np.testing.assert_allclose(scene.c2w, np.stack(kept), atol=1e-4)
    assert scene.cameras[0] == CAMERA
