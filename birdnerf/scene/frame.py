"""The bird-view world frame: z up, ground plane at z = ground_z, x along the flight lines.

Readers return scenes in their input frame (COLMAP's arbitrary gauge, a nerfstudio frame ...).
:func:`to_world_frame` estimates "up" and the ground height and moves the scene into a frame
where x/y is the ground plane, so that partitioning and compositing can work in bird view. The
ground comes from measurements (sparse points, depth maps, or points triangulated from the posed
photos) whenever possible; a guess from the photo spacing is the last resort, and says so.
The transform back to the input frame is kept in ``Scene.world_from_input``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from birdnerf.errors import BirdnerfError
from birdnerf.scene.scene import Scene

log = logging.getLogger("birdnerf")


MIN_TRIANGULATED = 200
"""Fewer measured points than this are not trusted for the ground height."""
HEURISTIC_UNCERTAINTY = 2.0
"""How far below the spacing guess the ground may lie, as a multiple of the guessed altitude:
real surveys fly 60-90 % forward overlap, so the true altitude is up to ~3x the 70 % guess."""


@dataclass(frozen=True)
class GroundEstimate:
    """A ground height (scene z), where it came from, and how far below it the true ground may lie."""

    z: float
    source: str  # "scene", "sparse_points", "depth_maps", "triangulated", "user" or "overlap_heuristic"
    uncertainty: float = 0.0
    """How far (scene units) the true ground may lie below ``z``; 0 when it was measured."""
    measured_points: int = 0
    """Points triangulated from the photos (0 unless ``source`` is "triangulated")."""
    points_reach_z: float | None = None
    """Scene z above which the measured points say nothing (see ``Triangulation.reach_z``)."""


@dataclass(frozen=True)
class FrameEstimate:
    """How the world frame was found (recorded in the partition manifest)."""

    up_source: str  # "already_world", "camera_plane", "sparse_points" or "view_directions"
    ground: GroundEstimate
    z_shift: float = 0.0
    """World z = height along the input's up axis - ``z_shift`` (what the frame move subtracted)."""

    @property
    def ground_source(self) -> str:
        return self.ground.source


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def estimate_up(scene: Scene) -> tuple[np.ndarray, str]:
    """Unit "up" vector in the scene's frame, and which evidence gave it.

    Aerial surveys fly at a near-constant altitude, so the plane through the camera centres is
    the best evidence when the centres spread in two directions; otherwise a plane fit to the
    sparse points, otherwise the mean viewing direction (cameras look down). The sign is always
    chosen so that the cameras look down.
    """
    view_dirs = scene.c2w[:, :3, 2]
    down = _unit(view_dirs.mean(axis=0))
    candidates: list[tuple[np.ndarray, str]] = []
    centers = scene.centers
    if len(centers) >= 3:
        _, s, vt = np.linalg.svd(centers - centers.mean(axis=0), full_matrices=False)
        if s[1] > 1e-9 and s[2] < 0.15 * s[1]:
            candidates.append((vt[2], "camera_plane"))
    if scene.points is not None and len(scene.points) >= 50:
        pts = scene.points
        center = np.median(pts, axis=0)
        dist = np.linalg.norm(pts - center, axis=1)
        inliers = pts[dist <= np.quantile(dist, 0.9)]
        _, s, vt = np.linalg.svd(inliers - inliers.mean(axis=0), full_matrices=False)
        if s[2] < 0.5 * s[1]:
            candidates.append((vt[2], "sparse_points"))
    for normal, source in candidates:
        normal = _unit(normal)
        # A plane normal is only trusted if the cameras look roughly along it (within 60 deg).
        if abs(normal @ down) > 0.5:
            return (normal if normal @ down < 0 else -normal), source
    return -down, "view_directions"


def rotation_to_z(up: np.ndarray, forward_hint: np.ndarray) -> np.ndarray:
    """Rotation R with R @ up = +z and R @ forward_hint (projected on the ground) = +x."""
    z = _unit(up)
    x = forward_hint - (forward_hint @ z) * z
    if np.linalg.norm(x) < 1e-9:
        x = np.array([1.0, 0.0, 0.0]) - z[0] * z
        if np.linalg.norm(x) < 1e-9:
            x = np.array([0.0, 1.0, 0.0]) - z[1] * z
    x = _unit(x)
    y = np.cross(z, x)
    return np.stack([x, y, z])


def _flight_direction(ground_xy: np.ndarray) -> np.ndarray:
    """Principal direction of the camera centres on the ground (flight lines), sign-fixed."""
    if len(ground_xy) < 2:
        return np.array([1.0, 0.0])
    _, _, vt = np.linalg.svd(ground_xy - ground_xy.mean(axis=0), full_matrices=False)
    d = vt[0]
    # Deterministic sign: the component of largest magnitude is positive.
    return d if d[np.argmax(np.abs(d))] > 0 else -d


def estimate_ground_z(scene: Scene) -> tuple[float, str]:
    """Ground height in a z-up frame and its source (see :func:`estimate_ground`)."""
    ground = estimate_ground(scene)
    return ground.z, ground.source


def read_depth(path: Path) -> np.ndarray:
    """A (H, W) z-depth map (metres) from an ``.npy`` file; one line naming the file when it is
    missing, pickled or not a 2-D array of numbers."""
    try:
        depth = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise BirdnerfError("depth map not found", path) from None
    except (ValueError, OSError, EOFError) as err:
        raise BirdnerfError(f"not a depth map (a .npy array of numbers): {err}", path) from None
    if depth.ndim != 2 or depth.dtype.kind not in "fiu":
        raise BirdnerfError(f"not a depth map: a {depth.dtype} array of shape {depth.shape}", path)
    return depth.astype(np.float64, copy=False)


def estimate_ground(scene: Scene) -> GroundEstimate:
    """Ground height in a z-up frame: from sparse points, depth maps, points measured from the
    photos, or, failing all, the survey geometry (with a warning and a wide uncertainty).

    Without points or depth maps the photos are matched by plane-sweep stereo
    (:func:`birdnerf.scene.triangulate.triangulate_scene`); when that gives at least
    ``MIN_TRIANGULATED`` points they become ``scene.points`` / ``scene.point_colors``.
    """
    if scene.points is not None and len(scene.points) >= 20:
        z = scene.points[:, 2]
        # Most of a site is ground: the lower-middle of the height distribution is robust to
        # buildings and trees above it and to the odd outlier below it.
        return GroundEstimate(float(np.quantile(z, 0.3)), "sparse_points")
    if scene.depth_paths:
        heights = []
        for i in np.linspace(0, len(scene) - 1, min(len(scene), 16)).astype(int):
            depth = read_depth(scene.depth_paths[i])
            valid = depth[np.isfinite(depth) & (depth > 0)]
            if valid.size:  # a map that sees only sky says nothing of the ground
                # z-depth d along the optical axis: the axis meets the surface at centre + d * axis.
                heights.append(scene.c2w[i, 2, 3] + float(np.median(valid)) * scene.c2w[i, 2, 2])
        if not heights:
            raise BirdnerfError(
                "the dataset's depth maps hold no positive depth (all zero, negative or not finite)",
                scene.depth_paths[0].parent,
            )
        return GroundEstimate(float(np.median(heights)), "depth_maps")
    from birdnerf.scene.triangulate import triangulate_scene

    measured = triangulate_scene(scene)
    if len(measured) >= MIN_TRIANGULATED:
        scene.points, scene.point_colors = measured.points, measured.colors
        z = float(np.quantile(measured.points[:, 2], 0.3))
        return GroundEstimate(
            z, "triangulated", measured_points=len(measured), points_reach_z=measured.reach_z
        )
    altitude = _altitude_from_spacing(scene)
    ground = float(np.median(scene.centers[:, 2]) - altitude)
    uncertainty = HEURISTIC_UNCERTAINTY * altitude
    log.warning(
        "no sparse points or depth maps, and the photos gave too few stereo matches (%d points): "
        "the ground height is guessed from the photo spacing (%.3g below the cameras, assuming 70 %% "
        "forward overlap) and may lie up to %.3g lower; block boxes are widened to cover that. "
        "For tight boxes give the ground height (birdnerf partition --ground-z, or --z-range for "
        "the surface's height range) or add sparse points (e.g. a COLMAP model) to the dataset",
        len(measured),
        altitude,
        uncertainty,
    )
    return GroundEstimate(ground, "overlap_heuristic", uncertainty)


def _altitude_from_spacing(scene: Scene) -> float:
    """Altitude that gives ~70 % forward overlap at the median nearest-neighbour spacing."""
    c = scene.centers[:, :2]
    d = np.linalg.norm(c[:, None] - c[None], axis=-1) if len(c) <= 4000 else None
    if d is None or len(c) < 2:
        return 1.0
    np.fill_diagonal(d, np.inf)
    spacing = float(np.median(d.min(axis=1)))
    cam = scene.cameras[0]
    half_fov = np.arctan(0.5 * cam.height / cam.fy)
    return spacing / (0.6 * np.tan(half_fov))


def to_world_frame(scene: Scene, ground_z: float | None = None) -> tuple[Scene, FrameEstimate]:
    """Move ``scene`` into the bird-view frame (z up, ground at z = 0, centred on the survey).

    Scenes already marked ``is_world_frame`` (e.g. birdnerf's own datasets) keep their frame.

    Args:
        scene: the scene as read; may gain measured points (see :func:`estimate_ground`).
        ground_z: the ground height when the user knows it, as a height along the scene's up
            axis: the z coordinate after ``up`` is rotated onto +z about the input origin (for
            a z-up dataset, its z coordinate; for a world-frame scene, its z). Skips the estimate.
    """
    if scene.is_world_frame:
        if ground_z is not None:
            ground = GroundEstimate(float(ground_z), "user")
        elif scene.ground_z is None:
            ground = estimate_ground(scene)
        else:
            ground = GroundEstimate(float(scene.ground_z), "scene")
        scene.ground_z = ground.z
        return scene, FrameEstimate("already_world", ground)
    up, up_source = estimate_up(scene)
    rot = np.eye(4)
    rot[:3, :3] = rotation_to_z(up, np.array([1.0, 0.0, 0.0]))
    tmp = scene.transformed(rot)
    heading = _flight_direction(tmp.centers[:, :2])
    yaw = np.eye(4)
    yaw[:3, :3] = rotation_to_z(np.array([0.0, 0.0, 1.0]), np.array([heading[0], heading[1], 0.0]))
    tmp = tmp.transformed(yaw)  # a turn about z: heights along up are unchanged
    ground = GroundEstimate(float(ground_z), "user") if ground_z is not None else estimate_ground(tmp)
    shift = np.eye(4)
    shift[:2, 3] = -np.median(tmp.centers[:, :2], axis=0)
    shift[2, 3] = -ground.z
    world = tmp.transformed(shift)
    world.ground_z = 0.0
    world.is_world_frame = True
    return world, FrameEstimate(up_source, ground, ground.z)
