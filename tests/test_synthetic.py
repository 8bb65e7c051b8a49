"""The procedural aerial sample scene: geometry, survey, determinism, files on disk, CLI."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from birdnerf.errors import BirdnerfError
from birdnerf.scene.camera import camera_rays, pixel_centers, project
from birdnerf.scene.nerfstudio import read_transforms
from birdnerf.synthetic import (
    PRESETS,
    SamplePreset,
    SiteConfig,
    SurveyConfig,
    build_site,
    generate_sample_scene,
    ground_footprint,
    plan_survey,
    raycast,
    render_photo,
)
from birdnerf.synthetic import generate as generate_module
from birdnerf.synthetic.raycast import intersect_box, intersect_spheroid, visible_objects
from birdnerf.synthetic.site import BUILDING, SpatialIndex
from birdnerf.synthetic.survey import look_rotation

# 3 x 3 photos of 80 x 60 px over a 45 m site: same altitude and overlaps as the presets.
TINY = SamplePreset("tiny", SiteConfig(extent_m=45.0), SurveyConfig(width=80, height=60, focal_px=64.0))
ALTITUDE = TINY.survey.altitude_m


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "data"
    generate_sample_scene(out, TINY, seed=3)
    return out


@pytest.fixture(scope="session")
def small_site():
    return build_site(PRESETS["small"].site, seed=0)


def _nadir(x: float, y: float, z: float) -> np.ndarray:
    c2w = np.eye(4)
    c2w[:3, :3] = look_rotation(math.pi / 2, 0.0)
    c2w[:3, 3] = [x, y, z]
    return c2w


def _polygon_area(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _cross(a: np.ndarray, b: np.ndarray) -> float:
    return float(a[0] * b[1] - a[1] * b[0])


def _clip(subject: np.ndarray, clipper: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman: the part of convex polygon ``subject`` inside convex ``clipper``."""
    sign = 1.0 if _cross(clipper[1] - clipper[0], clipper[2] - clipper[1]) > 0 else -1.0
    out = list(subject)
    for a, b in zip(clipper, np.roll(clipper, -1, axis=0), strict=True):
        inside = [sign * _cross(b - a, p - a) >= 0 for p in out]
        new = []
        for k, p in enumerate(out):
            q, q_in = out[k - 1], inside[k - 1]
            if inside[k] != q_in:
                d, e = p - q, b - a
                t = _cross(a - q, e) / _cross(d, e)
                new.append(q + t * d)
            if inside[k]:
                new.append(p)
        out = new
    return np.array(out)


def test_presets_share_the_survey_and_scale_the_site():
    small, medium, large = (PRESETS[k] for k in ("small", "medium", "large"))
    assert small.survey == medium.survey == large.survey
    cam = small.survey.camera()
    assert (cam.width, cam.height) == (160, 120)
    assert 60.0 <= small.survey.hfov_deg <= 70.0
    n_small = len(plan_survey(small.survey, (-90, -90, 90, 90), np.random.default_rng(0)))
    assert 60 <= n_small <= 100
    assert (medium.site.extent_m / small.site.extent_m) ** 2 >= 2.25 - 1e-9
    assert (large.site.extent_m / small.site.extent_m) ** 2 >= 16.0


def test_survey_overlaps_match_the_plan():
    survey = PRESETS["small"].survey
    cam = survey.camera()
    c2w = plan_survey(survey, (-90, -90, 90, 90), np.random.default_rng(0))
    per_line = int(round(180 / survey.spacing_m[0])) + 1
    prints = [ground_footprint(cam, m) for m in c2w]
    area = _polygon_area(prints[0])
    forward = [_polygon_area(_clip(prints[i], prints[i + 1])) / area for i in range(per_line - 1)]
    # Lines alternate direction: photo i of line 0 sits beside photo (2 * per_line - 1 - i) of line 1.
    side = [_polygon_area(_clip(prints[i], prints[2 * per_line - 1 - i])) / area for i in range(per_line)]
    assert np.allclose(forward, 0.70, atol=0.08) and abs(np.mean(forward) - 0.70) < 0.02
    assert np.allclose(side, 0.60, atol=0.08) and abs(np.mean(side) - 0.60) < 0.02
    assert abs(area - math.prod(survey.footprint_m)) < 0.05 * area


def test_oblique_cameras_tilt_and_turn():
    survey = replace(PRESETS["small"].survey, oblique=True, attitude_jitter_deg=0.0)
    c2w = plan_survey(survey, (-90, -90, 90, 90), np.random.default_rng(0))
    view_z = c2w[:, :3, 2]
    tilt = np.degrees(np.arccos(-view_z[:, 2]))
    assert np.allclose(tilt, survey.oblique_tilt_deg, atol=1e-6)
    headings = np.degrees(np.arctan2(view_z[:4, 1], view_z[:4, 0])) % 360
    assert np.allclose(np.diff(headings) % 360, 90.0)
    assert np.allclose(c2w[:, 2, 0], 0.0)  # image x stays horizontal


def test_ray_box_and_spheroid_intersections_are_exact():
    o = np.array([3.0, 4.0, 50.0])
    down = np.array([0.0, 0.0, -1.0])
    assert intersect_box(o, down, np.array([3.0, 4.0, 5.0]), np.array([2.0, 1.0, 5.0]), 0.3) == pytest.approx(
        40.0
    )
    radii = np.array([2.0, 2.0, 3.0])
    assert intersect_spheroid(o, down, np.array([3.0, 4.0, 6.0]), radii) == pytest.approx(41.0)
    # A box turned by 45 degrees: (1.3, 0) is inside its rotated square, (1.3, 1.3) is not.
    half, yaw = np.array([1.0, 1.0, 1.0]), math.pi / 4
    hits = [
        intersect_box(np.array([x, y, 10.0]), down, np.zeros(3), half, yaw) for x, y in ((1.3, 0), (1.3, 1.3))
    ]
    assert hits[0] == pytest.approx(9.0) and hits[1] == np.inf
    assert intersect_spheroid(o, -down, np.array([3.0, 4.0, 6.0]), radii) == np.inf


def test_flat_ground_depth_is_the_altitude(small_site):
    empty = replace(small_site, objects=small_site.objects.select(np.zeros(0, dtype=np.int64)))
    empty.index = SpatialIndex(np.zeros((0, 3)), np.zeros((0, 3)))
    cam = TINY.survey.camera()
    rgb, depth = render_photo(empty, cam, _nadir(5.0, -7.0, ALTITUDE))
    assert rgb.shape == (60, 80, 3) and rgb.dtype == np.uint8 and depth.dtype == np.float32
    assert np.allclose(depth, ALTITUDE, atol=1e-4)
    # Textured, but not noise: neighbouring pixels are correlated.
    gray = rgb.astype(float).mean(axis=2)
    assert gray.std() > 8.0
    assert np.corrcoef(gray[:, :-1].ravel(), gray[:, 1:].ravel())[0, 1] > 0.3


def test_a_roof_is_closer_than_the_ground(small_site):
    objects = small_site.objects
    tops = np.where(objects.kind == BUILDING, objects.center[:, 2] + objects.half[:, 2], -1.0)
    k = int(np.argmax(tops))
    cam = PRESETS["small"].survey.camera()
    rgb, depth = render_photo(small_site, cam, _nadir(*objects.center[k, :2], ALTITUDE))
    assert rgb.shape == (120, 160, 3) and depth.shape == (120, 160)
    centre = depth[59:61, 79:81]
    assert np.allclose(centre, ALTITUDE - tops[k], atol=1e-3)
    assert tops[k] > 3.0 and depth.max() == pytest.approx(ALTITUDE, abs=1e-3)


def test_culling_keeps_only_objects_near_the_footprint(small_site):
    cam = PRESETS["small"].survey.camera()
    visible = visible_objects(small_site, cam, _nadir(-60.0, -60.0, ALTITUDE))
    assert 0 < len(visible) < len(small_site.objects) / 2
    lower, upper = small_site.objects.bounds()
    ks = [v[0] for v in visible]
    # A nadir photo from 60 m sees 75 m x 56 m; nothing beyond ~70 m from its centre is tested.
    centres = (lower[ks, :2] + upper[ks, :2]) / 2
    assert np.all(np.abs(centres - np.array([-60.0, -60.0])) < 80.0)


def test_spatial_index_returns_what_meets_the_rectangle():
    rng = np.random.default_rng(5)
    centre = rng.uniform(-1000, 1000, (5000, 3))
    lower, upper = centre - rng.uniform(0.5, 12, (5000, 3)), centre + rng.uniform(0.5, 12, (5000, 3))
    index = SpatialIndex(lower, upper, cell_m=32.0)
    found = index.query(100.0, -50.0, 180.0, 10.0)
    meets = np.flatnonzero(
        (lower[:, 0] <= 180) & (upper[:, 0] >= 100) & (lower[:, 1] <= 10) & (upper[:, 1] >= -50)
    )
    assert set(meets) <= set(found) and len(found) < 3 * len(meets) + 10
    assert len(index.query(5000.0, 5000.0, 5100.0, 5100.0)) == 0


def test_dataset_files_and_transforms(tiny):
    scene = read_transforms(tiny)
    assert scene.is_world_frame and scene.ground_z == 0.0 and len(scene) == 9
    assert scene.indices("test") == [4]
    assert [p.name for p in scene.image_paths][:2] == ["photo_0000.png", "photo_0001.png"]
    assert scene.points.shape[1] == 3 and scene.points.dtype == np.float64
    assert scene.point_colors.dtype == np.uint8 and len(scene.point_colors) == len(scene.points) > 300
    assert np.all(np.abs(scene.points[:, :2]) < 120) and scene.points[:, 2].min() > -1e-3
    depth = np.load(scene.depth_paths[0], allow_pickle=False)
    assert depth.shape == (60, 80) and depth.dtype == np.float32
    assert Image.open(scene.image_paths[0]).size == (80, 60)
    assert sorted(p.name for p in tiny.parent.iterdir()) == ["data"]


def test_same_seed_same_bytes_other_seed_other_images(tiny, tmp_path):
    again = generate_sample_scene(tmp_path / "again", TINY, seed=3)
    files = sorted(p.relative_to(tiny) for p in tiny.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again.root) for p in again.root.rglob("*") if p.is_file())
    assert all((tiny / f).read_bytes() == (again.root / f).read_bytes() for f in files)
    other = generate_sample_scene(tmp_path / "other", TINY, seed=4)
    assert other.image_paths[0].read_bytes() != (tiny / "images" / "photo_0000.png").read_bytes()


def test_views_agree_on_depth_and_colour(tiny):
    scene = read_transforms(tiny)
    cam = scene.cameras[0]
    i, j = 3, 4  # neighbours on the same flight line
    depth_i = np.load(scene.depth_paths[i])
    depth_j = np.load(scene.depth_paths[j])
    rgb_i = np.asarray(Image.open(scene.image_paths[i]), dtype=np.float64)
    rgb_j = np.asarray(Image.open(scene.image_paths[j]), dtype=np.float64)
    origins, dirs = camera_rays(cam, torch.from_numpy(scene.c2w[i]), pixel_centers(cam, torch.float64))
    axis = torch.from_numpy(scene.c2w[i][:3, 2])
    distance = torch.from_numpy(depth_i.astype(np.float64)) / (dirs @ axis)
    points = origins + dirs * distance[..., None]
    uv, z = project(cam, torch.from_numpy(scene.c2w[j]), points)
    uv, z = uv.numpy().reshape(-1, 2), z.numpy().ravel()
    inside = (uv[:, 0] > 1) & (uv[:, 0] < cam.width - 1) & (uv[:, 1] > 1) & (uv[:, 1] < cam.height - 1)
    assert inside.mean() > 0.4
    col, row = np.floor(uv[inside] - 0.5).astype(int).T
    fx, fy = (uv[inside] - 0.5 - np.stack([col, row], 1)).T

    def bilinear(img: np.ndarray) -> np.ndarray:
        w = [(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy]
        corners = [img[row, col], img[row, col + 1], img[row + 1, col], img[row + 1, col + 1]]
        return sum(wk.reshape(-1, *([1] * (img.ndim - 2))) * ck for wk, ck in zip(w, corners, strict=True))

    depth_err = np.abs(bilinear(depth_j) - z[inside])
    agree = depth_err < 0.05 * z[inside]
    assert agree.mean() > 0.8  # the rest is occluded in view j or sits on a depth edge
    assert np.median(depth_err) < 0.05
    colour_err = np.abs(bilinear(rgb_j) - rgb_i.reshape(-1, 3)[inside]).mean(axis=1)[agree]
    shuffled = np.abs(
        np.roll(rgb_i.reshape(-1, 3)[inside], 997, axis=0) - rgb_i.reshape(-1, 3)[inside]
    ).mean()
    assert np.median(colour_err) < 10.0 and np.median(colour_err) < 0.4 * shuffled


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    real = raycast.render_photo
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(raycast, "render_photo", flaky)
    with pytest.raises(RuntimeError, match="disk on fire"):
        generate_sample_scene(tmp_path / "out", TINY)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_replace_what_is_not_a_dataset(tmp_path, tiny):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(BirdnerfError):
            generate_sample_scene(tmp_path / "notes", TINY, overwrite=overwrite)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    with pytest.raises(BirdnerfError, match="unknown sample scene"):
        generate_sample_scene(tmp_path / "x", "enormous")
    target = tmp_path / "data"
    generate_sample_scene(target, TINY, seed=3)
    replaced = generate_sample_scene(target, TINY, seed=4, overwrite=True)
    assert replaced.image_paths[0].read_bytes() != (tiny / "images" / "photo_0000.png").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes"]


def test_changed_variant_adds_buildings_in_the_corner(tmp_path):
    config = replace(TINY.site, extent_m=90.0, change_corner_m=45.0)
    base, changed = build_site(config, seed=1), build_site(config, seed=1, changed=True)
    xmin, ymin, xmax, ymax = changed.change_bounds
    assert (xmin, ymin, xmax, ymax) == (0.0, 0.0, 45.0, 45.0)
    new = changed.objects.select(~np.isin(changed.objects.group, base.objects.group))
    new = new.select(new.kind == BUILDING)
    assert len(new) >= 1
    assert np.all((new.center[:, 0] > xmin) & (new.center[:, 1] > ymin))
    kept = set(map(tuple, changed.objects.center.round(6)))
    outside = base.objects.select(
        (base.objects.center[:, 0] < xmin - 25) | (base.objects.center[:, 1] < ymin - 25)
    )
    assert all(tuple(c) in kept for c in outside.center.round(6))
    preset = replace(TINY, site=config)
    scene = generate_sample_scene(tmp_path / "update", preset, seed=1, variant="changed")
    assert scene.image_paths[0].name == "change_0000.png"
    assert np.all((scene.centers[:, 0] > xmin - 2) & (scene.centers[:, 1] > ymin - 2))
    cam = preset.survey.camera()
    c2w = _nadir(*new.center[0, :2], ALTITUDE)
    assert render_photo(changed, cam, c2w)[1].min() < render_photo(base, cam, c2w)[1].min() - 3.0


def test_cli_writes_a_dataset_and_reports_errors(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import birdnerf_cli.sample_data  # noqa: F401
    from birdnerf_cli.main import app

    monkeypatch.setitem(generate_module.PRESETS, "tiny", TINY)
    runner = CliRunner()
    result = runner.invoke(app, ["sample-data", str(tmp_path / "cli"), "--scene", "tiny", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert read_transforms(tmp_path / "cli").is_world_frame
    result = runner.invoke(app, ["sample-data", str(tmp_path / "cli"), "--scene", "tiny"])
    assert result.exit_code == 1 and "not empty" in result.output
    result = runner.invoke(app, ["sample-data", str(tmp_path / "other"), "--scene", "huge"])
    assert result.exit_code == 1 and "unknown sample scene" in result.output
    assert "metres" in runner.invoke(app, ["sample-data", "--help"]).output
