"""COLMAP sparse-model records, camera models and pose conversion, shared by both file formats.

COLMAP stores, per image, the **world-to-camera** rotation as a unit quaternion ``qvec``
(w, x, y, z) and the translation ``tvec``: ``x_cam = R(qvec) @ x_world + tvec``. Its camera axes
are OpenCV's (x right, y down, z forward) and the centre of the top-left pixel is (0.5, 0.5),
both the same as birdnerf's, so only the pose has to be inverted at this boundary.

Camera models map onto :class:`~birdnerf.scene.camera.Camera` (OpenCV polynomial distortion)
as follows; parameter order is COLMAP's:

==============  ==========================================  ==========================
model           params                                      Camera
==============  ==========================================  ==========================
SIMPLE_PINHOLE  f, cx, cy                                   fx = fy = f
PINHOLE         fx, fy, cx, cy
SIMPLE_RADIAL   f, cx, cy, k                                fx = fy = f, k1 = k
RADIAL          f, cx, cy, k1, k2                           fx = fy = f
OPENCV          fx, fy, cx, cy, k1, k2, p1, p2
FULL_OPENCV     fx, fy, cx, cy, k1, k2, p1, p2, k3, k4..k6  k1, k2, k3, p1, p2
==============  ==========================================  ==========================

FULL_OPENCV's k4, k5, k6 are the denominator of OpenCV's *rational* model
``(1 + k1 r^2 + k2 r^4 + k3 r^6) / (1 + k4 r^2 + k5 r^4 + k6 r^6)``, which birdnerf does not
model, so they must be zero. Conversely, birdnerf's ``k4`` (the r^8 term of the polynomial) has no
COLMAP equivalent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from birdnerf.errors import BirdnerfError
from birdnerf.scene.camera import Camera

# COLMAP's numeric model ids, used by the binary format (src/colmap/sensor/models.h).
MODEL_NAMES: dict[int, str] = {
    0: "SIMPLE_PINHOLE",
    1: "PINHOLE",
    2: "SIMPLE_RADIAL",
    3: "RADIAL",
    4: "OPENCV",
    5: "OPENCV_FISHEYE",
    6: "FULL_OPENCV",
    7: "FOV",
    8: "SIMPLE_RADIAL_FISHEYE",
    9: "RADIAL_FISHEYE",
    10: "THIN_PRISM_FISHEYE",
    11: "RAD_TAN_THIN_PRISM_FISHEYE",
}
MODEL_IDS: dict[str, int] = {name: model_id for model_id, name in MODEL_NAMES.items()}
# Number of parameters of each model birdnerf reads.
SUPPORTED_MODELS: dict[str, int] = {
    "SIMPLE_PINHOLE": 3,
    "PINHOLE": 4,
    "SIMPLE_RADIAL": 4,
    "RADIAL": 5,
    "OPENCV": 8,
    "FULL_OPENCV": 12,
}


@dataclass(frozen=True)
class ColmapCamera:
    """One entry of ``cameras.txt`` / ``cameras.bin``: size in pixels and COLMAP-ordered params."""

    camera_id: int
    model: str
    width: int
    height: int
    params: tuple[float, ...]


@dataclass(frozen=True)
class ColmapImage:
    """One registered image: world-to-camera pose, its camera and its name (relative path)."""

    image_id: int
    qvec: tuple[float, float, float, float]
    tvec: tuple[float, float, float]
    camera_id: int
    name: str


@dataclass
class ColmapModel:
    """A sparse model as stored on disk (2D observations and point tracks are not kept).

    Attributes:
        cameras: cameras by id.
        images: registered images, in file order.
        points: (M, 3) float64 3D points in the model's frame, ordered by point id.
        point_colors: (M, 3) uint8 RGB colours of ``points``.
        sources: the files each part was read from ("cameras", "images", "points3D"), for
            error messages; empty for a model built in memory.
    """

    cameras: dict[int, ColmapCamera]
    images: list[ColmapImage]
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    point_colors: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.uint8))
    sources: dict[str, Path] = field(default_factory=dict)


def unsupported_model_message(camera_id: int, model: str) -> str:
    supported = ", ".join(SUPPORTED_MODELS)
    return f"camera {camera_id} uses unsupported camera model {model} (supported: {supported})"


def check_camera(camera: ColmapCamera, where: str, source: Path) -> ColmapCamera:
    """Return ``camera`` if birdnerf can use it, else raise a :class:`BirdnerfError` about ``source``.

    ``where`` locates the entry in the file (e.g. "line 4" or "camera 2").
    """
    if camera.model not in SUPPORTED_MODELS:
        raise BirdnerfError(f"{where}: {unsupported_model_message(camera.camera_id, camera.model)}", source)
    expected = SUPPORTED_MODELS[camera.model]
    if len(camera.params) != expected:
        raise BirdnerfError(
            f"{where}: {camera.model} camera needs {expected} parameters, got {len(camera.params)}", source
        )
    if not all(math.isfinite(p) for p in camera.params):
        raise BirdnerfError(f"{where}: camera {camera.camera_id} parameters contain NaN or infinity", source)
    if camera.model == "FULL_OPENCV" and any(camera.params[9:12]):
        k4, k5, k6 = camera.params[9:12]
        raise BirdnerfError(
            f"{where}: camera {camera.camera_id} is FULL_OPENCV with rational distortion "
            f"(k4={k4}, k5={k5}, k6={k6}); rational distortion is unsupported",
            source,
        )
    problem = camera_from_colmap(camera).validate()
    if problem:
        raise BirdnerfError(f"{where}: camera {camera.camera_id}: {problem}", source)
    return camera


def camera_from_colmap(camera: ColmapCamera) -> Camera:
    """The birdnerf :class:`Camera` of a COLMAP camera already accepted by :func:`check_camera`."""
    p = camera.params
    size = {"width": camera.width, "height": camera.height}
    if camera.model == "SIMPLE_PINHOLE":
        return Camera(**size, fx=p[0], fy=p[0], cx=p[1], cy=p[2])
    if camera.model == "PINHOLE":
        return Camera(**size, fx=p[0], fy=p[1], cx=p[2], cy=p[3])
    if camera.model == "SIMPLE_RADIAL":
        return Camera(**size, fx=p[0], fy=p[0], cx=p[1], cy=p[2], k1=p[3])
    if camera.model == "RADIAL":
        return Camera(**size, fx=p[0], fy=p[0], cx=p[1], cy=p[2], k1=p[3], k2=p[4])
    if camera.model == "OPENCV":
        return Camera(**size, fx=p[0], fy=p[1], cx=p[2], cy=p[3], k1=p[4], k2=p[5], p1=p[6], p2=p[7])
    if camera.model == "FULL_OPENCV":
        return Camera(**size, fx=p[0], fy=p[1], cx=p[2], cy=p[3], k1=p[4], k2=p[5], p1=p[6], p2=p[7], k3=p[8])
    raise ValueError(f"camera model {camera.model} was not checked")


def camera_to_colmap(camera: Camera, camera_id: int, source: Path | None = None) -> ColmapCamera:
    """The simplest COLMAP model that represents ``camera`` exactly.

    Raises:
        BirdnerfError: about ``source`` (a photo using the camera) when ``camera.k4``, the r^8
            term, is nonzero: no COLMAP model has it.
    """
    c = camera
    if c.k4 != 0.0:
        raise BirdnerfError(f"distortion k4={c.k4} (the r^8 term) has no COLMAP equivalent", source)
    size = {"camera_id": camera_id, "width": c.width, "height": c.height}
    same_f = c.fx == c.fy
    if not c.has_distortion:
        if same_f:
            return ColmapCamera(model="SIMPLE_PINHOLE", params=(c.fx, c.cx, c.cy), **size)
        return ColmapCamera(model="PINHOLE", params=(c.fx, c.fy, c.cx, c.cy), **size)
    if same_f and c.p1 == 0.0 and c.p2 == 0.0 and c.k3 == 0.0:
        if c.k2 == 0.0:
            return ColmapCamera(model="SIMPLE_RADIAL", params=(c.fx, c.cx, c.cy, c.k1), **size)
        return ColmapCamera(model="RADIAL", params=(c.fx, c.cx, c.cy, c.k1, c.k2), **size)
    opencv = (c.fx, c.fy, c.cx, c.cy, c.k1, c.k2, c.p1, c.p2)
    if c.k3 == 0.0:
        return ColmapCamera(model="OPENCV", params=opencv, **size)
    return ColmapCamera(model="FULL_OPENCV", params=(*opencv, c.k3, 0.0, 0.0, 0.0), **size)


def rotmat_from_qvec(qvec: np.ndarray) -> np.ndarray:
    """(3, 3) rotation of a unit quaternion (w, x, y, z)."""
    w, x, y, z = qvec
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def qvec_from_rotmat(rot: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z), with w >= 0, of a (3, 3) rotation (Shepperd's method)."""
    m = np.asarray(rot, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    # Divide by the largest of the four candidate components, which keeps the result accurate.
    if trace > 0:
        s = 2.0 * math.sqrt(1.0 + trace)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    qvec = np.array(q) / np.linalg.norm(q)
    return -qvec if qvec[0] < 0 else qvec


def c2w_from_colmap(image: ColmapImage, source: Path) -> np.ndarray:
    """(4, 4) camera-to-world (OpenCV axes) of a COLMAP image; the quaternion is normalised."""
    qvec = np.asarray(image.qvec, dtype=np.float64)
    tvec = np.asarray(image.tvec, dtype=np.float64)
    if not (np.all(np.isfinite(qvec)) and np.all(np.isfinite(tvec))):
        raise BirdnerfError(f"image {image.name!r}: pose contains NaN or infinity", source)
    norm = float(np.linalg.norm(qvec))
    if norm < 1e-12:
        raise BirdnerfError(f"image {image.name!r}: rotation quaternion is zero", source)
    rot = rotmat_from_qvec(qvec / norm)
    c2w = np.eye(4)
    c2w[:3, :3] = rot.T
    c2w[:3, 3] = -rot.T @ tvec
    return c2w


def colmap_pose(c2w: np.ndarray) -> tuple[tuple[float, float, float, float], tuple[float, float, float]]:
    """COLMAP's world-to-camera ``(qvec, tvec)`` of a (4, 4) camera-to-world matrix (OpenCV axes)."""
    rot = np.asarray(c2w, dtype=np.float64)[:3, :3].T
    tvec = -rot @ np.asarray(c2w, dtype=np.float64)[:3, 3]
    w, x, y, z = (float(v) for v in qvec_from_rotmat(rot))
    return (w, x, y, z), (float(tvec[0]), float(tvec[1]), float(tvec[2]))
