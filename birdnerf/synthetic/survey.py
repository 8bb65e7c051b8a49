"""The drone survey: a lawnmower (boustrophedon) flight at fixed altitude over a rectangle.

Flight lines run along world x, alternately towards +x and -x, stepping towards +y. Spacing
along a line and between lines follows from the ground footprint of a nadir photo at the
flight altitude and the requested forward / side overlaps.

Camera orientation (OpenCV axes in the world frame):

- nadir (default): the camera's z axis points straight down and the image x axis points along
  the flight direction, so photos of alternate lines are rotated by 180 degrees, as when the
  drone yaws to follow its track; the top of the image looks to the left of the track.
- oblique: the camera is tilted ``oblique_tilt_deg`` off nadir, towards the top of the image,
  and the tilt's heading turns by 90 degrees from one photo to the next along a line (forward,
  left, back, right of the track), so every facade is seen from several photos.

A small deterministic jitter of position and attitude makes the poses realistic. Each photo
may also get its own exposure and white balance (:func:`photo_gain`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from birdnerf.scene.camera import Camera


@dataclass(frozen=True)
class SurveyConfig:
    """Flight plan and camera. Lengths in metres, angles in degrees, image sizes in pixels."""

    width: int = 160
    height: int = 120
    focal_px: float = 128.0
    """Focal length in pixels (pinhole, square pixels, principal point at the image centre)."""
    altitude_m: float = 60.0
    """Flight height above the ground."""
    forward_overlap: float = 0.70
    """Share of a nadir photo's footprint that the next photo on the same line also covers."""
    side_overlap: float = 0.60
    """Share of a nadir photo's footprint that the photo beside it on the next line covers."""
    oblique: bool = False
    oblique_tilt_deg: float = 35.0
    position_jitter_m: float = 0.3
    """Standard deviation of the horizontal position error."""
    altitude_jitter_m: float = 0.3
    attitude_jitter_deg: float = 0.5
    """Standard deviation of each rotation error (roll, pitch, yaw)."""
    supersample: int = 2
    """Anti-aliasing: rays per pixel along each image axis."""
    exposure_jitter: float = 0.0
    """Standard deviation of each photo's exposure, as a log2 gain (0.1: about 7 %)."""
    white_balance_jitter: float = 0.0
    """Standard deviation of each photo's independent red, green and blue gains (around 1)."""

    def camera(self) -> Camera:
        """The pinhole intrinsics shared by every photo."""
        f = float(self.focal_px)
        return Camera(width=self.width, height=self.height, fx=f, fy=f, cx=self.width / 2, cy=self.height / 2)

    @property
    def hfov_deg(self) -> float:
        """Horizontal field of view."""
        return math.degrees(2 * math.atan(self.width / (2 * self.focal_px)))

    @property
    def gsd_m(self) -> float:
        """Ground sampling distance of a nadir photo: metres of ground per pixel."""
        return self.altitude_m / self.focal_px

    @property
    def footprint_m(self) -> tuple[float, float]:
        """Ground footprint of a nadir photo: (along the track, across the track)."""
        return self.width * self.gsd_m, self.height * self.gsd_m

    @property
    def spacing_m(self) -> tuple[float, float]:
        """(distance between photos along a line, distance between lines)."""
        along, across = self.footprint_m
        return along * (1.0 - self.forward_overlap), across * (1.0 - self.side_overlap)


def look_rotation(azimuth: float, tilt: float) -> np.ndarray:
    """(3, 3) camera-to-world rotation of a camera tilted ``tilt`` rad off nadir towards ``azimuth``.

    ``azimuth`` is the ground direction (rad, counter-clockwise from +x) that the top of the
    image faces; the image x axis stays horizontal. With ``tilt = 0`` the camera looks straight
    down and the image x axis points to ``azimuth - 90 degrees``.
    """
    z = np.array([math.sin(tilt) * math.cos(azimuth), math.sin(tilt) * math.sin(azimuth), -math.cos(tilt)])
    x = np.array([math.sin(azimuth), -math.cos(azimuth), 0.0])
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


def _small_rotation(w: np.ndarray) -> np.ndarray:
    """Rotation by the axis-angle vector ``w`` (radians), by Rodrigues' formula."""
    angle = float(np.linalg.norm(w))
    if angle < 1e-15:
        return np.eye(3)
    k = w / angle
    skew = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(angle) * skew + (1.0 - math.cos(angle)) * skew @ skew


def plan_survey(
    config: SurveyConfig,
    bounds: tuple[float, float, float, float],
    rng: np.random.Generator,
    ground_z: float = 0.0,
) -> np.ndarray:
    """Camera-to-world poses (N, 4, 4) of a lawnmower flight over ``bounds``, in flight order.

    Photo centres lie on a grid with exactly the nominal spacing, centred on the rectangle
    ``bounds = (xmin, ymin, xmax, ymax)`` (metres) and spanning it (rounded to whole steps),
    ``config.altitude_m`` above ``ground_z`` (the ground's mean height there, world z metres).
    """
    forward, side = config.spacing_m
    xmin, ymin, xmax, ymax = bounds
    nx = int(round((xmax - xmin) / forward)) + 1
    ny = int(round((ymax - ymin) / side)) + 1
    xs = (xmin + xmax) / 2 + (np.arange(nx) - (nx - 1) / 2) * forward
    ys = (ymin + ymax) / 2 + (np.arange(ny) - (ny - 1) / 2) * side
    tilt = math.radians(config.oblique_tilt_deg) if config.oblique else 0.0
    poses = []
    for j, y in enumerate(ys):
        heading = 0.0 if j % 2 == 0 else math.pi
        for i, x in enumerate(xs if j % 2 == 0 else xs[::-1]):
            azimuth = heading + (i % 4) * math.pi / 2 if config.oblique else heading + math.pi / 2
            jitter = rng.normal(0.0, 1.0, 6)
            c2w = np.eye(4)
            c2w[:3, :3] = look_rotation(azimuth, tilt) @ _small_rotation(
                np.radians(config.attitude_jitter_deg) * jitter[3:]
            )
            c2w[:3, 3] = [
                x + config.position_jitter_m * jitter[0],
                y + config.position_jitter_m * jitter[1],
                ground_z + config.altitude_m + config.altitude_jitter_m * jitter[2],
            ]
            poses.append(c2w)
    return np.stack(poses)


def ground_footprint(cam: Camera, c2w: np.ndarray, ground_z: float = 0.0) -> np.ndarray:
    """(4, 2) ground points (x, y) seen by the image corners, in order around the image.

    Assumes every corner ray descends to the ground (true for the nadir and oblique surveys).
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    uv = np.array([[0, 0], [cam.width, 0], [cam.width, cam.height], [0, cam.height]], dtype=np.float64)
    d = np.stack([(uv[:, 0] - cam.cx) / cam.fx, (uv[:, 1] - cam.cy) / cam.fy, np.ones(4)], 1) @ c2w[:3, :3].T
    t = (ground_z - c2w[2, 3]) / d[:, 2]
    return c2w[:2, 3] + d[:, :2] * t[:, None]


def photo_gain(config: SurveyConfig, key: list[int]) -> tuple[float, np.ndarray] | None:
    """Exposure and white balance of one photo, or None when the survey has neither jitter.

    Args:
        config: the survey (``exposure_jitter``, ``white_balance_jitter``).
        key: seed of the photo's generator (e.g. ``[seed, 3, variant, index]``).

    Returns:
        ``(log2_exposure, white_balance)``: the photo's linear colour is multiplied by
        ``2 ** log2_exposure * white_balance`` ((3,) gains for red, green, blue).
    """
    if config.exposure_jitter <= 0.0 and config.white_balance_jitter <= 0.0:
        return None
    rng = np.random.default_rng(key)
    log2_exposure = float(rng.normal(0.0, config.exposure_jitter))
    white_balance = 1.0 + rng.normal(0.0, config.white_balance_jitter, 3)
    return log2_exposure, white_balance
