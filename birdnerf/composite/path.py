"""Camera paths: generated orbits and fly-overs, and nerfstudio's camera-path JSON.

A path file follows nerfstudio's ``camera_path`` format::

    {"camera_type": "perspective", "render_width": W, "render_height": H, "fps": 10,
     "camera_path": [{"camera_to_world": [16 numbers, row-major 4x4, OpenGL axes],
                      "fov": vertical field of view in degrees, "aspect": W / H}, ...]}

Poses are in the run's world frame (metres, z up; see ``partition.json``'s frame record).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from birdnerf import atomic
from birdnerf.errors import BirdnerfError
from birdnerf.partition.manifest import Partition
from birdnerf.scene.camera import Camera
from birdnerf.scene.nerfstudio import GL_FROM_CV


@dataclass
class CameraPath:
    """Frames to render: one shared camera and (F, 4, 4) OpenCV camera-to-world poses."""

    camera: Camera
    c2w: np.ndarray
    fps: float = 10.0


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """OpenCV camera-to-world at ``eye`` looking at ``target`` (image "up" towards ``up``)."""
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:  # looking straight down: keep image x along world x
        right = np.array([1.0, 0.0, 0.0])
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, forward, eye
    return c2w


def site_extent(partition: Partition) -> tuple[np.ndarray, float]:
    """Centre (x, y) and half-size of the surveyed area."""
    x, y = partition.x_edges, partition.y_edges
    center = np.array([(x[0] + x[-1]) / 2, (y[0] + y[-1]) / 2])
    return center, 0.5 * min(x[-1] - x[0], y[-1] - y[0])


def orbit_path(
    partition: Partition, camera: Camera, altitude: float, frames: int = 48, radius_fraction: float = 0.5
) -> CameraPath:
    """A circle around the site centre at ``altitude`` above the ground, looking at the centre."""
    center, half = site_extent(partition)
    ground = float(partition.frame["ground_z"])
    target = np.array([center[0], center[1], ground])
    poses = []
    for k in range(frames):
        a = 2 * math.pi * k / frames
        eye = np.array(
            [
                center[0] + radius_fraction * half * math.cos(a),
                center[1] + radius_fraction * half * math.sin(a),
                ground + altitude,
            ]
        )
        poses.append(look_at(eye, target))
    return CameraPath(camera, np.stack(poses))


def flyover_path(
    partition: Partition, camera: Camera, altitude: float, frames: int = 48, tilt_deg: float = 20.0
) -> CameraPath:
    """A straight pass along x over the site centre, pitched ``tilt_deg`` forward from nadir."""
    center, half = site_extent(partition)
    ground = float(partition.frame["ground_z"])
    ahead = altitude * math.tan(math.radians(tilt_deg))
    poses = []
    for s in np.linspace(-0.8 * half, 0.8 * half - ahead, frames):
        eye = np.array([center[0] + s, center[1], ground + altitude])
        target = np.array([center[0] + s + max(ahead, 1e-3), center[1], ground])
        poses.append(look_at(eye, target, up=np.array([1.0, 0.0, 0.0])))
    return CameraPath(camera, np.stack(poses))


def write_camera_path(path: str | Path, camera_path: CameraPath) -> Path:
    """Write a nerfstudio-style camera-path JSON (atomically)."""
    cam = camera_path.camera
    fov = math.degrees(2 * math.atan(0.5 * cam.height / cam.fy))
    frames = [
        {
            "camera_to_world": (c2w @ GL_FROM_CV).reshape(-1).round(9).tolist(),
            "fov": fov,
            "aspect": cam.width / cam.height,
        }
        for c2w in camera_path.c2w
    ]
    data = {
        "camera_type": "perspective",
        "render_width": cam.width,
        "render_height": cam.height,
        "fps": camera_path.fps,
        "seconds": len(frames) / camera_path.fps,
        "camera_path": frames,
    }
    atomic.write_json(path, data)
    return Path(path)


MAX_SIDE_PX = 16384
"""The largest frame side a camera path may ask for (a 16k x 16k frame is 268 million rays)."""


def check_camera_path(poses: np.ndarray, width: int, height: int, fov_deg: float, path: Path) -> None:
    """Refuse what would render garbage or exhaust memory: non-finite or non-rigid poses (the
    rotation must be orthonormal with determinant +1), a field of view outside (0, 180) degrees,
    or sizes that are not positive or exceed :data:`MAX_SIDE_PX`."""
    if not (0 < width <= MAX_SIDE_PX and 0 < height <= MAX_SIDE_PX):
        raise BirdnerfError(f"render size {width}x{height} must be 1..{MAX_SIDE_PX} px on each side", path)
    if not (math.isfinite(fov_deg) and 0.0 < fov_deg < 180.0):
        raise BirdnerfError(f"field of view {fov_deg} must lie strictly between 0 and 180 degrees", path)
    if not np.all(np.isfinite(poses)):
        raise BirdnerfError("camera path contains NaN or infinity", path)
    rot = poses[:, :3, :3]
    error = np.abs(rot.transpose(0, 2, 1) @ rot - np.eye(3)).max(axis=(1, 2))
    bad = np.flatnonzero((error > 1e-4) | (np.linalg.det(rot) < 0))
    if bad.size:
        raise BirdnerfError(f"frame {bad[0]}: camera_to_world's rotation is not a rotation matrix", path)


def read_camera_path(path: str | Path) -> CameraPath:
    """Read a nerfstudio-style camera-path JSON (perspective cameras)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        width, height = int(data["render_width"]), int(data["render_height"])
        frames = data["camera_path"]
        if not frames:
            raise BirdnerfError("camera path has no frames", path)
        if data.get("camera_type", "perspective") != "perspective":
            raise BirdnerfError(f"unsupported camera_type {data['camera_type']!r}", path)
        fov = float(frames[0]["fov"])
        poses = np.stack(
            [np.asarray(f["camera_to_world"], dtype=np.float64).reshape(4, 4) @ GL_FROM_CV for f in frames]
        )
    except FileNotFoundError:
        raise BirdnerfError("no such file", path) from None
    except json.JSONDecodeError as err:
        raise BirdnerfError(f"malformed JSON ({err})", path) from None
    except (KeyError, TypeError, ValueError) as err:
        raise BirdnerfError(f"not a camera path ({type(err).__name__}: {err})", path) from None
    check_camera_path(poses, width, height, fov, path)
    fy = 0.5 * height / math.tan(math.radians(fov) / 2)
    camera = Camera(width=width, height=height, fx=fy, fy=fy, cx=width / 2, cy=height / 2)
    return CameraPath(camera, poses, float(data.get("fps", 10.0)))
