"""Georeferencing: move a reconstruction into the local ENU frame of its photos' GPS positions.

The camera centres of a reconstruction (arbitrary gauge: origin, rotation and scale) are aligned
to the photos' GPS positions expressed in a local ENU frame whose origin is the mean GPS position
(WGS84). The fitted similarity maps the reconstruction into metres with x east, y north and z up,
so the result is already a bird-view world frame; only the ground height is left to estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from birdnerf.geo.align import Similarity, spread_ratio, umeyama
from birdnerf.geo.enu import GeoPoint, geodetic_to_enu, mean_origin
from birdnerf.scene.frame import estimate_ground_z
from birdnerf.scene.scene import Scene

MIN_GPS_PHOTOS = 3
MIN_SPREAD_RATIO = 0.05
"""Camera layouts flatter than this (one straight line) leave the alignment's roll undetermined."""
MAX_RELATIVE_RMS = 0.2
"""GPS is rejected when its residual exceeds this share of the GPS positions' RMS spread."""


@dataclass(frozen=True)
class GeoFit:
    """The alignment of a scene's cameras to their GPS positions, or why there is none.

    Attributes:
        origin: geographic origin of the ENU frame (mean GPS position), or None.
        similarity: the input-frame -> ENU similarity (``scale`` in metres per input unit), or None.
        used: indices of the photos whose GPS took part in the fit.
        residuals_m: per used photo, the distance (metres) between its aligned camera centre and
            its GPS position.
        enu: (len(used), 3) the used photos' GPS positions in the ENU frame (metres).
        reason: why the scene was not georeferenced ("" when it was).
    """

    origin: GeoPoint | None = None
    similarity: Similarity | None = None
    used: list[int] = field(default_factory=list)
    residuals_m: np.ndarray = field(default_factory=lambda: np.zeros(0))
    enu: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.similarity is not None

    @property
    def rms_m(self) -> float | None:
        """RMS distance between aligned camera centres and GPS positions (metres), when fitted."""
        return self.similarity.rms if self.similarity is not None else None

    def rms_split_m(self, scene: Scene) -> tuple[float, float]:
        """(horizontal, vertical) RMS residual in metres of the fit on ``scene`` (the fitted scene)."""
        if self.similarity is None:
            raise ValueError(f"no GPS fit: {self.reason}")
        offsets = self.enu - self.similarity.apply(scene.centers[self.used])
        horizontal = float(np.sqrt(np.mean(np.sum(offsets[:, :2] ** 2, axis=1))))
        return horizontal, float(np.sqrt(np.mean(offsets[:, 2] ** 2)))


def fit_gps(
    scene: Scene,
    gps: Sequence[GeoPoint | None],
    min_photos: int = MIN_GPS_PHOTOS,
    min_fraction: float = 0.5,
) -> GeoFit:
    """Fit the similarity taking ``scene``'s camera centres to their GPS positions in ENU metres.

    Args:
        scene: a posed scene in any frame.
        gps: per photo of ``scene``, its WGS84 position or None (photos without GPS are left out
            of the fit but are still transformed with the others).
        min_photos: fewest photos with GPS for a fit.
        min_fraction: fewest photos with GPS, as a share of the scene's photos.

    Returns:
        A :class:`GeoFit`; when GPS is missing, too sparse, collinear or inconsistent with the
        reconstruction, ``reason`` says so and ``similarity`` is None.
    """
    if len(gps) != len(scene):
        raise ValueError(f"expected {len(scene)} GPS entries, got {len(gps)}")
    used = [i for i, g in enumerate(gps) if g is not None]
    if not used:
        return GeoFit(reason="no photo has a GPS position")
    needed = max(min_photos, int(np.ceil(min_fraction * len(scene))))
    if len(used) < needed:
        return GeoFit(used=used, reason=f"only {len(used)} of {len(scene)} photos have GPS (need {needed})")
    points = [gps[i] for i in used]
    lat = np.array([p.lat for p in points])  # type: ignore[union-attr]
    lon = np.array([p.lon for p in points])  # type: ignore[union-attr]
    alt = np.array([p.alt for p in points])  # type: ignore[union-attr]
    origin = mean_origin(lat, lon, alt)
    enu = geodetic_to_enu(lat, lon, alt, origin)
    centers = scene.centers[used]
    if spread_ratio(enu) < MIN_SPREAD_RATIO or spread_ratio(centers) < MIN_SPREAD_RATIO:
        return GeoFit(origin=origin, used=used, reason="the photos with GPS lie on one straight line")
    sim = umeyama(centers, enu)
    spread = float(np.sqrt(np.mean(np.sum((enu - enu.mean(axis=0)) ** 2, axis=1))))
    if sim.rms > MAX_RELATIVE_RMS * spread:
        reason = f"GPS disagrees with the reconstruction ({sim.rms:.3g} m RMS over a {spread:.3g} m spread)"
        return GeoFit(origin=origin, used=used, residuals_m=sim.residuals, reason=reason)
    view_z = (sim.rotation @ scene.c2w[:, :3, 2].T)[2]
    if np.mean(view_z) > 0:
        return GeoFit(origin=origin, used=used, reason="after GPS alignment the cameras would look up")
    return GeoFit(origin=origin, similarity=sim, used=used, residuals_m=sim.residuals, enu=enu)


def apply_gps_fit(scene: Scene, fit: GeoFit) -> tuple[Scene, str]:
    """``scene`` moved into the fit's ENU frame, marked as world frame, with its ground height.

    The similarity is composed into ``world_from_input``; ``geo`` records the origin (WGS84 lat,
    lon in degrees, alt in metres), the frame ("ENU") and the fit's RMS residual in metres.
    Returns the scene and where its ground height came from (see
    :func:`birdnerf.scene.frame.estimate_ground_z`).
    """
    if fit.similarity is None or fit.origin is None:
        raise ValueError(f"no GPS fit to apply: {fit.reason}")
    world = scene.transformed(fit.similarity.matrix)
    world.is_world_frame = True
    world.geo = {
        "frame": "ENU",
        "ellipsoid": "WGS84",
        **fit.origin.as_dict(),
        "gps_rms_m": round(fit.similarity.rms, 4),
        "gps_photos": len(fit.used),
    }
    ground_z, ground_source = estimate_ground_z(world)
    world.ground_z = ground_z
    return world, ground_source
