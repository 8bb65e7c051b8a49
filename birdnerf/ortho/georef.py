"""Where the orthophoto's cells lie on the Earth: UTM for georeferenced runs, the run's frame otherwise.

A georeferenced dataset (``birdnerf.geo`` with frame ENU in its ``transforms.json``) is in a local
East-North-Up frame at a WGS84 origin; the run's world frame reaches it through the manifest's
``load_transform`` (world = load_transform @ dataset). A world point at ground height is taken to
ENU, to latitude and longitude, and to the WGS84 UTM zone of the origin (EPSG 326xx north, 327xx
south; the standard 6-degree zones, without the Norway and Svalbard exceptions). The raster's
geotransform is the affine map fitted by least squares to 5 x 5 cells spread over the raster:
over a site of a few kilometres ENU -> UTM is a rotation by the meridian convergence and a scale
(UTM's scale factor) to well under a centimetre, and ``max_residual_m`` says how far the fit is
from the exact transform at those cells. The grid therefore stays axis-aligned in the run's frame
and is rotated (by the convergence, under a degree or two) in UTM.

Without a geographic record the rasters are in the run's world frame (metres, x east-like, y
north-like), with a LOCAL_CS coordinate system that says so, and the same in the sidecar JSON.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from birdnerf.errors import BirdnerfError
from birdnerf.geo.enu import GeoPoint, enu_to_geodetic
from birdnerf.ortho.grid import Window

LOCAL_WKT = (
    'LOCAL_CS["birdnerf run world frame",LOCAL_DATUM["birdnerf run",0],UNIT["metre",1],'
    'AXIS["x",EAST],AXIS["y",NORTH]]'
)


@dataclass(frozen=True)
class RasterGeoref:
    """A raster's coordinate system and geotransform.

    Attributes:
        crs: "EPSG:326xx"/"EPSG:327xx", or the LOCAL_CS WKT of the run's frame.
        transform: the 6 GDAL-order coefficients ``(a, b, c, d, e, f)``: a cell (col, row) corner
            is at ``(a col + b row + c, d col + e row + f)``.
        frame: "UTM" or "run world frame".
        max_residual_m: largest distance between the affine map and the exact transform at the
            sampled cells (0 in the run's frame).
        z_offset: added to world z for the DSM's heights: 0 in the run's frame; in UTM, to give
            WGS84 ellipsoidal heights (ENU up + the origin's height, read at the raster's centre:
            the Earth's curvature, d^2 / 2R = 8 cm at 1 km from the origin, is neglected).
    """

    crs: str
    transform: tuple[float, float, float, float, float, float]
    frame: str
    max_residual_m: float = 0.0
    z_offset: float = 0.0


def utm_epsg(lat: float, lon: float) -> int:
    """EPSG code of the WGS84 UTM zone holding (lat, lon) in degrees."""
    zone = int(np.floor((lon + 180.0) / 6.0)) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def local_georef(window: Window, gsd: float) -> RasterGeoref:
    x0, y1 = window.col0 * gsd, window.top * gsd
    return RasterGeoref(LOCAL_WKT, (gsd, 0.0, x0, 0.0, -gsd, y1), "run world frame")


def utm_georef(
    window: Window, gsd: float, origin: GeoPoint, load_transform: np.ndarray, ground_z: float
) -> RasterGeoref:
    """The raster in the UTM zone of ``origin``: world -> dataset (ENU) -> WGS84 -> UTM."""
    try:
        from pyproj import Transformer
    except ImportError:
        raise BirdnerfError("a UTM orthophoto needs pyproj: pip install 'birdnerf[ortho]'") from None

    epsg = utm_epsg(origin.lat, origin.lon)
    cols, rows = np.meshgrid(np.linspace(0, window.width, 5), np.linspace(0, window.height, 5))
    cols, rows = cols.ravel(), rows.ravel()
    world = np.stack(
        [
            window.col0 * gsd + cols * gsd,
            window.top * gsd - rows * gsd,
            np.full(cols.shape, ground_z),
            np.ones(25),
        ]
    )
    enu = (np.linalg.inv(load_transform) @ world)[:3].T
    lat, lon, _ = enu_to_geodetic(enu, origin)
    east, north = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True).transform(lon, lat)
    design = np.stack([cols, rows, np.ones_like(cols)], axis=1)
    (a, b, c), *_ = np.linalg.lstsq(design, east, rcond=None)
    (d, e, f), *_ = np.linalg.lstsq(design, north, rcond=None)
    fit_e, fit_n = design @ np.array([a, b, c]), design @ np.array([d, e, f])
    residual = float(np.max(np.hypot(fit_e - east, fit_n - north)))
    coefficients = (float(a), float(b), float(c), float(d), float(e), float(f))
    z_offset = float(np.median(enu[:, 2])) - ground_z + origin.alt
    return RasterGeoref(f"EPSG:{epsg}", coefficients, "UTM", residual, z_offset)
