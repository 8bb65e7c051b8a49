"""COLMAP's binary model format: ``cameras.bin``, ``images.bin``, ``points3D.bin``.

All values are little-endian. Layouts (``[n]`` repeats):

- cameras.bin: u64 count; per camera: u32 id, i32 model id, u64 width, u64 height, f64 params[n].
- images.bin: u64 count; per image: u32 id, f64 qvec[4] (w, x, y, z), f64 tvec[3], u32 camera id,
  NUL-terminated UTF-8 name, u64 n, then n x (f64 x, f64 y, i64 point3D id).
- points3D.bin: u64 count; per point: u64 id, f64 xyz[3], u8 rgb[3], f64 error, u64 n,
  then n x (u32 image id, u32 point2D index).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from birdnerf import atomic
from birdnerf.errors import BirdnerfError
from birdnerf.scene.colmap_model import (
    MODEL_IDS,
    MODEL_NAMES,
    SUPPORTED_MODELS,
    ColmapCamera,
    ColmapImage,
    ColmapModel,
    check_camera,
    unsupported_model_message,
)

_COUNT = struct.Struct("<Q")
_CAMERA = struct.Struct("<IiQQ")
_IMAGE = struct.Struct("<I4d3dI")
_POINT2D_SIZE = 24
_POINT = struct.Struct("<Q3d3BdQ")
_TRACK_ELEMENT_SIZE = 8


class _Reader:
    """A cursor over a file's bytes that reports truncation as a :class:`BirdnerfError`."""

    def __init__(self, path: Path):
        self.path = path
        self.data = path.read_bytes()
        self.offset = 0

    def unpack(self, layout: struct.Struct, where: str) -> tuple:
        if self.offset + layout.size > len(self.data):
            raise BirdnerfError(f"truncated at {where} (byte {self.offset} of {len(self.data)})", self.path)
        values = layout.unpack_from(self.data, self.offset)
        self.offset += layout.size
        return values

    def skip(self, size: int, where: str) -> None:
        if self.offset + size > len(self.data):
            raise BirdnerfError(f"truncated at {where} (byte {self.offset} of {len(self.data)})", self.path)
        self.offset += size

    def name(self, where: str) -> str:
        end = self.data.find(b"\x00", self.offset)
        if end < 0:
            raise BirdnerfError(f"truncated at {where} (name has no terminating NUL byte)", self.path)
        raw = self.data[self.offset : end]
        self.offset = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BirdnerfError(f"{where}: name is not valid UTF-8", self.path) from None

    def count(self, what: str) -> int:
        return self.unpack(_COUNT, f"the number of {what}")[0]

    def finish(self, what: str) -> None:
        extra = len(self.data) - self.offset
        if extra:
            raise BirdnerfError(f"{extra} unexpected bytes after the last {what} (wrong layout?)", self.path)


def read_cameras_binary(path: Path) -> dict[int, ColmapCamera]:
    """Cameras by id from ``cameras.bin``."""
    reader = _Reader(path)
    cameras: dict[int, ColmapCamera] = {}
    for index in range(reader.count("cameras")):
        where = f"camera {index + 1}"
        camera_id, model_id, width, height = reader.unpack(_CAMERA, where)
        model = MODEL_NAMES.get(model_id)
        if model is None:
            raise BirdnerfError(
                f"{where}: camera {camera_id} uses unknown camera model id {model_id} "
                f"(supported: {', '.join(SUPPORTED_MODELS)})",
                path,
            )
        if model not in SUPPORTED_MODELS:
            raise BirdnerfError(f"{where}: {unsupported_model_message(camera_id, model)}", path)
        if camera_id in cameras:
            raise BirdnerfError(f"{where}: camera id {camera_id} appears twice", path)
        params = reader.unpack(struct.Struct(f"<{SUPPORTED_MODELS[model]}d"), where)
        camera = ColmapCamera(camera_id, model, width, height, tuple(params))
        cameras[camera_id] = check_camera(camera, where, path)
    reader.finish("camera")
    return cameras


def read_images_binary(path: Path) -> list[ColmapImage]:
    """Registered images from ``images.bin`` (2D observations are skipped)."""
    reader = _Reader(path)
    images: list[ColmapImage] = []
    for index in range(reader.count("images")):
        where = f"image {index + 1}"
        image_id, qw, qx, qy, qz, tx, ty, tz, camera_id = reader.unpack(_IMAGE, where)
        name = reader.name(where)
        (num_points2d,) = reader.unpack(_COUNT, where)
        reader.skip(num_points2d * _POINT2D_SIZE, f"{where} ({name!r}, {num_points2d} 2D points)")
        images.append(ColmapImage(image_id, (qw, qx, qy, qz), (tx, ty, tz), camera_id, name))
    reader.finish("image")
    return images


def read_points_binary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Points (M, 3) float64 and colours (M, 3) uint8 from ``points3D.bin``, sorted by point id."""
    reader = _Reader(path)
    count = reader.count("points")
    # Check before allocating: a corrupt count must not become a huge array.
    if count * _POINT.size > len(reader.data) - reader.offset:
        raise BirdnerfError(f"truncated: too short for the {count} points it announces", path)
    ids = np.empty(count, dtype=np.uint64)
    xyz = np.empty((count, 3), dtype=np.float64)
    rgb = np.empty((count, 3), dtype=np.uint8)
    for index in range(count):
        where = f"point {index + 1}"
        point_id, x, y, z, r, g, b, _error, track_length = reader.unpack(_POINT, where)
        reader.skip(track_length * _TRACK_ELEMENT_SIZE, f"{where} (track of {track_length})")
        ids[index] = point_id
        xyz[index] = (x, y, z)
        rgb[index] = (r, g, b)
    reader.finish("point")
    order = np.argsort(ids, kind="stable")
    return xyz[order], rgb[order]


def write_binary_model(model: ColmapModel, model_dir: Path) -> None:
    """Write ``cameras.bin``, ``images.bin`` and ``points3D.bin`` into ``model_dir``, atomically.

    Images get no 2D points and points an empty track (error 0).
    """
    parts = [_COUNT.pack(len(model.cameras))]
    for cam in model.cameras.values():
        parts.append(_CAMERA.pack(cam.camera_id, MODEL_IDS[cam.model], cam.width, cam.height))
        parts.append(struct.pack(f"<{len(cam.params)}d", *cam.params))
    atomic.write_bytes(model_dir / "cameras.bin", b"".join(parts))

    parts = [_COUNT.pack(len(model.images))]
    for im in model.images:
        parts.append(_IMAGE.pack(im.image_id, *im.qvec, *im.tvec, im.camera_id))
        parts.append(im.name.encode("utf-8") + b"\x00")
        parts.append(_COUNT.pack(0))
    atomic.write_bytes(model_dir / "images.bin", b"".join(parts))

    parts = [_COUNT.pack(len(model.points))]
    for point_id, (xyz, rgb) in enumerate(zip(model.points, model.point_colors, strict=True), start=1):
        parts.append(_POINT.pack(point_id, *(float(v) for v in xyz), *(int(c) for c in rgb), 0.0, 0))
    atomic.write_bytes(model_dir / "points3D.bin", b"".join(parts))
