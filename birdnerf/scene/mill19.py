"""Read Mega-NeRF / Mill19 datasets.

Layout::

    coordinates.pt                  {"origin_drb": (3,) tensor, "pose_scale_factor": float}
    train/metadata/<name>.pt        {"W", "H", "intrinsics": (fx, fy, cx, cy), "c2w": (3, 4), ...}
    train/rgbs/<name>.jpg           the photo (any image extension)
    val/metadata/<name>.pt, val/rgbs/<name>.jpg

Every ``.pt`` file is read with ``torch.load(..., weights_only=True)``: tensors, numbers and
dicts only, never arbitrary pickled objects.

Conventions (from Mega-NeRF's ``colmap_to_mega_nerf.py`` and ``ray_utils.py``): the world axes
are (down, right, back), normalised as ``(x - origin_drb) / pose_scale_factor``; the columns of
``c2w[:, :3]`` are the camera's (right, up, back) axes in that world -- OpenGL camera axes --
and ``c2w[:, 3]`` its centre. Intrinsics are in pixels with the origin at the top-left corner
of the image (COLMAP's convention, Mega-NeRF's ``center_pixels``). Stored photos are already
undistorted, so a ``distortion`` entry is ignored.

birdnerf's frame for the result: metric again (times ``pose_scale_factor``, plus
``origin_drb``), x = right, y = forward (-back), z = up (-down), cameras in OpenCV axes.
``Scene.world_from_input`` maps Mega-NeRF's normalised frame into it. "val" photos become the
"test" split.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from birdnerf.errors import BirdnerfError
from birdnerf.scene.camera import Camera
from birdnerf.scene.scene import Scene

COORDINATES_FILE = "coordinates.pt"
SPLITS = {"train": "train", "val": "test"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
# Rows: birdnerf's x (right), y (forward = -back) and z (up = -down) in (down, right, back) axes.
WORLD_FROM_DRB = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])
# OpenCV camera axes (right, down, forward) from OpenGL ones (right, up, back).
GL_TO_CV = np.diag([1.0, -1.0, -1.0])


def is_mill19(path: str | Path) -> bool:
    """True when ``path`` looks like a Mega-NeRF / Mill19 dataset folder."""
    path = Path(path)
    return (path / COORDINATES_FILE).is_file() and (path / "train" / "metadata").is_dir()


def load_pt(path: Path) -> object:
    """Load a ``.pt`` file with ``weights_only=True``; a clear error for anything else."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BirdnerfError("file not found", path) from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BirdnerfError(f"not a readable tensor file ({first_line})", path) from None


def _floats(value: object, count: int, what: str, source: Path) -> np.ndarray:
    try:
        array = torch.as_tensor(value, dtype=torch.float64).numpy().reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise BirdnerfError(f"{what} is not numeric", source) from None
    if array.size != count or not np.all(np.isfinite(array)):
        raise BirdnerfError(f"{what} must be {count} finite numbers, got {array.size}", source)
    return array


def read_coordinates(path: str | Path) -> tuple[np.ndarray, float]:
    """``(origin_drb (3,), pose_scale_factor)`` of a Mega-NeRF ``coordinates.pt``."""
    path = Path(path)
    data = load_pt(path)
    if not isinstance(data, dict) or "origin_drb" not in data or "pose_scale_factor" not in data:
        raise BirdnerfError("expected a dict with 'origin_drb' and 'pose_scale_factor'", path)
    origin = _floats(data["origin_drb"], 3, "origin_drb", path)
    scale = float(_floats(data["pose_scale_factor"], 1, "pose_scale_factor", path)[0])
    if scale <= 0:
        raise BirdnerfError(f"pose_scale_factor must be positive, got {scale}", path)
    return origin, scale


def _find_image(rgbs: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        candidate = rgbs / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as err:
        raise BirdnerfError(f"unreadable image ({err})", path) from None


def read_frame(metadata_path: Path, image_path: Path) -> tuple[Camera, np.ndarray]:
    """Camera (for the image as stored) and c2w (4x4, OpenCV axes, Mega-NeRF's frame) of one photo."""
    meta = load_pt(metadata_path)
    if not isinstance(meta, dict) or not {"W", "H", "intrinsics", "c2w"} <= set(meta):
        raise BirdnerfError("expected a dict with 'W', 'H', 'intrinsics' and 'c2w'", metadata_path)
    width = int(_floats(meta["W"], 1, "W", metadata_path)[0])
    height = int(_floats(meta["H"], 1, "H", metadata_path)[0])
    fx, fy, cx, cy = _floats(meta["intrinsics"], 4, "intrinsics", metadata_path)
    c2w_gl = _floats(meta["c2w"], 12, "c2w", metadata_path).reshape(3, 4)
    camera = Camera(width=width, height=height, fx=fx, fy=fy, cx=cx, cy=cy)
    actual_w, actual_h = _image_size(image_path)
    if (actual_w, actual_h) != (width, height):
        factor = actual_w / width
        if not math.isclose(actual_h, height * factor, abs_tol=1.0):
            raise BirdnerfError(
                f"image is {actual_w}x{actual_h} but its metadata says {width}x{height} "
                "(not a uniform resize)",
                image_path,
            )
        camera = camera.scaled(factor)
    c2w = np.eye(4)
    c2w[:3, :3] = c2w_gl[:, :3] @ GL_TO_CV
    c2w[:3, 3] = c2w_gl[:, 3]
    return camera, c2w


def mill19_world_from_input(origin_drb: np.ndarray, pose_scale_factor: float) -> np.ndarray:
    """(4, 4) similarity from Mega-NeRF's normalised (down, right, back) frame to birdnerf's z-up one."""
    m = np.eye(4)
    m[:3, :3] = WORLD_FROM_DRB * pose_scale_factor
    m[:3, 3] = WORLD_FROM_DRB @ origin_drb
    return m


def read_mill19(path: str | Path, skipped: list[tuple[str, str]] | None = None) -> Scene:
    """Read a Mega-NeRF / Mill19 folder as a :class:`Scene` (see the module docstring for frames).

    Args:
        path: the dataset folder (holding ``coordinates.pt``).
        skipped: if given, a photo whose metadata or image is missing or unreadable is left out
            and ``(name, reason)`` appended here (name: ``train/rgbs/<stem>`` ...); otherwise the
            first such problem raises.

    Returns:
        A scene rooted at ``path`` with x right, y forward, z up (Mega-NeRF's "down" axis
        reversed), in the dataset's original units; ``world_from_input`` maps Mega-NeRF's
        normalised coordinates into it. ``is_world_frame`` stays False: the ground height is
        unknown (the dataset has no sparse points).

    Raises:
        BirdnerfError: naming the file, for a missing ``coordinates.pt``, a metadata file that is
            not a tensor dict with the expected entries, or a photo that is missing or unreadable.
    """
    root = Path(path).resolve()
    if not (root / COORDINATES_FILE).is_file():
        raise BirdnerfError(f"not a Mega-NeRF / Mill19 folder (no {COORDINATES_FILE})", root)
    origin, scale = read_coordinates(root / COORDINATES_FILE)
    image_paths, cameras, poses, split = [], [], [], []
    for folder, split_name in SPLITS.items():
        metadata_dir = root / folder / "metadata"
        if not metadata_dir.is_dir():
            continue
        for metadata_path in sorted(metadata_dir.glob("*.pt")):
            try:
                image_path = _find_image(root / folder / "rgbs", metadata_path.stem)
                if image_path is None:
                    raise BirdnerfError(
                        f"no photo {folder}/rgbs/{metadata_path.stem}.* for it", metadata_path
                    )
                camera, c2w = read_frame(metadata_path, image_path)
            except BirdnerfError as err:
                if skipped is None:
                    raise
                skipped.append((f"{folder}/rgbs/{metadata_path.stem}", str(err)))
                continue
            image_paths.append(image_path)
            cameras.append(camera)
            poses.append(c2w)
            split.append(split_name)
    if not image_paths:
        reason = "no usable photos" if skipped else "no metadata files in train/metadata or val/metadata"
        raise BirdnerfError(reason, root)
    scene = Scene(
        root=root,
        image_paths=image_paths,
        cameras=cameras,
        c2w=np.stack(poses),
        split=split,
        source="mill19",
    )
    scene = scene.transformed(mill19_world_from_input(origin, scale))
    scene.validate()
    return scene
