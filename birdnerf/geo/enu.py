"""WGS84 geodetic coordinates, Earth-centred Earth-fixed (ECEF) and local East-North-Up (ENU).

Angles are in degrees, lengths in metres, heights are ellipsoidal (WGS84). A local ENU frame is
a right-handed tangent frame at an origin (lat0, lon0, alt0): x east, y north, z up (along the
ellipsoid normal). Over a survey a few kilometres wide the frame is metric to well below a
centimetre per 100 m; its "up" is the local vertical, so it already is a bird-view frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from birdnerf.errors import BirdnerfError

WGS84_A = 6378137.0
"""Semi-major axis (metres)."""
WGS84_F = 1.0 / 298.257223563
"""Flattening."""
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)
"""First eccentricity squared."""
WGS84_B = WGS84_A * (1.0 - WGS84_F)
"""Semi-minor axis (metres)."""


@dataclass(frozen=True)
class GeoPoint:
    """A WGS84 position: latitude and longitude in degrees, ellipsoidal height in metres."""

    lat: float
    lon: float
    alt: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"lat": self.lat, "lon": self.lon, "alt": self.alt}


def enu_origin(geo: dict | None, source: object = None) -> GeoPoint | None:
    """The ENU origin of a dataset's ``geo`` record; None when it has none or another frame. A
    malformed record is one :class:`~birdnerf.errors.BirdnerfError` naming ``source``."""
    if not geo or geo.get("frame") != "ENU":
        return None
    try:
        return GeoPoint(float(geo["lat"]), float(geo["lon"]), float(geo.get("alt", 0.0)))
    except (KeyError, TypeError, ValueError) as err:
        raise BirdnerfError(f"bad geographic record {geo!r} ({err})", source) from None


def geodetic_to_ecef(lat: np.ndarray, lon: np.ndarray, alt: np.ndarray) -> np.ndarray:
    """(..., 3) ECEF positions (metres) of WGS84 latitudes, longitudes (degrees) and heights (metres)."""
    lat_r, lon_r = np.radians(np.asarray(lat, float)), np.radians(np.asarray(lon, float))
    alt = np.asarray(alt, float)
    sin_lat = np.sin(lat_r)
    n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * sin_lat**2)  # prime-vertical radius of curvature
    x = (n + alt) * np.cos(lat_r) * np.cos(lon_r)
    y = (n + alt) * np.cos(lat_r) * np.sin(lon_r)
    z = (n * (1.0 - WGS84_E2) + alt) * sin_lat
    return np.stack(np.broadcast_arrays(x, y, z), axis=-1)


def ecef_to_geodetic(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`geodetic_to_ecef`: (lat, lon) in degrees and height in metres.

    Bowring's formula refined by two fixed-point steps (sub-millimetre from -10 km to 1000 km);
    the height uses ``p cos(lat) + z sin(lat) - a sqrt(1 - e^2 sin^2(lat))``, stable at the poles.
    """
    xyz = np.asarray(xyz, float)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    p = np.hypot(x, y)
    lon = np.arctan2(y, x)
    ep2 = (WGS84_A**2 - WGS84_B**2) / WGS84_B**2
    theta = np.arctan2(z * WGS84_A, p * WGS84_B)
    lat = np.arctan2(z + ep2 * WGS84_B * np.sin(theta) ** 3, p - WGS84_E2 * WGS84_A * np.cos(theta) ** 3)
    for _ in range(2):
        n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * np.sin(lat) ** 2)
        lat = np.arctan2(z + WGS84_E2 * n * np.sin(lat), p)
    alt = p * np.cos(lat) + z * np.sin(lat) - WGS84_A * np.sqrt(1.0 - WGS84_E2 * np.sin(lat) ** 2)
    return np.degrees(lat), np.degrees(lon), alt


def enu_rotation(lat0: float, lon0: float) -> np.ndarray:
    """(3, 3) rotation whose rows are the east, north and up unit vectors (in ECEF) at (lat0, lon0)."""
    lat, lon = np.radians(lat0), np.radians(lon0)
    sl, cl, so, co = np.sin(lat), np.cos(lat), np.sin(lon), np.cos(lon)
    return np.array(
        [
            [-so, co, 0.0],
            [-sl * co, -sl * so, cl],
            [cl * co, cl * so, sl],
        ]
    )


def geodetic_to_enu(lat: np.ndarray, lon: np.ndarray, alt: np.ndarray, origin: GeoPoint) -> np.ndarray:
    """(..., 3) ENU positions (metres: east, north, up) relative to ``origin``."""
    ecef = geodetic_to_ecef(lat, lon, alt)
    ecef0 = geodetic_to_ecef(origin.lat, origin.lon, origin.alt)
    return (ecef - ecef0) @ enu_rotation(origin.lat, origin.lon).T


def enu_to_geodetic(enu: np.ndarray, origin: GeoPoint) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`geodetic_to_enu`: (lat, lon) in degrees and height in metres."""
    ecef0 = geodetic_to_ecef(origin.lat, origin.lon, origin.alt)
    ecef = np.asarray(enu, float) @ enu_rotation(origin.lat, origin.lon) + ecef0
    return ecef_to_geodetic(ecef)


def enu_to_enu(source: GeoPoint, target: GeoPoint) -> np.ndarray:
    """(4, 4) rigid transform from the ENU frame at ``source`` to the ENU frame at ``target``."""
    shift = geodetic_to_ecef(source.lat, source.lon, source.alt) - geodetic_to_ecef(
        target.lat, target.lon, target.alt
    )
    rot_t = enu_rotation(target.lat, target.lon)
    out = np.eye(4)
    out[:3, :3] = rot_t @ enu_rotation(source.lat, source.lon).T
    out[:3, 3] = rot_t @ shift
    return out


def mean_origin(lat: np.ndarray, lon: np.ndarray, alt: np.ndarray) -> GeoPoint:
    """The geodetic point under the mean ECEF position of the given points (their "centre")."""
    centre = geodetic_to_ecef(lat, lon, alt).reshape(-1, 3).mean(axis=0)
    lat0, lon0, alt0 = ecef_to_geodetic(centre)
    return GeoPoint(float(lat0), float(lon0), float(alt0))
