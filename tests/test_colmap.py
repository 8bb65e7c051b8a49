import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from birdnerf.errors import BirdnerfError
from birdnerf.scene.camera import Camera, project
from birdnerf.scene.colmap import (
    detect_model_format,
    read_colmap,
    read_colmap_model,
    write_colmap,
    write_colmap_model,
)
from birdnerf.scene.colmap_model import (
    ColmapCamera,
    ColmapImage,
    ColmapModel,
    camera_from_colmap,
    camera_to_colmap,
    qvec_from_rotmat,
    rotmat_from_qvec,
)
from birdnerf.scene.load import load_dataset
from birdnerf.scene.scene import Scene, holdout_split

NADIR = np.diag([1.0, -1.0, -1.0])  # OpenCV camera looking straight down a z-up world
INTRINSICS = ("fx", "fy", "cx", "cy", "k1", "k2", "k3", "k4", "p1", "p2")
NAMES = ["a.png", "b.png", "c.png", "sub/d.png"]
PINHOLE = Camera(width=8, height=6, fx=7.5, fy=7.25, cx=4.1, cy=2.9)
SIMPLE_RADIAL = Camera(width=8, height=6, fx=7.0, fy=7.0, cx=4.0, cy=3.0, k1=0.05)
FULL_OPENCV = Camera(width=8, height=6, fx=6.5, fy=6.6, cx=4.2, cy=3.1, k1=-0.1, k2=0.02, k3=0.003, p1=1e-3)
CAMERAS_BY_MODEL = {
    "SIMPLE_PINHOLE": Camera(width=8, height=6, fx=7.0, fy=7.0, cx=4.0, cy=3.0),
    "PINHOLE": PINHOLE,
    "SIMPLE_RADIAL": SIMPLE_RADIAL,
    "RADIAL": Camera(width=8, height=6, fx=7.0, fy=7.0, cx=4.0, cy=3.0, k1=0.05, k2=-0.01),
    "OPENCV": Camera(width=8, height=6, fx=7.0, fy=7.1, cx=4.0, cy=3.0, k1=-0.1, k2=0.01, p1=1e-3, p2=-2e-3),
    "FULL_OPENCV": FULL_OPENCV,
}


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    return rotmat_from_qvec(q / np.linalg.norm(q))


def make_scene(root: Path, write_test_photos, cameras=None) -> Scene:
    """Four photos under ``root/images`` with shared and distinct cameras, and 20 coloured points."""
    rng = np.random.default_rng(7)
    paths = write_test_photos(root / "images", NAMES)
    rotations = [NADIR, np.eye(3), random_rotation(rng), random_rotation(rng)]
    c2w = np.tile(np.eye(4), (4, 1, 1))
    for i, rot in enumerate(rotations):
        c2w[i, :3, :3] = rot
        c2w[i, :3, 3] = rng.normal(scale=10.0, size=3)
    return Scene(
        root=(root / "images").resolve(),
        image_paths=[p.resolve() for p in paths],
        cameras=cameras or [PINHOLE, SIMPLE_RADIAL, SIMPLE_RADIAL, FULL_OPENCV],
        c2w=c2w,
        split=holdout_split(NAMES),
        points=rng.normal(size=(20, 3)),
        point_colors=rng.integers(0, 256, size=(20, 3)).astype(np.uint8),
    )


def assert_same_scene(a: Scene, b: Scene) -> None:
    assert a.names == b.names
    assert a.split == b.split
    for ca, cb in zip(a.cameras, b.cameras, strict=True):
        assert (ca.width, ca.height) == (cb.width, cb.height)
        values_a, values_b = ([getattr(c, k) for k in INTRINSICS] for c in (ca, cb))
        np.testing.assert_allclose(values_a, values_b, atol=1e-9)
    np.testing.assert_allclose(a.c2w, b.c2w, atol=1e-9)
    np.testing.assert_allclose(a.points, b.points, atol=1e-9)
    np.testing.assert_array_equal(a.point_colors, b.point_colors)


@pytest.fixture
def tiny_colmap(tmp_path, write_test_photos):
    """(scene, model_dir): a scene and its binary model in ``tmp_path/sparse/0``."""
    scene = make_scene(tmp_path, write_test_photos)
    return scene, write_colmap(scene, tmp_path / "sparse" / "0", binary=True)


@pytest.mark.parametrize("binary", [True, False])
def test_round_trip_keeps_cameras_poses_and_points(tmp_path, write_test_photos, binary):
    scene = make_scene(tmp_path, write_test_photos)
    model_dir = write_colmap(scene, tmp_path / "sparse" / "0", binary=binary)
    suffix = ".bin" if binary else ".txt"
    expected = [f"{part}{suffix}" for part in ("cameras", "images", "points3D")]
    assert sorted(p.name for p in model_dir.iterdir()) == expected
    back = read_colmap(model_dir, tmp_path / "images")
    assert_same_scene(scene, back)
    assert back.source == "colmap" and not back.is_world_frame
    np.testing.assert_array_equal(back.world_from_input, np.eye(4))
    # The two photos sharing a camera share one COLMAP camera.
    model = read_colmap_model(model_dir)
    assert sorted(c.model for c in model.cameras.values()) == ["FULL_OPENCV", "PINHOLE", "SIMPLE_RADIAL"]


@pytest.mark.parametrize("model_name", list(CAMERAS_BY_MODEL))
def test_each_camera_model_round_trips_in_both_formats(tmp_path, write_test_photos, model_name):
    camera = CAMERAS_BY_MODEL[model_name]
    assert camera_to_colmap(camera, 1).model == model_name
    assert camera_from_colmap(camera_to_colmap(camera, 1)) == camera
    scene = make_scene(tmp_path, write_test_photos, cameras=[camera] * 4)
    text = read_colmap(write_colmap(scene, tmp_path / "text", binary=False), tmp_path / "images")
    binary = read_colmap(write_colmap(scene, tmp_path / "bin", binary=True), tmp_path / "images")
    assert text.cameras[0] == binary.cameras[0] == camera
    np.testing.assert_array_equal(text.c2w, binary.c2w)


def test_written_poses_follow_colmap_world_to_camera_convention(tmp_path, write_test_photos):
    scene = make_scene(tmp_path, write_test_photos)
    scene.c2w[0, :3, 3] = [1.0, 2.0, 3.0]  # NADIR rotation: 180 degrees about x
    scene.c2w[1, :3, 3] = [1.0, 2.0, 3.0]  # identity rotation
    model = read_colmap_model(write_colmap(scene, tmp_path / "m", binary=False))
    nadir, level = model.images[0], model.images[1]
    np.testing.assert_allclose(nadir.qvec, [0.0, 1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(nadir.tvec, [-1.0, 2.0, 3.0], atol=1e-12)
    np.testing.assert_allclose(level.qvec, [1.0, 0.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(level.tvec, [-1.0, -2.0, -3.0], atol=1e-12)


def test_quaternion_conversion_round_trips_in_every_branch():
    rng = np.random.default_rng(3)
    rotations = [np.eye(3), NADIR, np.diag([-1.0, 1.0, -1.0]), np.diag([-1.0, -1.0, 1.0])]
    rotations += [random_rotation(rng) for _ in range(50)]
    for rot in rotations:
        q = qvec_from_rotmat(rot)
        assert q[0] >= 0 and abs(np.linalg.norm(q) - 1) < 1e-12
        np.testing.assert_allclose(rotmat_from_qvec(q), rot, atol=1e-12)


def test_text_and_binary_readers_agree_and_auto_prefers_binary(tmp_path, write_test_photos):
    scene = make_scene(tmp_path, write_test_photos)
    model_dir = write_colmap(scene, tmp_path / "both", binary=True)
    text_dir = write_colmap(scene, tmp_path / "text", binary=False)
    for f in text_dir.iterdir():
        shutil.copy(f, model_dir / f.name)
    text = read_colmap(model_dir, tmp_path / "images", model_format="text")
    binary = read_colmap(model_dir, tmp_path / "images", model_format="binary")
    assert_same_scene(text, binary)
    assert detect_model_format(model_dir) == "binary"
    # Make the text copy differ: "auto" must still read the binary one.
    moved = replace(scene, c2w=scene.c2w.copy())
    moved.c2w[:, 0, 3] += 5.0
    write_colmap(moved, tmp_path / "text", binary=False)
    for f in text_dir.iterdir():
        shutil.copy(f, model_dir / f.name)
    np.testing.assert_allclose(read_colmap(model_dir, tmp_path / "images").c2w, scene.c2w, atol=1e-9)
    # A binary model without points3D loses to a complete text model.
    (model_dir / "points3D.bin").unlink()
    assert detect_model_format(model_dir) == "text"


def test_rig_and_frame_files_are_ignored_and_replaced_on_write(tiny_colmap, tmp_path):
    scene, model_dir = tiny_colmap
    for name in ("rigs.bin", "frames.bin", "rigs.txt", "frames.txt"):
        (model_dir / name).write_bytes(b"\x07 not read")
    assert_same_scene(scene, read_colmap(model_dir, tmp_path / "images"))
    write_colmap(scene, model_dir, binary=False)
    assert sorted(p.suffix for p in model_dir.iterdir()) == [".txt"] * 3


def test_holdout_split_holds_out_every_eighth_name():
    names = [f"img_{i:02d}.jpg" for i in range(20)][::-1]
    split = holdout_split(names)
    assert sorted(n for n, s in zip(names, split, strict=True) if s == "test") == [
        "img_04.jpg",
        "img_12.jpg",
    ]


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cameras.bin", "images.bin", "points3D.bin"])
def test_truncated_binary_file_names_the_file(tiny_colmap, tmp_path, name):
    _, model_dir = tiny_colmap
    data = (model_dir / name).read_bytes()
    (model_dir / name).write_bytes(data[: len(data) - 5])
    with pytest.raises(BirdnerfError, match="truncated") as err:
        read_colmap(model_dir, tmp_path / "images")
    assert err.value.path.name == name and name in str(err.value)


def test_truncated_images_bin_says_which_image(tiny_colmap, tmp_path):
    _, model_dir = tiny_colmap
    data = (model_dir / "images.bin").read_bytes()
    third = data.index(b"c.png\x00") - 64  # start of the third record: id, qvec, tvec, camera id
    (model_dir / "images.bin").write_bytes(data[: third + 20])
    with pytest.raises(BirdnerfError, match=r"images\.bin: truncated at image 3"):
        read_colmap(model_dir, tmp_path / "images")


def test_trailing_bytes_in_binary_file_are_reported(tiny_colmap, tmp_path):
    _, model_dir = tiny_colmap
    with open(model_dir / "cameras.bin", "ab") as f:
        f.write(b"\x00" * 3)
    with pytest.raises(BirdnerfError, match=r"cameras\.bin: 3 unexpected bytes"):
        read_colmap(model_dir, tmp_path / "images")


@pytest.mark.parametrize(
    ("name", "old", "new", "message"),
    [
        ("cameras.txt", " 2.9\n", "\n", r"line 4: a PINHOLE camera has 8 fields, got 7"),
        ("cameras.txt", "PINHOLE", "FOV", r"unsupported camera model FOV"),
        ("cameras.txt", " 7.25 ", " seven ", r"parameter 'seven' is not a number"),
        ("cameras.txt", "PINHOLE 8 6", "PINHOLE 0 6", r"line 4: camera 1: image size 0x6 is not positive"),
        ("images.txt", "a.png", "a.png\n1 2", r"POINTS2D of image 1 has 2 values"),
        ("images.txt", " 1 a.png", " a.png", r"expected IMAGE_ID .* got 9 fields"),
        ("points3D.txt", "\n1 ", "\n1 x", r"coordinate 'x.*' is not a number"),
    ],
)
def test_malformed_text_file_names_the_file_and_line(tiny_colmap, tmp_path, name, old, new, message):
    scene, model_dir = tiny_colmap
    write_colmap(scene, model_dir, binary=False)
    path = model_dir / name
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(BirdnerfError, match=message) as err:
        read_colmap(model_dir, tmp_path / "images")
    assert err.value.path.name == name and name in str(err.value)


@pytest.mark.parametrize(
    ("model_id", "message"),
    [(5, "unsupported camera model OPENCV_FISHEYE"), (99, "unknown camera model id 99")],
)
def test_unknown_binary_camera_model_is_named(tiny_colmap, tmp_path, model_id, message):
    _, model_dir = tiny_colmap
    data = bytearray((model_dir / "cameras.bin").read_bytes())
    data[12:16] = model_id.to_bytes(4, "little")  # after the u64 count and the u32 camera id
    (model_dir / "cameras.bin").write_bytes(bytes(data))
    with pytest.raises(BirdnerfError, match=message) as err:
        read_colmap(model_dir, tmp_path / "images")
    assert err.value.path.name == "cameras.bin"


@pytest.mark.parametrize("binary", [True, False])
def test_full_opencv_with_rational_distortion_is_refused(tmp_path, binary):
    params = (500.0, 500.0, 320.0, 240.0, 0.1, 0.01, 0.0, 0.0, 0.001, 0.0, 0.02, 0.0)
    model = ColmapModel(
        cameras={1: ColmapCamera(1, "FULL_OPENCV", 640, 480, params)},
        images=[ColmapImage(1, (1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0), 1, "a.png")],
    )
    write_colmap_model(model, tmp_path, binary=binary)
    with pytest.raises(BirdnerfError, match="rational distortion is unsupported") as err:
        read_colmap_model(tmp_path)
    assert err.value.path.name == ("cameras.bin" if binary else "cameras.txt")


def test_camera_with_r8_term_cannot_be_written(tmp_path, write_test_photos):
    scene = make_scene(tmp_path, write_test_photos, cameras=[Camera(8, 6, 7.0, 7.0, 4.0, 3.0, k4=0.1)] * 4)
    with pytest.raises(BirdnerfError, match="k4"):
        write_colmap(scene, tmp_path / "m")


@pytest.mark.parametrize("binary", [True, False])
def test_missing_image_names_model_file_and_image(tiny_colmap, tmp_path, binary):
    scene, model_dir = tiny_colmap
    write_colmap(scene, model_dir, binary=binary)
    (tmp_path / "images" / "sub" / "d.png").unlink()
    with pytest.raises(BirdnerfError, match="image 'sub/d.png' not found") as err:
        read_colmap(model_dir, tmp_path / "images")
    assert err.value.path.name == ("images.bin" if binary else "images.txt")


def test_image_name_escaping_the_image_folder_is_refused(tiny_colmap, tmp_path, write_test_photos):
    scene, model_dir = tiny_colmap
    write_colmap(scene, model_dir, binary=False)
    write_test_photos(tmp_path, ["outside.png"])
    path = model_dir / "images.txt"
    path.write_text(path.read_text().replace(" a.png", " ../outside.png"))
    with pytest.raises(BirdnerfError, match="outside the dataset directory") as err:
        read_colmap(model_dir, tmp_path / "images")
    assert err.value.path.name == "images.txt"


def test_image_with_unknown_camera_is_refused(tmp_path, write_test_photos):
    write_test_photos(tmp_path / "images", ["a.png"])
    model = ColmapModel(
        cameras={1: ColmapCamera(1, "PINHOLE", 8, 6, (7.0, 7.0, 4.0, 3.0))},
        images=[ColmapImage(1, (1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0), 2, "a.png")],
    )
    write_colmap_model(model, tmp_path / "m")
    with pytest.raises(BirdnerfError, match="uses camera 2, which cameras.bin lacks"):
        read_colmap(tmp_path / "m", tmp_path / "images")


# --- dataset detection -----------------------------------------------------------------------


def test_load_dataset_finds_colmap_layouts(tiny_colmap, tmp_path):
    scene, model_dir = tiny_colmap
    for path in (tmp_path, tmp_path / "sparse", model_dir, model_dir / "images.bin"):
        loaded = load_dataset(path)
        assert loaded.source == "colmap"
        assert_same_scene(scene, loaded)
    shutil.move(model_dir, tmp_path / "flat")
    shutil.rmtree(tmp_path / "sparse")
    shutil.move(tmp_path / "flat", tmp_path / "sparse")
    assert load_dataset(tmp_path).names == NAMES


def test_load_dataset_unknown_layout_lists_what_it_looked_for(tmp_path):
    with pytest.raises(BirdnerfError, match=r"no dataset found .*transforms\.json.*sparse/0"):
        load_dataset(tmp_path)
    with pytest.raises(BirdnerfError, match="no such file"):
        load_dataset(tmp_path / "absent")


def test_load_dataset_model_without_images_folder(tmp_path, tiny_colmap):
    _, model_dir = tiny_colmap
    shutil.rmtree(tmp_path / "images")
    with pytest.raises(BirdnerfError, match="no images/ folder"):
        load_dataset(model_dir)


# --- real data -------------------------------------------------------------------------------


def observations_of(images_txt: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(K, 2) pixel positions and (K,) point ids that ``images.txt`` records for one image."""
    lines = images_txt.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if not line.startswith("#") and line.split()[-1] == name)
    values = np.array(lines[index + 1].split(), dtype=np.float64).reshape(-1, 3)
    values = values[values[:, 2] >= 0]
    return values[:, :2], values[:, 2].astype(np.int64)


def test_real_brighton_beach_model(brighton_beach_dir):
    model_dir, images_dir = brighton_beach_dir / "sparse" / "0", brighton_beach_dir / "images"
    text = read_colmap(model_dir, images_dir, model_format="text")
    binary = read_colmap(model_dir, images_dir, model_format="binary")
    assert len(text) == len(binary) == 18
    assert {c.model for c in read_colmap_model(model_dir).cameras.values()} == {"SIMPLE_RADIAL"}
    assert len(set(binary.cameras)) == 1
    cam = binary.cameras[0]
    assert (cam.width, cam.height) == (800, 450)
    assert cam.fx == cam.fy == pytest.approx(563.2, abs=0.05)
    assert 2000 < len(binary.points) < 4000
    assert_same_scene(text, binary)
    assert len(binary.indices("test")) >= 1

    # Reprojecting the model's points through the converted pose and distortion lands on the
    # recorded observations (the model's mean reprojection error is about 0.25 px).
    name = binary.names[0]
    uv_seen, point_ids = observations_of(model_dir / "images.txt", name)
    point_lines = [line.split() for line in (model_dir / "points3D.txt").read_text().splitlines()]
    xyz_by_id = {int(f[0]): [float(v) for v in f[1:4]] for f in point_lines if f and not f[0].startswith("#")}
    xyz = torch.tensor([xyz_by_id[i] for i in point_ids], dtype=torch.float64)
    uv, depth = project(cam, torch.from_numpy(binary.c2w[0]), xyz)
    error = (uv - torch.from_numpy(uv_seen)).norm(dim=-1)
    assert len(point_ids) > 100 and bool((depth > 0).all())
    assert float(error.median()) < 0.5  # ignoring k1 would give about 1.3 px

    loaded = load_dataset(brighton_beach_dir)
    assert loaded.names == binary.names
    np.testing.assert_allclose(loaded.c2w, binary.c2w, atol=1e-12)
