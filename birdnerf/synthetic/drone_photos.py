"""A synthetic survey written as a drone would: JPEGs with EXIF GPS and focal length, no poses.

The input of ``birdnerf import`` from raw photos (structure from motion, georeferenced with the
GPS), where no real survey is at hand.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from birdnerf.geo import GeoPoint, enu_to_geodetic, make_exif
from birdnerf.scene.scene import Scene

SENSOR_WIDTH_MM = 6.4
"""Sensor width written to EXIF (a 1/2.3-inch drone camera): the focal length in millimetres
follows from the camera's focal length in pixels."""
DEFAULT_ORIGIN = GeoPoint(46.8, 8.2, 500.0)
"""Latitude, longitude (degrees) and altitude (metres) of the site's world origin."""


def write_drone_photos(
    scene: Scene, folder: str | Path, origin: GeoPoint = DEFAULT_ORIGIN, quality: int = 95
) -> list[Path]:
    """Save every photo of ``scene`` (world frame: ENU metres around ``origin``) as
    ``folder/<stem>.jpg`` with its true camera centre as GPS and its focal length; returns the
    paths. ``folder`` must be new."""
    folder = Path(folder)
    folder.mkdir(parents=True)
    lat, lon, alt = enu_to_geodetic(scene.centers, origin)
    paths = []
    for i, source in enumerate(scene.image_paths):
        cam = scene.cameras[i]
        gps = GeoPoint(float(lat[i]), float(lon[i]), float(alt[i]))
        exif = make_exif(
            gps, cam.fx / cam.width * SENSOR_WIDTH_MM, sensor_width_mm=SENSOR_WIDTH_MM, image_width=cam.width
        )
        path = folder / f"{Path(source).stem}.jpg"
        Image.open(source).convert("RGB").save(path, quality=quality, exif=exif)
        paths.append(path)
    return paths
