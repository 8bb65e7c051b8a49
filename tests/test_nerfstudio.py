import json
from pathlib import Path

import numpy as np
import pytest

from birdnerf.errors import BirdnerfError
from birdnerf.scene.camera import Camera
from birdnerf.scene.load import load_dataset
from birdnerf.scene.nerfstudio import read_transforms, write_transforms
from birdnerf.scene.scene import Scene

NADIR = np.diag([1.0, -1.0, -1.0])  # OpenCV camera looking straight down a z-up world
WIDE = Camera(width=8, height=6, fx=7.0, fy=7.2, cx=4.1, cy=2.9, k1=-0.05, k2=0.01, p1=1e-3, p2=-1e-3)
NARROW = Camera(width=8, height=6, fx=12.0, fy=12.0, cx=4.0, cy=3.0)


def make_scene(root: Path, write_test_photos, cameras: list[Camera]) -> Scene:
    names = [f"images/frame_{i:02d}.png" for i in range(len(cameras))]
    paths = write_test_photos(root, names)
    rng = np.random.default_rng(11)
    c2w = np.tile(np.eye(4), (len(cameras), 1, 1))
    for i in range(len(cameras)):
        q = rng.normal(size=4)
        w, x, y, z = q / np.linalg.norm(q)
        c2w[i, :3, :3] = [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
        c2w[i, :3, 3] = rng.normal(scale=20.0, size=3)
    c2w[0, :3, :3] = NADIR
    c2w[0, :3, 3] = [3.0, -4.0, 50.0]
    split = ["train", "val", "test", "train", "train"][: len(cameras)]
    return Scene(
        root=root.resolve(),
        image_paths=[p.resolve() for p in paths],
        cameras=cameras,
        c2w=c2w,
        split=split,
    )


def assert_same_scene(a: Scene, b: Scene) -> None:
    assert a.names == b.names
    assert a.split == b.split
    assert a.cameras == b.cameras
    np.testing.assert_allclose(a.c2w, b.c2w, atol=1e-9)


def test_round_trip_with_shared_intrinsics(tmp_path, write_test_photos):
    scene = make_scene(tmp_path, write_test_photos, [WIDE] * 5)
    path = write_transforms(scene, tmp_path)
    meta = json.loads(path.read_text())
    assert meta["camera_model"] == "OPENCV" and meta["fl_y"] == 7.2
    assert "fl_x" not in meta["frames"][0]
    back = read_transforms(path)
    assert_same_scene(scene, back)
    assert back.source == "nerfstudio" and back.split.count("val") == 1


def test_round_trip_with_per_frame_intrinsics(tmp_path, write_test_photos):
    scene = make_scene(tmp_path, write_test_photos, [WIDE, NARROW, WIDE, NARROW])
    path = write_transforms(scene, tmp_path / "transforms.json")
    meta = json.loads(path.read_text())
    assert [f["fl_x"] for f in meta["frames"]] == [7.0, 12.0, 7.0, 12.0]
    assert [f["camera_model"] for f in meta["frames"]] == ["OPENCV", "PINHOLE", "OPENCV", "PINHOLE"]
    assert_same_scene(scene, read_transforms(tmp_path))


def test_transform_matrix_is_opengl(tmp_path, write_test_photos):
    scene = make_scene(tmp_path, write_test_photos, [NARROW] * 2)
    meta = json.loads(write_transforms(scene, tmp_path).read_text())
    matrix = np.array(meta["frames"][0]["transform_matrix"])
    # OpenGL: x right, y up, z back. A camera looking straight down has z (back) pointing up
    # and y (image up) along world +y, where OpenCV's y (image down) was world -y.
    np.testing.assert_allclose(matrix[:3, 0], [1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(matrix[:3, 1], [0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(matrix[:3, 2], [0.0, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(matrix[:3, 3], [3.0, -4.0, 50.0], atol=1e-12)
    np.testing.assert_allclose(read_transforms(tmp_path).c2w[0, :3, :3], NADIR, atol=1e-12)


def write_meta(root: Path, frames: list[dict], **extra) -> Path:
    meta = {"camera_model": "PINHOLE", "fl_x": 7.0, "w": 8, "h": 6, **extra, "frames": frames}
    path = root / "transforms.json"
    path.write_text(json.dumps(meta))
    return path


def frame(name: str, position=(0.0, 0.0, 10.0)) -> dict:
    matrix = np.eye(4)
    matrix[:3, 3] = position
    return {"file_path": name, "transform_matrix": matrix.tolist()}


def test_without_split_lists_every_eighth_photo_is_held_out(tmp_path, write_test_photos):
    names = [f"images/{i:02d}.png" for i in range(9)]
    write_test_photos(tmp_path, names)
    scene = read_transforms(write_meta(tmp_path, [frame(n) for n in reversed(names)]))
    assert [n for n, s in zip(scene.names, scene.split, strict=True) if s == "test"] == ["images/04.png"]
    assert scene.cameras[0] == Camera(width=8, height=6, fx=7.0, fy=7.0, cx=4.0, cy=3.0)


def test_file_path_escaping_the_dataset_is_refused(tmp_path, write_test_photos):
    write_test_photos(tmp_path, ["outside.png"])
    (tmp_path / "data").mkdir()
    path = write_meta(tmp_path / "data", [frame("../outside.png")])
    with pytest.raises(BirdnerfError, match="outside the dataset directory") as err:
        read_transforms(path)
    assert err.value.path == path and "transforms.json" in str(err.value)


def test_malformed_json_names_the_file(tmp_path):
    path = tmp_path / "transforms.json"
    path.write_text('{"frames": [')
    with pytest.raises(BirdnerfError, match="malformed JSON") as err:
        read_transforms(path)
    assert err.value.path == path and "transforms.json" in str(err.value)


def test_nan_pose_names_the_file(tmp_path, write_test_photos):
    write_test_photos(tmp_path, ["a.png"])
    path = write_meta(tmp_path, [frame("a.png", position=(0.0, float("nan"), 1.0))])
    assert "NaN" in path.read_text()
    with pytest.raises(BirdnerfError, match="frame 0: transform_matrix contains NaN") as err:
        read_transforms(path)
    assert err.value.path == path


def test_load_dataset_reads_transforms_file_or_folder(tmp_path, write_test_photos):
    scene = make_scene(tmp_path, write_test_photos, [NARROW] * 3)
    path = write_transforms(scene, tmp_path)
    for target in (tmp_path, path):
        loaded = load_dataset(target)
        assert loaded.source == "nerfstudio"
        assert_same_scene(scene, loaded)
