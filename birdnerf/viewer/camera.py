"""The browser's camera as a birdnerf camera, and birdnerf poses as viser poses.

viser states every camera in the **OpenCV** convention birdnerf uses inside (x right, y down,
z forward): a client's ``wxyz`` is the rotation ``R`` of ``P_world = R p_camera + position``,
its ``fov`` the *vertical* field of view in radians and its ``aspect`` the canvas width over
height. A camera-to-world matrix therefore carries over with no change of axes; only the
rotation's form (unit quaternion <-> matrix) and the intrinsics (field of view <-> focal length
in pixels of the rendered image) are converted.
"""

from __future__ import annotations

import math

import numpy as np

from birdnerf.scene.camera import Camera
from birdnerf.scene.colmap_model import qvec_from_rotmat, rotmat_from_qvec


def rotation_from_wxyz(wxyz: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix of a quaternion (w, x, y, z) (normalised here)."""
    q = np.asarray(wxyz, dtype=np.float64)
    return rotmat_from_qvec(q / np.linalg.norm(q))


def wxyz_from_rotation(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z), w >= 0, of a (3, 3) rotation matrix."""
    return qvec_from_rotmat(rotation)


def view_camera(
    wxyz: np.ndarray, position: np.ndarray, fov: float, aspect: float, width: int
) -> tuple[Camera, np.ndarray]:
    """The pinhole camera and (4, 4) OpenCV camera-to-world of a viser view, ``width`` pixels wide.

    Args:
        wxyz: the view's rotation (camera to world, OpenCV axes), a quaternion (w, x, y, z).
        position: (3,) camera centre in the run's world frame.
        fov: vertical field of view, radians.
        aspect: image width / height.
        width: rendered image width in pixels; the height follows from ``aspect`` (at least 1).

    Returns:
        A :class:`Camera` with square pixels and the principal point at the image centre, and
        its ``c2w``, ready for :func:`birdnerf.composite.render_view`.
    """
    width = max(1, int(width))
    height = max(1, int(round(width / aspect)))
    focal = 0.5 * height / math.tan(0.5 * fov)
    cam = Camera(width=width, height=height, fx=focal, fy=focal, cx=0.5 * width, cy=0.5 * height)
    c2w = np.eye(4)
    c2w[:3, :3] = rotation_from_wxyz(wxyz)
    c2w[:3, 3] = np.asarray(position, dtype=np.float64)
    return cam, c2w


def viser_pose(cam: Camera, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """``(wxyz, position, fov, aspect)`` of a birdnerf camera for viser (vertical fov, radians)."""
    c2w = np.asarray(c2w, dtype=np.float64)
    fov = 2.0 * math.atan(0.5 * cam.height / cam.fy)
    return wxyz_from_rotation(c2w[:3, :3]), c2w[:3, 3].copy(), fov, cam.width / cam.height
