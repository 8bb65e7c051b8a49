"""The run's orthophoto (``RUN/ortho/orthophoto.tif``) as an image plane draped on the ground.

The GeoTIFF's pixel grid is mapped into the run's world frame through its corners:

- no CRS, or a local (engineering) CRS: the raster's coordinates are the run's world x, y;
- a geographic or projected CRS (e.g. the UTM zone of the survey): raster coordinates ->
  WGS84 (pyproj) -> the dataset's ENU frame (its ``geo`` origin) -> the run's world frame
  (the manifest's ``load_transform``).

The plane's edges follow the raster's first row and column; over a site a few kilometres wide
the ENU-to-UTM map is a rotation and a scale to well under a pixel, so a plane is exact enough.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from birdnerf.errors import BirdnerfError
from birdnerf.geo.enu import enu_origin, geodetic_to_enu
from birdnerf.runlayout import ORTHO
from birdnerf.viewer.camera import wxyz_from_rotation

ORTHOPHOTO = Path(ORTHO) / "orthophoto.tif"
"""Where ``birdnerf ortho`` writes the orthophoto, relative to the run."""


@dataclass
class OrthoLayer:
    """An orthophoto placed in the world frame.

    Attributes:
        image: (H, W, 3 or 4) uint8 RGB(A), downsampled to the viewer's size limit.
        center: (3,) world position of the raster's centre, at ground height.
        wxyz: rotation of the plane: its x axis runs along the raster's rows (columns increase),
            its y axis down its columns (rows increase).
        size: (width, height) of the whole raster in world units.
        path: the GeoTIFF.
    """

    image: np.ndarray
    center: np.ndarray
    wxyz: np.ndarray
    size: tuple[float, float]
    path: Path


def _to_world(path: Path, crs, xy: np.ndarray, geo: dict | None, load_transform: np.ndarray) -> np.ndarray:
    """(N, 2) raster coordinates -> (N, 2) world x, y."""
    if crs is None or not (crs.is_geographic or crs.is_projected):
        return xy
    origin = enu_origin(geo, path)
    if origin is None:
        raise BirdnerfError("the orthophoto has a geographic CRS but the run has no ENU origin", path)
    try:
        from pyproj import Transformer
    except ImportError:
        raise BirdnerfError(
            "a georeferenced orthophoto needs pyproj: pip install 'birdnerf[ortho]'"
        ) from None
    to_wgs84 = Transformer.from_crs(crs.to_wkt(), "EPSG:4326", always_xy=True)
    lon, lat = to_wgs84.transform(xy[:, 0], xy[:, 1])
    enu = geodetic_to_enu(np.asarray(lat), np.asarray(lon), np.full(len(xy), origin.alt), origin)
    world = enu @ load_transform[:3, :3].T + load_transform[:3, 3]
    return world[:, :2]


def read_ortho_layer(
    path: str | Path, ground_z: float, geo: dict | None, load_transform: np.ndarray, max_side: int = 2048
) -> OrthoLayer:
    """Read an RGB(A) uint8 GeoTIFF and place it at ``ground_z`` in the run's world frame.

    Args:
        path: the GeoTIFF.
        ground_z: height of the plane (world z).
        geo: the dataset's geographic record (``{"frame": "ENU", "lat", "lon", "alt"}``), needed
            when the raster has a geographic or projected CRS.
        load_transform: (4, 4) dataset (ENU) -> run world frame.
        max_side: the image is read downsampled so that neither side exceeds this (pixels).

    Raises:
        BirdnerfError: rasterio missing, the file unreadable or not 8-bit RGB(A), or no way to
            place its CRS in the run.
    """
    path = Path(path)
    try:
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.errors import RasterioError
    except ImportError:
        raise BirdnerfError("the orthophoto layer needs rasterio: pip install 'birdnerf[ortho]'") from None
    try:
        with rasterio.open(path) as src:
            if src.count < 3 or any(dtype != "uint8" for dtype in src.dtypes[:4]):
                raise BirdnerfError(f"not an 8-bit RGB(A) image ({src.count} bands, {src.dtypes[0]})", path)
            shrink = max(1.0, max(src.width, src.height) / max_side)
            shape = (max(1, round(src.height / shrink)), max(1, round(src.width / shrink)))
            bands = list(range(1, min(src.count, 4) + 1))
            image = src.read(bands, out_shape=(len(bands), *shape), resampling=Resampling.average)
            transform, crs, width, height = src.transform, src.crs, src.width, src.height
    except RasterioError as err:
        raise BirdnerfError(f"unreadable GeoTIFF ({err})", path) from None
    # Corners (0, 0), (W, 0), (0, H) and the centre, in raster coordinates, then in the world.
    pixels = np.array([[0, 0], [width, 0], [0, height], [width / 2, height / 2]], dtype=np.float64)
    a, b, c, d, e, f = transform[:6]
    raster_xy = pixels @ np.array([[a, d], [b, e]]) + np.array([c, f])
    xy = _to_world(path, crs, raster_xy, geo, np.asarray(load_transform, dtype=np.float64))
    along_row = np.append(xy[1] - xy[0], 0.0)
    along_col = np.append(xy[2] - xy[0], 0.0)
    x_axis = along_row / np.linalg.norm(along_row)
    y_axis = along_col - (along_col @ x_axis) * x_axis
    y_axis /= np.linalg.norm(y_axis)
    rotation = np.stack([x_axis, y_axis, np.cross(x_axis, y_axis)], axis=1)
    return OrthoLayer(
        image=np.ascontiguousarray(np.moveaxis(image, 0, -1)),
        center=np.array([xy[3, 0], xy[3, 1], ground_z]),
        wxyz=wxyz_from_rotation(rotation),
        size=(float(np.linalg.norm(along_row)), float(np.linalg.norm(along_col))),
        path=path,
    )
