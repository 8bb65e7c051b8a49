"""Photo metadata from EXIF and DJI XMP: GPS position, focal length, gimbal and flight angles.

GPS altitude in EXIF is usually above mean sea level, not above the WGS84 ellipsoid; the
difference (the geoid undulation) is nearly constant over a survey, so it shifts the local ENU
frame's origin height but not its shape. Focal lengths are converted to pixels of the image as
stored on disk (which may be a downscaled copy of the camera's original):

- ``FocalLengthIn35mmFilm``: ``f_px = f35 / 36 mm * max(width, height)`` (35 mm film is 36 mm wide;
  the convention of most SfM tools);
- otherwise ``FocalLength`` with the sensor width derived from ``FocalPlaneXResolution`` and the
  original image width recorded in EXIF: ``f_px = f_mm / sensor_width_mm * width``.

DJI drones also write XMP attributes (``drone-dji:GimbalPitchDegree`` ...); they are read with a
regular expression over the XMP packet, never with an XML parser.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from PIL.TiffImagePlugin import IFDRational

from birdnerf.errors import BirdnerfError
from birdnerf.geo.enu import GeoPoint

GPS_IFD, EXIF_IFD = 0x8825, 0x8769
MAKE, MODEL = 0x010F, 0x0110
FOCAL_LENGTH, FOCAL_35MM = 0x920A, 0xA405
FOCAL_PLANE_X_RES, FOCAL_PLANE_UNIT = 0xA20E, 0xA210
PIXEL_X_DIMENSION = 0xA002
FILM_WIDTH_MM = 36.0
# FocalPlaneResolutionUnit -> millimetres per unit (2: inch, 3: cm, 4: mm, 5: micrometre).
UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}
DJI_ANGLES = (
    "GimbalRollDegree",
    "GimbalYawDegree",
    "GimbalPitchDegree",
    "FlightRollDegree",
    "FlightYawDegree",
    "FlightPitchDegree",
)
DJI_NUMBERS = (
    *DJI_ANGLES,
    "RelativeAltitude",
    "AbsoluteAltitude",
    "GpsLatitude",
    "GpsLongitude",
    "GpsLongtitude",
)
XMP_SCAN_BYTES = 1 << 18  # XMP sits in an APP1 segment near the start of a JPEG
_XMP_ATTR = re.compile(rb'drone-dji:(\w+)\s*=\s*"([^"]{0,64})"')
_XMP_ELEM = re.compile(rb"<drone-dji:(\w+)>([^<]{0,64})</drone-dji:\1>")


@dataclass(frozen=True)
class PhotoMeta:
    """What a photo's header says about it.

    Attributes:
        path: the photo.
        width, height: pixel size of the image on disk.
        make, model: camera maker and model ("" when absent).
        gps: WGS84 position of the camera, or None.
        gps_has_altitude: False when EXIF gives latitude/longitude only (``gps.alt`` is then 0).
        focal_mm: physical focal length (mm), or None.
        focal_35mm: 35 mm-equivalent focal length (mm), or None.
        sensor_width_mm: sensor width derived from the focal-plane resolution, or None.
        dji: numeric DJI XMP values (degrees for angles, metres for altitudes).
    """

    path: Path
    width: int
    height: int
    make: str = ""
    model: str = ""
    gps: GeoPoint | None = None
    gps_has_altitude: bool = False
    focal_mm: float | None = None
    focal_35mm: float | None = None
    sensor_width_mm: float | None = None
    dji: dict[str, float] = field(default_factory=dict)

    @property
    def focal_px(self) -> float | None:
        """Focal length in pixels of the image on disk, or None when EXIF does not give one."""
        if self.focal_35mm:
            return self.focal_35mm / FILM_WIDTH_MM * max(self.width, self.height)
        if self.focal_mm and self.sensor_width_mm:
            return self.focal_mm / self.sensor_width_mm * self.width
        return None

    @property
    def focal_source(self) -> str:
        """Which EXIF field gave :attr:`focal_px` ("35mm", "sensor" or "none")."""
        if self.focal_35mm:
            return "35mm"
        return "sensor" if self.focal_mm and self.sensor_width_mm else "none"

    @property
    def camera_key(self) -> tuple:
        """Photos with equal keys share one set of intrinsics (same camera, size and focal)."""
        focal = None if self.focal_px is None else round(self.focal_px, 3)
        return (self.make, self.model, self.width, self.height, focal)


def _number(value: object) -> float | None:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return x if math.isfinite(x) else None


def _text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value or "").replace("\x00", "").strip()


def _degrees(dms: object, ref: object, positive: str) -> float | None:
    """Decimal degrees of an EXIF (degrees, minutes, seconds) triple and its N/S or E/W reference."""
    if not isinstance(dms, tuple) or len(dms) != 3:
        return None
    parts = [_number(v) for v in dms]
    if any(p is None for p in parts):
        return None
    d, m, s = parts
    value = d + m / 60.0 + s / 3600.0  # type: ignore[operator]
    return value if _text(ref).upper() in ("", positive) else -value


def _gps(gps_ifd: dict, dji: dict[str, float]) -> tuple[GeoPoint | None, bool]:
    lat = _degrees(gps_ifd.get(2), gps_ifd.get(1), "N")
    lon = _degrees(gps_ifd.get(4), gps_ifd.get(3), "E")
    if lat is None or lon is None:
        lat, lon = dji.get("GpsLatitude"), dji.get("GpsLongitude", dji.get("GpsLongtitude"))
    if lat is None or lon is None or not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return None, False
    if lat == 0.0 and lon == 0.0:  # receivers without a fix write zeros
        return None, False
    alt = _number(gps_ifd.get(6))
    if alt is not None and gps_ifd.get(5) in (1, b"\x01", "\x01"):
        alt = -alt  # AltitudeRef 1: below sea level
    if alt is None:
        alt = dji.get("AbsoluteAltitude")
    return GeoPoint(lat, lon, alt if alt is not None else 0.0), alt is not None


def read_dji_xmp(path: str | Path) -> dict[str, float]:
    """Numeric ``drone-dji:`` XMP values of a photo (empty when it has none)."""
    with open(path, "rb") as f:
        head = f.read(XMP_SCAN_BYTES)
    start = head.find(b"<x:xmpmeta")
    if start < 0:
        return {}
    end = head.find(b"</x:xmpmeta>", start)
    packet = head[start : end if end > 0 else len(head)]
    values: dict[str, float] = {}
    for pattern in (_XMP_ATTR, _XMP_ELEM):
        for name, raw in pattern.findall(packet):
            key = name.decode("ascii", "replace")
            number = _number(raw.decode("ascii", "replace").strip())
            if key in DJI_NUMBERS and number is not None:
                values.setdefault(key, number)
    return values


def read_photo_meta(path: str | Path) -> PhotoMeta:
    """Read a photo's size, camera, GPS and focal length from its header (pixels are not decoded).

    Raises:
        BirdnerfError: naming the photo, when it is missing or not an image Pillow can open.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            width, height = im.size
            exif = im.getexif()
            gps_ifd = dict(exif.get_ifd(GPS_IFD))
            exif_ifd = dict(exif.get_ifd(EXIF_IFD))
    except FileNotFoundError:
        raise BirdnerfError("photo not found", path) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise BirdnerfError(f"unreadable image ({err})", path) from None
    dji = read_dji_xmp(path)
    gps, has_alt = _gps(gps_ifd, dji)
    focal_mm = _number(exif_ifd.get(FOCAL_LENGTH))
    focal_35 = _number(exif_ifd.get(FOCAL_35MM))
    sensor_width = None
    x_res, unit = _number(exif_ifd.get(FOCAL_PLANE_X_RES)), exif_ifd.get(FOCAL_PLANE_UNIT, 2)
    original_width = _number(exif_ifd.get(PIXEL_X_DIMENSION)) or float(width)
    if x_res and x_res > 0 and unit in UNIT_MM:
        sensor_width = original_width / x_res * UNIT_MM[unit]
    return PhotoMeta(
        path=path,
        width=width,
        height=height,
        make=_text(exif.get(MAKE)),
        model=_text(exif.get(MODEL)),
        gps=gps,
        gps_has_altitude=has_alt,
        focal_mm=focal_mm if focal_mm and focal_mm > 0 else None,
        focal_35mm=focal_35 if focal_35 and focal_35 > 0 else None,
        sensor_width_mm=sensor_width if sensor_width and sensor_width > 0 else None,
        dji=dji,
    )


def _rational(value: float, precision: int = 10_000) -> IFDRational:
    frac = Fraction(value).limit_denominator(precision)
    return IFDRational(frac.numerator, frac.denominator)


def _dms(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60.0)
    seconds = (value - degrees - minutes / 60.0) * 3600.0
    return _rational(degrees, 1), _rational(minutes, 1), _rational(seconds)


def make_exif(
    gps: GeoPoint | None = None,
    focal_mm: float | None = None,
    focal_35mm: float | None = None,
    make: str = "",
    model: str = "",
    sensor_width_mm: float | None = None,
    image_width: int | None = None,
) -> Image.Exif:
    """An EXIF block with GPS (degrees, minutes, seconds to 1e-4 s: ~3 mm) and focal lengths.

    ``sensor_width_mm`` with ``image_width`` (pixels) records the focal-plane resolution, so that
    ``focal_mm`` converts to pixels exactly. Pass the result to ``PIL.Image.save(..., exif=...)``;
    :func:`read_photo_meta` reads it back.
    """
    exif = Image.Exif()
    if make:
        exif[MAKE] = make
    if model:
        exif[MODEL] = model
    if gps is not None:
        exif[GPS_IFD] = {
            0: b"\x02\x03\x00\x00",
            1: "N" if gps.lat >= 0 else "S",
            2: _dms(gps.lat),
            3: "E" if gps.lon >= 0 else "W",
            4: _dms(gps.lon),
            5: b"\x00" if gps.alt >= 0 else b"\x01",
            6: _rational(abs(gps.alt), 1000),
        }
    sub: dict[int, object] = {}
    if focal_mm:
        sub[FOCAL_LENGTH] = _rational(focal_mm, 1000)
    if focal_35mm:
        sub[FOCAL_35MM] = int(round(focal_35mm))
    if sensor_width_mm and image_width:
        sub[FOCAL_PLANE_X_RES] = _rational(image_width / sensor_width_mm, 1_000_000)
        sub[FOCAL_PLANE_UNIT] = 4
        sub[PIXEL_X_DIMENSION] = int(image_width)
    if sub:
        exif[EXIF_IFD] = sub
    return exif
