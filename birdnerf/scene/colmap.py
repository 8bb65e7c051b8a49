"""Read and write COLMAP sparse models (text or binary) as birdnerf scenes.

A model folder (usually ``<dataset>/sparse/0``) holds ``cameras``, ``images`` and ``points3D``
files, all ``.bin`` or all ``.txt``; COLMAP 3.12+ adds ``rigs`` and ``frames`` files, which are
not needed here (every image still carries its own pose) and are ignored. Image names in the
model are paths relative to the image folder (usually ``<dataset>/images``).

Scenes read from COLMAP stay in COLMAP's frame (``world_from_input`` is the identity) with
camera-to-world poses in OpenCV axes; see :mod:`birdnerf.scene.colmap_model` for the pose and
camera-model conversions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from birdnerf.errors import BirdnerfError
from birdnerf.scene.camera import Camera
from birdnerf.scene.colmap_binary import (
    read_cameras_binary,
    read_images_binary,
    read_points_binary,
    write_binary_model,
)
from birdnerf.scene.colmap_model import (
    ColmapImage,
    ColmapModel,
    c2w_from_colmap,
    camera_from_colmap,
    camera_to_colmap,
    colmap_pose,
)
from birdnerf.scene.colmap_text import read_cameras_text, read_images_text, read_points_text, write_text_model
from birdnerf.scene.scene import Scene, holdout_split, resolve_inside

ModelFormat = Literal["auto", "binary", "text"]
MODEL_PARTS = ("cameras", "images", "points3D")
SUFFIXES = {"binary": ".bin", "text": ".txt"}
# (cameras, images, points3D) readers of each format.
READERS = {
    "binary": (read_cameras_binary, read_images_binary, read_points_binary),
    "text": (read_cameras_text, read_images_text, read_points_text),
}
# Files COLMAP 3.12+ writes beside a model; they describe the old model once it is rewritten.
RIG_PARTS = ("rigs", "frames")
UNCOLOURED_POINT = 128


def detect_model_format(model_dir: str | Path) -> Literal["binary", "text"] | None:
    """Which model ``model_dir`` holds: "binary", "text", or None when it holds neither.

    A format is usable when its ``cameras`` and ``images`` files exist. A format with all three
    files wins over one without ``points3D``; between two equally complete formats, binary wins
    (it is what COLMAP writes by default, and the text files are often an exported copy).
    """
    model_dir = Path(model_dir)
    usable = []
    for fmt, suffix in SUFFIXES.items():
        present = [(model_dir / f"{part}{suffix}").is_file() for part in MODEL_PARTS]
        if present[0] and present[1]:
            usable.append((not present[2], fmt))
    return min(usable)[1] if usable else None


def read_colmap_model(model_dir: str | Path, model_format: ModelFormat = "auto") -> ColmapModel:
    """Read the sparse model in ``model_dir`` as stored: cameras, image poses and points.

    Args:
        model_dir: folder with ``cameras``, ``images`` and (optionally) ``points3D`` files.
        model_format: "binary" or "text" to force one format, "auto" to choose as
            :func:`detect_model_format` does.

    Raises:
        BirdnerfError: naming the file, if the model is missing, truncated or malformed, or uses
            a camera model birdnerf does not support.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise BirdnerfError("COLMAP model folder not found", model_dir)
    if model_format not in ("auto", *SUFFIXES):
        raise ValueError(f"model_format must be 'auto', 'binary' or 'text', not {model_format!r}")
    fmt = detect_model_format(model_dir) if model_format == "auto" else model_format
    if fmt is None:
        wanted = "cameras.bin + images.bin or cameras.txt + images.txt"
        raise BirdnerfError(f"no COLMAP model here (looked for {wanted})", model_dir)
    suffix = SUFFIXES[fmt]
    cameras, images, points = (model_dir / f"{part}{suffix}" for part in MODEL_PARTS)
    missing = [p.name for p in (cameras, images) if not p.is_file()]
    if missing:
        raise BirdnerfError(f"no {fmt} COLMAP model here (missing {', '.join(missing)})", model_dir)
    readers = READERS[fmt]
    model = ColmapModel(
        cameras=readers[0](cameras), images=readers[1](images), sources={"cameras": cameras, "images": images}
    )
    if points.is_file():
        model.points, model.point_colors = readers[2](points)
        model.sources["points3D"] = points
    return model


def read_colmap(model_dir: str | Path, images_dir: str | Path, model_format: ModelFormat = "auto") -> Scene:
    """Read a COLMAP sparse model and its photos as a :class:`Scene`.

    Args:
        model_dir: the model folder, e.g. ``<dataset>/sparse/0``.
        images_dir: the folder the model's image names are relative to, e.g. ``<dataset>/images``;
            it becomes the scene's ``root``, so the scene's names are COLMAP's image names.
        model_format: "auto", "binary" or "text" (see :func:`read_colmap_model`).

    Returns:
        A scene in COLMAP's frame (``world_from_input`` identity, ``is_world_frame`` False), photos
        sorted by name, c2w in OpenCV axes, the sparse points with their colours, and every 8th
        photo by name held out as "test" (:func:`birdnerf.scene.scene.holdout_split`).

    Raises:
        BirdnerfError: naming the model file, for a malformed model, an image missing on disk, or
            an image name that leads outside ``images_dir``.
    """
    model = read_colmap_model(model_dir, model_format)
    images_file, cameras_file = model.sources["images"], model.sources["cameras"]
    if not model.images:
        raise BirdnerfError("the model has no registered images", images_file)
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise BirdnerfError("image folder not found", images_dir)
    root = images_dir.resolve()

    converted: dict[int, Camera] = {}
    image_paths, cameras, poses = [], [], []
    seen: set[str] = set()
    for image in sorted(model.images, key=lambda im: im.name):
        if image.name in seen:
            raise BirdnerfError(f"image {image.name!r} appears twice", images_file)
        seen.add(image.name)
        if image.camera_id not in model.cameras:
            raise BirdnerfError(
                f"image {image.name!r} uses camera {image.camera_id}, which {cameras_file.name} lacks",
                images_file,
            )
        if image.camera_id not in converted:
            converted[image.camera_id] = camera_from_colmap(model.cameras[image.camera_id])
        path = resolve_inside(root, image.name, images_file)
        if not path.is_file():
            raise BirdnerfError(f"image {image.name!r} not found in {root}", images_file)
        image_paths.append(path)
        cameras.append(converted[image.camera_id])
        poses.append(c2w_from_colmap(image, images_file))

    names = [p.relative_to(root).as_posix() for p in image_paths]
    has_points = "points3D" in model.sources
    points_file = model.sources.get("points3D")
    if has_points and not np.all(np.isfinite(model.points)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(model.points), axis=1))[0])
        raise BirdnerfError(f"point {bad + 1} (by id order) has NaN or infinite coordinates", points_file)
    scene = Scene(
        root=root,
        image_paths=image_paths,
        cameras=cameras,
        c2w=np.stack(poses),
        split=holdout_split(names),
        points=model.points if has_points else None,
        point_colors=model.point_colors if has_points else None,
        source="colmap",
    )
    scene.validate()
    return scene


def colmap_model_from_scene(scene: Scene, images_dir: str | Path | None = None) -> ColmapModel:
    """The COLMAP model of ``scene``, in the scene's current frame.

    Cameras equal in value share one COLMAP camera (ids from 1 in order of first use); image ids
    follow the scene's order from 1; image names are paths relative to ``images_dir`` (default:
    the scene's root). Points without colours get grey (128, 128, 128).

    Raises:
        BirdnerfError: if a photo lies outside ``images_dir`` or a camera has no COLMAP model.
    """
    root = Path(images_dir if images_dir is not None else scene.root).resolve()
    camera_ids: dict[Camera, int] = {}
    model = ColmapModel(cameras={}, images=[])
    for i, (path, camera) in enumerate(zip(scene.image_paths, scene.cameras, strict=True)):
        if camera not in camera_ids:
            camera_ids[camera] = len(camera_ids) + 1
            model.cameras[camera_ids[camera]] = camera_to_colmap(camera, camera_ids[camera], path)
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(root):
            raise BirdnerfError(f"photo is not inside the image folder {root}", path)
        qvec, tvec = colmap_pose(scene.c2w[i])
        name = resolved.relative_to(root).as_posix()
        model.images.append(ColmapImage(i + 1, qvec, tvec, camera_ids[camera], name))
    if scene.points is not None:
        model.points = np.asarray(scene.points, dtype=np.float64).reshape(-1, 3)
        if scene.point_colors is not None:
            model.point_colors = np.asarray(scene.point_colors, dtype=np.uint8).reshape(-1, 3)
        else:
            model.point_colors = np.full((len(model.points), 3), UNCOLOURED_POINT, dtype=np.uint8)
    return model


def write_colmap_model(model: ColmapModel, model_dir: str | Path, binary: bool = True) -> Path:
    """Write ``model`` into ``model_dir`` (created if needed) as ``.bin`` or ``.txt`` files.

    Each file is written atomically. Model files of the other format and COLMAP's ``rigs`` /
    ``frames`` files left from an earlier model are removed, so the folder holds exactly this
    model and readers (birdnerf's and COLMAP's) cannot pick up stale data.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    if binary:
        write_binary_model(model, model_dir)
    else:
        write_text_model(model, model_dir)
    other = SUFFIXES["text" if binary else "binary"]
    stale = [model_dir / f"{part}{other}" for part in MODEL_PARTS]
    stale += [model_dir / f"{part}{suffix}" for part in RIG_PARTS for suffix in SUFFIXES.values()]
    for path in stale:
        path.unlink(missing_ok=True)
    return model_dir


def write_colmap(
    scene: Scene, model_dir: str | Path, binary: bool = True, images_dir: str | Path | None = None
) -> Path:
    """Write ``scene`` as a COLMAP sparse model in ``model_dir``; returns ``model_dir``.

    Cameras are deduplicated, every image gets an empty 2D-point list and every point of
    ``scene.points`` an empty track. Image names are relative to ``images_dir`` (default: the
    scene's root), so ``read_colmap(model_dir, images_dir)`` reads the scene back (a scene
    without points gets an empty ``points3D`` file and reads back with zero points).
    See :func:`colmap_model_from_scene` and :func:`write_colmap_model`.
    """
    return write_colmap_model(colmap_model_from_scene(scene, images_dir), model_dir, binary)
