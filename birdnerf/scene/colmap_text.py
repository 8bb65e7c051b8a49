"""COLMAP's text model format: ``cameras.txt``, ``images.txt``, ``points3D.txt``.

Lines starting with ``#`` are comments. ``images.txt`` has two lines per image, the second
(POINTS2D, possibly empty) is read but not kept. Floats are written with ``repr`` so that a
written model reads back bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from birdnerf import atomic
from birdnerf.errors import BirdnerfError
from birdnerf.scene.colmap_model import (
    SUPPORTED_MODELS,
    ColmapCamera,
    ColmapImage,
    ColmapModel,
    check_camera,
    unsupported_model_message,
)


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise BirdnerfError("not a UTF-8 text file (is it a binary model?)", path) from None


def _data_lines(lines: list[str]) -> Iterator[tuple[int, str]]:
    """(line number, stripped text) of the non-empty, non-comment ``lines`` of a file."""
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield number, line


def _int(value: str, what: str, where: str, path: Path) -> int:
    try:
        return int(value)
    except ValueError:
        raise BirdnerfError(f"{where}: {what} {value!r} is not an integer", path) from None


def _float(value: str, what: str, where: str, path: Path) -> float:
    try:
        return float(value)
    except ValueError:
        raise BirdnerfError(f"{where}: {what} {value!r} is not a number", path) from None


def read_cameras_text(path: Path) -> dict[int, ColmapCamera]:
    """Cameras by id from ``cameras.txt``: ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS...``."""
    lines = _lines(path)
    cameras: dict[int, ColmapCamera] = {}
    for number, line in _data_lines(lines):
        where = f"line {number}"
        fields = line.split()
        if len(fields) < 4:
            raise BirdnerfError(
                f"{where}: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS..., got {len(fields)} fields", path
            )
        camera_id = _int(fields[0], "camera id", where, path)
        model = fields[1]
        if model not in SUPPORTED_MODELS:
            raise BirdnerfError(f"{where}: {unsupported_model_message(camera_id, model)}", path)
        expected = 4 + SUPPORTED_MODELS[model]
        if len(fields) != expected:
            raise BirdnerfError(f"{where}: a {model} camera has {expected} fields, got {len(fields)}", path)
        if camera_id in cameras:
            raise BirdnerfError(f"{where}: camera id {camera_id} appears twice", path)
        camera = ColmapCamera(
            camera_id=camera_id,
            model=model,
            width=_int(fields[2], "width", where, path),
            height=_int(fields[3], "height", where, path),
            params=tuple(_float(v, "parameter", where, path) for v in fields[4:]),
        )
        cameras[camera_id] = check_camera(camera, where, path)
    _check_count(lines, "cameras", len(cameras), path)
    return cameras


def read_images_text(path: Path) -> list[ColmapImage]:
    """Images from ``images.txt``: ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME``, then POINTS2D.

    The name is the rest of the line, so names with spaces are kept whole.
    """
    lines = _lines(path)
    images: list[ColmapImage] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        where = f"line {i}"
        fields = line.split(maxsplit=9)
        if len(fields) != 10:
            raise BirdnerfError(
                f"{where}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME, got {len(fields)} fields",
                path,
            )
        image_id = _int(fields[0], "image id", where, path)
        values = [_float(v, "pose value", where, path) for v in fields[1:8]]
        # The POINTS2D line follows every image line; it may be empty, or absent at the end.
        points2d = lines[i].split() if i < len(lines) else []
        if len(points2d) % 3 != 0:
            raise BirdnerfError(
                f"line {i + 1}: POINTS2D of image {image_id} has {len(points2d)} values, "
                "not triples of X Y POINT3D_ID",
                path,
            )
        i += 1
        images.append(
            ColmapImage(
                image_id=image_id,
                qvec=(values[0], values[1], values[2], values[3]),
                tvec=(values[4], values[5], values[6]),
                camera_id=_int(fields[8], "camera id", where, path),
                name=fields[9].strip(),
            )
        )
    _check_count(lines, "images", len(images), path)
    return images


def _check_count(lines: list[str], what: str, found: int, path: Path) -> None:
    """Refuse a file that holds fewer or more records than its header comment announces
    (``# Number of images: 18, ...``): a file cut at a record boundary parses otherwise."""
    announced = _announced(lines, f"Number of {what}")
    if announced is not None and announced != found:
        raise BirdnerfError(f"its header announces {announced} {what}, the file holds {found}", path)


def _announced(lines: list[str], label: str) -> int | None:
    for line in lines:
        if not line.startswith("#"):
            return None
        if label in line:
            try:
                return int(line.split(":", 1)[1].split(",")[0])
            except (IndexError, ValueError):
                return None
    return None


def read_points_text(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Points (M, 3) float64 and colours (M, 3) uint8 from ``points3D.txt``, sorted by point id.

    Line layout: ``POINT3D_ID X Y Z R G B ERROR TRACK[] as (IMAGE_ID, POINT2D_IDX)``.
    """
    lines = _lines(path)
    ids: list[int] = []
    xyz: list[list[float]] = []
    rgb: list[list[int]] = []
    for number, line in _data_lines(lines):
        where = f"line {number}"
        fields = line.split()
        if len(fields) < 8 or (len(fields) - 8) % 2 != 0:
            raise BirdnerfError(
                f"{where}: expected POINT3D_ID X Y Z R G B ERROR followed by (IMAGE_ID, POINT2D_IDX) "
                f"pairs, got {len(fields)} fields",
                path,
            )
        ids.append(_int(fields[0], "point id", where, path))
        xyz.append([_float(v, "coordinate", where, path) for v in fields[1:4]])
        colour = [_int(v, "colour", where, path) for v in fields[4:7]]
        if not all(0 <= c <= 255 for c in colour):
            raise BirdnerfError(f"{where}: colour {colour} is outside 0..255", path)
        rgb.append(colour)
    _check_count(lines, "points", len(ids), path)
    order = np.argsort(np.asarray(ids, dtype=np.int64), kind="stable")
    points = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)[order]
    colors = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)[order]
    return points, colors


def write_text_model(model: ColmapModel, model_dir: Path) -> None:
    """Write ``cameras.txt``, ``images.txt`` and ``points3D.txt`` into ``model_dir``, atomically.

    Images get an empty POINTS2D line and points an empty track (ERROR is written as 0).
    """
    lines = [
        "# Camera list with one line of data per camera:",
        "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
        f"# Number of cameras: {len(model.cameras)}",
    ]
    for cam in model.cameras.values():
        params = " ".join(repr(float(p)) for p in cam.params)
        lines.append(f"{cam.camera_id} {cam.model} {cam.width} {cam.height} {params}")
    atomic.write_text(model_dir / "cameras.txt", "\n".join(lines) + "\n")

    lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
        f"# Number of images: {len(model.images)}, mean observations per image: 0",
    ]
    for im in model.images:
        pose = " ".join(repr(float(v)) for v in (*im.qvec, *im.tvec))
        lines.extend([f"{im.image_id} {pose} {im.camera_id} {im.name}", ""])
    atomic.write_text(model_dir / "images.txt", "\n".join(lines) + "\n")

    lines = [
        "# 3D point list with one line of data per point:",
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
        f"# Number of points: {len(model.points)}, mean track length: 0",
    ]
    for point_id, (xyz, rgb) in enumerate(zip(model.points, model.point_colors, strict=True), start=1):
        coords = " ".join(repr(float(v)) for v in xyz)
        lines.append(f"{point_id} {coords} {int(rgb[0])} {int(rgb[1])} {int(rgb[2])} 0")
    atomic.write_text(model_dir / "points3D.txt", "\n".join(lines) + "\n")
