"""Geographic reference: EXIF/XMP GPS, WGS84 -> ECEF -> local ENU, and similarity alignment."""

from birdnerf.geo.align import Similarity, spread_ratio, umeyama
from birdnerf.geo.enu import (
    GeoPoint,
    ecef_to_geodetic,
    enu_origin,
    enu_to_geodetic,
    geodetic_to_ecef,
    geodetic_to_enu,
    mean_origin,
)
from birdnerf.geo.exif import PhotoMeta, make_exif, read_photo_meta
from birdnerf.geo.georef import GeoFit, apply_gps_fit, fit_gps

__all__ = [
    "GeoFit",
    "GeoPoint",
    "PhotoMeta",
    "Similarity",
    "apply_gps_fit",
    "ecef_to_geodetic",
    "enu_origin",
    "enu_to_geodetic",
    "fit_gps",
    "geodetic_to_ecef",
    "geodetic_to_enu",
    "make_exif",
    "mean_origin",
    "read_photo_meta",
    "spread_ratio",
    "umeyama",
]
