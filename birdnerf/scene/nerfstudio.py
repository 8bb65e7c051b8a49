"""Read and write nerfstudio's ``transforms.json``.

nerfstudio stores camera-to-world matrices in the OpenGL convention (x right, y up, z back);
birdnerf uses OpenCV (x right, y down, z forward), so the y and z columns flip at this boundary.
Intrinsics may be global or per frame. Without ``*_filenames`` lists, every 8th photo (sorted by
name) is held out for testing. birdnerf keeps its own extras under the ``"birdnerf"`` key, which
nerfstudio ignores.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from birdnerf import atomic
from birdnerf.errors import BirdnerfError
from birdnerf.scene.camera import DISTORTION_KEYS, Camera
from birdnerf.scene.scene import Scene, holdout_split, resolve_inside

GL_FROM_CV = np.diag([1.0, -1.0, -1.0, 1.0])
SUPPORTED_MODELS = ("PINHOLE", "OPENCV", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")


def _camera(entry: dict, defaults: dict, source: Path, where: str) -> Camera:
    merged = {**defaults, **{k: v for k, v in entry.items() if k in _INTRINSIC_KEYS}}
    model = merged.get("camera_model", "OPENCV")
    if model not in SUPPORTED_MODELS:
        raise BirdnerfError(
            f"{where}: unknown camera_model {model!r} (supported: {', '.join(SUPPORTED_MODELS)})", source
        )
    try:
        fx = float(merged["fl_x"])
        fy = float(merged.get("fl_y", fx))
        w, h = int(merged["w"]), int(merged["h"])
        cx = float(merged.get("cx", w / 2))
        cy = float(merged.get("cy", h / 2))
        dist = {k: float(merged.get(k, 0.0)) for k in DISTORTION_KEYS}
    except KeyError as err:
        raise BirdnerfError(f"{where}: missing intrinsic {err.args[0]!r}", source) from None
    except (TypeError, ValueError) as err:
        raise BirdnerfError(f"{where}: bad intrinsic value ({err})", source) from None
    return Camera(width=w, height=h, fx=fx, fy=fy, cx=cx, cy=cy, **dist)


_INTRINSIC_KEYS = ("camera_model", "fl_x", "fl_y", "cx", "cy", "w", "h", *DISTORTION_KEYS)


def read_transforms(path: str | Path) -> Scene:
    """Read a nerfstudio dataset from ``transforms.json`` (or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "transforms.json"
    if not path.is_file():
        raise BirdnerfError("no such file", path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BirdnerfError(f"malformed JSON ({err})", path) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list) or not meta["frames"]:
        raise BirdnerfError("expected an object with a non-empty 'frames' list", path)
    root = path.parent.resolve()
    defaults = {k: meta[k] for k in _INTRINSIC_KEYS if k in meta}

    images, cameras, poses, depths = [], [], [], []
    for i, frame in enumerate(meta["frames"]):
        where = f"frame {i}"
        if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
            raise BirdnerfError(f"{where}: needs 'file_path' and 'transform_matrix'", path)
        image = resolve_inside(root, str(frame["file_path"]), path)
        if not image.is_file():
            raise BirdnerfError(f"{where}: image {frame['file_path']!r} not found", path)
        try:
            m = np.asarray(frame["transform_matrix"], dtype=np.float64)
        except (TypeError, ValueError):
            raise BirdnerfError(f"{where}: transform_matrix is not a numeric matrix", path) from None
        if m.shape == (3, 4):
            m = np.vstack([m, [0, 0, 0, 1]])
        if m.shape != (4, 4):
            raise BirdnerfError(f"{where}: transform_matrix must be 4x4 or 3x4, got {m.shape}", path)
        if not np.all(np.isfinite(m)):
            raise BirdnerfError(f"{where}: transform_matrix contains NaN or infinity", path)
        images.append(image)
        cameras.append(_camera(frame, defaults, path, where))
        poses.append(m @ GL_FROM_CV)
        depth = frame.get("depth_file_path")
        depths.append(resolve_inside(root, str(depth), path) if depth else None)

    names = [p.relative_to(root).as_posix() for p in images]
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if first.setdefault(name, i) != i:
            raise BirdnerfError(f"frame {i}: image {name!r} is already frame {first[name]}", path)
    split = _splits(meta, names, path)
    extra = meta.get("birdnerf", {})
    scene = Scene(
        root=root,
        image_paths=images,
        cameras=cameras,
        c2w=np.stack(poses),
        split=split,
        depth_paths=depths if all(d is not None for d in depths) else None,
        source="nerfstudio",
    )
    if not isinstance(extra, dict):
        raise BirdnerfError("'birdnerf' must be an object", path)
    try:
        if extra.get("world_frame"):
            scene.is_world_frame = True
            scene.ground_z = None if extra.get("ground_z") is None else float(extra["ground_z"])
            frame = np.asarray(extra.get("world_from_input", np.eye(4)), dtype=np.float64)
            scene.world_from_input = frame.reshape(4, 4)
            scene.geo = extra.get("geo")
    except (TypeError, ValueError) as err:
        raise BirdnerfError(f"bad 'birdnerf' frame record ({err})", path) from None
    points = extra.get("points_file")
    if points:
        points_path = resolve_inside(root, str(points), path)
        try:
            with np.load(points_path, allow_pickle=False) as data:
                scene.points, scene.point_colors = data["xyz"].astype(np.float64), data["rgb"]
        except (OSError, KeyError, ValueError) as err:
            raise BirdnerfError(f"points file needs arrays 'xyz' and 'rgb' ({err})", points_path) from None
    scene.validate()
    return scene


def _splits(meta: dict, names: list[str], source: Path) -> list[str]:
    lists = {s: meta.get(f"{s}_filenames") for s in ("train", "val", "test")}
    if not any(lists.values()):
        return holdout_split(names)
    lookup = {}
    for s, entries in lists.items():
        for entry in entries or []:
            lookup[Path(str(entry)).as_posix().removeprefix("./")] = s
    unknown = [n for n in names if n not in lookup]
    if unknown:
        raise BirdnerfError(f"photo {unknown[0]!r} is in no train/val/test_filenames list", source)
    return [lookup[n] for n in names]


def write_transforms(scene: Scene, path: str | Path, points_file: str | None = None) -> Path:
    """Write ``scene`` as a nerfstudio ``transforms.json`` (atomically).

    Image paths are written relative to the file's folder, which must contain them.
    """
    path = Path(path)
    if path.suffix != ".json":
        path = path / "transforms.json"
    root = path.parent.resolve()
    shared = len({c for c in scene.cameras}) == 1
    meta: dict = {}
    if shared:
        meta.update(_intrinsics_dict(scene.cameras[0]))
    else:
        meta["camera_model"] = "OPENCV" if any(c.has_distortion for c in scene.cameras) else "PINHOLE"
    frames = []
    for i, image in enumerate(scene.image_paths):
        rel = Path(image).resolve().relative_to(root).as_posix()
        frame = {"file_path": rel, "transform_matrix": _rounded(scene.c2w[i] @ GL_FROM_CV)}
        if not shared:
            frame.update(_intrinsics_dict(scene.cameras[i]))
        if scene.depth_paths:
            frame["depth_file_path"] = Path(scene.depth_paths[i]).resolve().relative_to(root).as_posix()
        frames.append(frame)
    meta["frames"] = frames
    meta["applied_transform"] = _rounded(scene.world_from_input[:3])
    names = [f["file_path"] for f in frames]
    for s in ("train", "val", "test"):
        meta[f"{s}_filenames"] = [n for n, sp in zip(names, scene.split, strict=True) if sp == s]
    if scene.is_world_frame:
        meta["birdnerf"] = {
            "world_frame": True,
            "ground_z": scene.ground_z,
            "world_from_input": _rounded(scene.world_from_input),
            "geo": scene.geo,
        }
        if points_file:
            meta["birdnerf"]["points_file"] = points_file
    atomic.write_json(path, meta)
    return path


def _intrinsics_dict(cam: Camera) -> dict:
    d = {"camera_model": cam.model, "fl_x": cam.fx, "fl_y": cam.fy, "cx": cam.cx, "cy": cam.cy}
    d.update({"w": cam.width, "h": cam.height})
    if cam.has_distortion:
        d.update({k: getattr(cam, k) for k in DISTORTION_KEYS})
    return d


def _rounded(m: np.ndarray) -> list[list[float]]:
    return [[0.0 if math.isclose(v, 0.0, abs_tol=1e-15) else round(float(v), 12) for v in row] for row in m]
