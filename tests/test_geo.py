"""Geodesy, similarity alignment, EXIF/XMP GPS and georeferencing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from birdnerf.errors import BirdnerfError
from birdnerf.geo import (
    GeoPoint,
    apply_gps_fit,
    ecef_to_geodetic,
    enu_to_geodetic,
    fit_gps,
    geodetic_to_ecef,
    geodetic_to_enu,
    make_exif,
    mean_origin,
    read_photo_meta,
    spread_ratio,
    umeyama,
)
from birdnerf.geo.enu import WGS84_A, WGS84_B, WGS84_E2
from birdnerf.ingest.pairs import look_points, select_pairs
from birdnerf.scene.colmap_model import rotmat_from_qvec
from tests.surveys import lawnmower

ORIGIN = GeoPoint(46.8426, -91.9940, 198.5)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    return rotmat_from_qvec(q / np.linalg.norm(q))


def test_ecef_of_known_points():
    np.testing.assert_allclose(geodetic_to_ecef(0.0, 0.0, 0.0), [WGS84_A, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(geodetic_to_ecef(0.0, 90.0, 10.0), [0.0, WGS84_A + 10.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(geodetic_to_ecef(90.0, 0.0, 0.0), [0.0, 0.0, WGS84_B], atol=1e-6)


def test_ecef_round_trip():
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-89.9, 89.9, 200), rng.uniform(-180, 180, 200)
    alt = rng.uniform(-500, 9000, 200)
    lat2, lon2, alt2 = ecef_to_geodetic(geodetic_to_ecef(lat, lon, alt))
    np.testing.assert_allclose(lat2, lat, atol=1e-10)
    np.testing.assert_allclose(lon2, lon, atol=1e-10)
    np.testing.assert_allclose(alt2, alt, atol=1e-5)


def test_enu_axes_are_east_north_up():
    lat = math.radians(ORIGIN.lat)
    # Radii of curvature at the origin's height: meridian (north-south), prime vertical (east-west).
    m = WGS84_A * (1 - WGS84_E2) / (1 - WGS84_E2 * math.sin(lat) ** 2) ** 1.5 + ORIGIN.alt
    n = WGS84_A / math.sqrt(1 - WGS84_E2 * math.sin(lat) ** 2) + ORIGIN.alt
    north = geodetic_to_enu(ORIGIN.lat + math.degrees(100.0 / m), ORIGIN.lon, ORIGIN.alt, ORIGIN)
    east = geodetic_to_enu(
        ORIGIN.lat, ORIGIN.lon + math.degrees(100.0 / (n * math.cos(lat))), ORIGIN.alt, ORIGIN
    )
    up = geodetic_to_enu(ORIGIN.lat, ORIGIN.lon, ORIGIN.alt + 25.0, ORIGIN)
    np.testing.assert_allclose(north[:2], [0.0, 100.0], atol=1e-4)
    # A parallel curves north of the east axis by x^2 tan(lat) / 2N (0.8 mm here).
    np.testing.assert_allclose(east[:2], [100.0, 100.0**2 * math.tan(lat) / (2 * n)], atol=1e-5)
    # 100 m away the tangent plane is ~0.8 mm above the ellipsoid surface.
    assert -2e-3 < north[2] < 0 and -2e-3 < east[2] < 0
    np.testing.assert_allclose(up, [0.0, 0.0, 25.0], atol=1e-6)


def test_enu_round_trip_and_mean_origin():
    rng = np.random.default_rng(1)
    enu = rng.uniform(-500, 500, (50, 3))
    lat, lon, alt = enu_to_geodetic(enu, ORIGIN)
    np.testing.assert_allclose(geodetic_to_enu(lat, lon, alt, ORIGIN), enu, atol=1e-6)
    centre = mean_origin(lat, lon, alt)
    mean_enu = geodetic_to_enu(centre.lat, centre.lon, centre.alt, ORIGIN)
    np.testing.assert_allclose(mean_enu, enu.mean(axis=0), atol=0.05)  # curvature over 1 km


def test_umeyama_recovers_a_known_similarity():
    rng = np.random.default_rng(2)
    src = rng.normal(size=(30, 3)) * [50, 40, 3]  # a flat, survey-like layout
    rot, scale, shift = random_rotation(rng), 3.7, np.array([100.0, -20.0, 5.0])
    dst = scale * src @ rot.T + shift
    sim = umeyama(src, dst)
    assert sim.scale == pytest.approx(scale, rel=1e-12)
    np.testing.assert_allclose(sim.rotation, rot, atol=1e-12)
    np.testing.assert_allclose(sim.translation, shift, atol=1e-9)
    assert sim.rms < 1e-9 and np.linalg.det(sim.rotation) == pytest.approx(1.0)
    np.testing.assert_allclose(sim.apply(src), dst, atol=1e-9)
    np.testing.assert_allclose((sim.matrix @ np.c_[src, np.ones(30)].T).T[:, :3], dst, atol=1e-9)


def test_umeyama_residual_measures_noise_and_refuses_degenerate_input():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(400, 3)) * 30
    noise = rng.normal(scale=0.5, size=src.shape)
    sim = umeyama(src, 2.0 * src + noise)
    assert sim.scale == pytest.approx(2.0, rel=1e-3)
    assert sim.rms == pytest.approx(0.5 * math.sqrt(3), rel=0.1)  # 3D distance of N(0, 0.5) noise
    assert umeyama(src, src + 1.0, with_scale=False).scale == 1.0
    with pytest.raises(ValueError):
        umeyama(src[:2], src[:2])
    with pytest.raises(ValueError):
        umeyama(np.zeros((5, 3)), src[:5])
    line = np.outer(np.arange(10.0), [1.0, 2.0, 0.5])
    assert spread_ratio(line) < 1e-9 and spread_ratio(src) > 0.5


def test_exif_gps_and_focal_round_trip(tmp_path: Path):
    path = tmp_path / "south_west.jpg"
    gps = GeoPoint(-33.8567844, -151.2152967, -12.25)
    exif = make_exif(gps, focal_mm=4.5, focal_35mm=24, make="DJI", model="FC6310")
    Image.new("RGB", (120, 90), (10, 20, 30)).save(path, exif=exif)
    meta = read_photo_meta(path)
    assert (meta.width, meta.height, meta.make, meta.model) == (120, 90, "DJI", "FC6310")
    assert meta.gps is not None and meta.gps_has_altitude
    assert meta.gps.lat == pytest.approx(gps.lat, abs=1e-7)  # ~1 cm
    assert meta.gps.lon == pytest.approx(gps.lon, abs=1e-7)
    assert meta.gps.alt == pytest.approx(gps.alt, abs=1e-3)
    assert meta.focal_source == "35mm" and meta.focal_px == pytest.approx(24 / 36 * 120)


def test_focal_from_sensor_width_and_missing_exif(tmp_path: Path):
    path = tmp_path / "sensor.jpg"
    exif = make_exif(focal_mm=8.8, sensor_width_mm=13.2, image_width=5472)
    # A copy downscaled from 5472 px: the focal length in pixels follows the stored width.
    Image.new("RGB", (684, 456)).save(path, exif=exif)
    meta = read_photo_meta(path)
    assert meta.focal_source == "sensor" and meta.gps is None
    assert meta.focal_px == pytest.approx(8.8 / 13.2 * 684, rel=1e-5)
    bare = tmp_path / "bare.png"
    Image.new("RGB", (10, 8)).save(bare)
    meta = read_photo_meta(bare)
    assert meta.gps is None and meta.focal_px is None and meta.focal_source == "none"
    (tmp_path / "junk.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(BirdnerfError, match="junk.jpg"):
        read_photo_meta(tmp_path / "junk.jpg")


def write_with_xmp(path: Path, xmp: str, exif: Image.Exif | None = None) -> None:
    """A JPEG with an XMP APP1 segment right after the start-of-image marker, as DJI writes it."""
    Image.new("RGB", (16, 12)).save(path, exif=exif or Image.Exif())
    data = path.read_bytes()
    payload = b"http://ns.adobe.com/xap/1.0/\x00" + xmp.encode()
    segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    path.write_bytes(data[:2] + segment + data[2:])


def test_dji_xmp_angles_and_gps_fallback(tmp_path: Path):
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description '
        'drone-dji:GimbalPitchDegree="-45.50" drone-dji:GimbalYawDegree="+90.0" '
        'drone-dji:RelativeAltitude="+60.00" drone-dji:GpsLatitude="46.5" drone-dji:GpsLongtitude="8.25">'
        "<drone-dji:FlightYawDegree>12.5</drone-dji:FlightYawDegree>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    path = tmp_path / "dji.jpg"
    write_with_xmp(path, xmp)
    meta = read_photo_meta(path)
    assert meta.dji["GimbalPitchDegree"] == -45.5 and meta.dji["GimbalYawDegree"] == 90.0
    assert meta.dji["FlightYawDegree"] == 12.5 and meta.dji["RelativeAltitude"] == 60.0
    assert meta.gps == GeoPoint(46.5, 8.25, 0.0) and not meta.gps_has_altitude
    # An oblique photo looking east from 60 m at 45.5 degrees down sees the ground ~58.9 m east.
    nadir = tmp_path / "nadir.jpg"
    Image.new("RGB", (16, 12)).save(nadir, exif=make_exif(GeoPoint(46.5, 8.25, 0.0)))
    points = look_points([meta, read_photo_meta(nadir)])
    assert points[0, 0] - points[1, 0] == pytest.approx(60 / math.tan(math.radians(45.5)), abs=0.01)
    assert points[0, 1] - points[1, 1] == pytest.approx(0.0, abs=0.01)


def test_select_pairs_uses_gps_neighbours_and_name_order():
    names = [f"p{i:03d}.jpg" for i in range(60)]
    points = np.array([[10.0 * (i % 10), 10.0 * (i // 10)] for i in range(60)])
    points[50:] = np.nan  # the last row of photos has no GPS
    pairs = select_pairs(names, points, neighbors=4)
    assert all(i < j for i, j in pairs) and len(set(pairs)) == len(pairs)
    partners = {i: {j for a, b in pairs for j in (a, b) if i in (a, b) and j != i} for i in range(60)}
    assert {1, 10} <= partners[0] and 55 not in partners[0]  # grid neighbours, not far photos
    assert partners[55] >= {53, 54, 56, 57}  # no GPS: neighbours in name order
    assert len(select_pairs(names[:5], points[:5], neighbors=2)) == 10  # small sets: every pair


def georeferenced_survey(rng: np.random.Generator):
    """A 6x5 lawnmower in ENU metres, moved by a random similarity into an arbitrary 'SfM' frame."""
    truth = lawnmower(nx=6, ny=5, spacing=15.0, altitude=60.0)
    truth.points = np.c_[rng.uniform(-10, 90, (200, 2)), rng.normal(0, 0.05, 200)]
    gauge = np.eye(4)
    gauge[:3, :3] = 0.13 * random_rotation(rng)
    gauge[:3, 3] = [3.0, -1.0, 7.0]
    sfm = truth.transformed(gauge)
    lat, lon, alt = enu_to_geodetic(truth.centers, ORIGIN)
    gps = [GeoPoint(float(a), float(b), float(c)) for a, b, c in zip(lat, lon, alt, strict=True)]
    return truth, sfm, gps


def test_fit_gps_moves_a_reconstruction_into_enu_metres():
    rng = np.random.default_rng(4)
    truth, sfm, gps = georeferenced_survey(rng)
    gps[3] = None  # photos without GPS are transformed with the others
    fit = fit_gps(sfm, gps)
    assert fit.ok and fit.rms_m < 1e-4 and len(fit.used) == len(sfm) - 1
    assert max(fit.rms_split_m(sfm)) < 1e-4
    world, ground_source = apply_gps_fit(sfm, fit)
    assert world.is_world_frame and ground_source == "sparse_points"
    lat, lon, alt = enu_to_geodetic(truth.centers, ORIGIN)
    np.testing.assert_allclose(world.centers, geodetic_to_enu(lat, lon, alt, fit.origin), atol=1e-3)
    # Tangent planes 40 m apart differ by 40 m / 6400 km = 6e-6 rad.
    np.testing.assert_allclose(world.c2w[:, :3, :3], truth.c2w[:, :3, :3], atol=1e-4)
    origin_enu = geodetic_to_enu(ORIGIN.lat, ORIGIN.lon, ORIGIN.alt, fit.origin)
    assert world.ground_z == pytest.approx(origin_enu[2], abs=0.1)
    assert world.geo["lat"] == fit.origin.lat and world.geo["frame"] == "ENU"
    np.testing.assert_allclose(world.world_from_input, fit.similarity.matrix @ sfm.world_from_input)


def test_fit_gps_says_why_it_cannot_georeference():
    rng = np.random.default_rng(5)
    _, sfm, gps = georeferenced_survey(rng)
    assert "no photo" in fit_gps(sfm, [None] * len(sfm)).reason
    sparse = [g if i < 4 else None for i, g in enumerate(gps)]
    assert "only 4 of 30 photos" in fit_gps(sfm, sparse).reason
    line = [g if i < 6 else None for i, g in enumerate(gps)]  # one flight line
    assert "straight line" in fit_gps(sfm, line, min_fraction=0.0).reason
    shuffled = [gps[i] for i in rng.permutation(len(gps))]
    fit = fit_gps(sfm, shuffled)
    assert not fit.ok and "disagrees" in fit.reason
    with pytest.raises(ValueError):
        apply_gps_fit(sfm, fit)
