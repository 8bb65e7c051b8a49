"""The hilly sample scene: terrain, towers, lobed crowns, exposure, datasets without points."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from birdnerf.scene.camera import project
from birdnerf.scene.load import load_dataset
from birdnerf.synthetic import (
    PRESETS,
    SamplePreset,
    above_ground_mask,
    build_site,
    generate_sample_scene,
    load_site,
    plan_survey,
    raycast,
    render_photo,
    world_points,
)
from birdnerf.synthetic import generate as generate_module
from birdnerf.synthetic.site import BUILDING, CANOPY, GROUND, TRUNK, SpatialIndex
from tests.test_synthetic import ALTITUDE, TINY, _nadir


@pytest.fixture(scope="module")
def small_site():
    return build_site(PRESETS["small"].site, seed=0)


# A small hilly site: the hills preset's options (ground near z = 37 m, towers, lobed crowns,
# exposure and white balance) over 60 m, with hills of 4 m over a 60 m wavelength, 60 x 45 px.
TINY_HILLS = SamplePreset(
    "tiny-hills",
    replace(
        PRESETS["hills"].site,
        extent_m=60.0,
        terrain_relief_m=4.0,
        terrain_wavelength_m=60.0,
        change_corner_m=30.0,
    ),
    replace(PRESETS["hills"].survey, width=60, height=45, focal_px=48.0),
)


@pytest.fixture(scope="session")
def tiny_hills(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hills") / "data"
    generate_sample_scene(out, TINY_HILLS, seed=5)
    return out


def _ground_hits(site, cam, c2w) -> np.ndarray:
    return raycast.cast(site, cam, c2w)[3] == GROUND


def test_default_options_leave_flat_sites_alone(small_site):
    assert PRESETS["small"].site.terrain_relief_m == 0.0 and PRESETS["small"].site.ground_z_m == 0.0
    assert small_site.terrain.is_flat and small_site.max_height < 40.0
    # Towers and lobed crowns draw from their own streams: the rest of the layout stays put.
    config = replace(TINY.site, extent_m=90.0)
    plain = build_site(config, seed=2).objects
    towers = build_site(replace(config, tower_fraction=0.5), seed=2).objects
    lobed = build_site(replace(config, crown_lobes=3), seed=2).objects
    assert np.array_equal(plain.center[:, :2], towers.center[:, :2])
    assert (towers.half[:, 2] > plain.half[:, 2]).any()
    trunks = lobed.select(lobed.kind == TRUNK)
    assert np.array_equal(plain.select(plain.kind == TRUNK).center, trunks.center)
    assert (lobed.kind == CANOPY).sum() == 3 * len(trunks)
    # Flat ground at another height: the flight follows it, so the depth is still the altitude.
    raised = build_site(replace(config, ground_z_m=37.0), seed=2)
    empty = replace(raised, objects=raised.objects.select(np.zeros(0, dtype=np.int64)))
    empty.index = SpatialIndex(np.zeros((0, 3)), np.zeros((0, 3)))
    depth = render_photo(empty, TINY.survey.camera(), _nadir(5.0, -7.0, 37.0 + ALTITUDE))[1]
    assert np.all(depth == np.float32(ALTITUDE))


def test_terrain_rays_meet_the_height_field():
    site = build_site(PRESETS["hills"].site, seed=1)
    terrain = site.terrain
    g = np.linspace(-90, 90, 181)  # the site
    gx, gy = np.meshgrid(g, g, indexing="ij")
    assert np.hypot(*terrain.gradient(gx, gy)).max() < 0.26
    h = site.ground_height(gx, gy)
    assert abs(h.mean() - 37.0) < 0.1 and h.max() - h.min() == pytest.approx(12.0, abs=0.5)
    n = site.ground_normal(gx, gy)
    assert n.shape == (181, 181, 3) and np.allclose(np.linalg.norm(n, axis=-1), 1.0)
    objects, config = site.objects, site.config
    heights = (objects.center[:, 2] + objects.half[:, 2] - objects.ground)[objects.kind == BUILDING]
    assert config.max_building_height_m + 3.0 < heights.max() <= config.tower_height_m
    rng = np.random.default_rng(0)
    tilt, azimuth = rng.uniform(0, np.radians(86.0), 20000), rng.uniform(0, 2 * np.pi, 20000)
    d = np.stack([np.sin(tilt) * np.cos(azimuth), np.sin(tilt) * np.sin(azimuth), -np.cos(tilt)])
    o = np.array([4.0, -3.0, 97.0])
    t = terrain.intersect(o, d)
    assert np.all(np.isfinite(t))
    p = o[:, None] + d * t
    assert np.abs(p[2] - site.ground_height(p[0], p[1])).max() < 0.01
    # It is the first hit: no point of the ray before it lies under the ground.
    s = np.linspace(0.0, 0.999, 200)[:, None] * t[:2000]
    before = o[:, None, None] + d[:, None, :2000] * s
    assert np.all(before[2] >= site.ground_height(before[0], before[1]) - 1e-9)
    up = np.array([[1.0, 0.0, 0.3], [0.2, 1.0, 0.0]]).T
    assert np.all(terrain.intersect(o, up) == np.inf)


def test_hills_depth_lands_on_the_terrain_and_objects_stand_on_it(tiny_hills):
    site = load_site(tiny_hills)
    scene = load_dataset(tiny_hills)
    assert scene.ground_z == pytest.approx(37.0, abs=0.05)
    cam = scene.cameras[0]
    ground_points = []
    for i in (0, 5, len(scene) - 1):
        depth = np.load(scene.depth_paths[i])
        p = world_points(cam, scene.c2w[i], depth)[_ground_hits(site, cam, scene.c2w[i])]
        assert len(p) > 0.3 * depth.size
        assert np.abs(p[:, 2] - site.ground_height(p[:, 0], p[:, 1])).max() < 0.01
        ground_points.append(p)
    z = np.concatenate(ground_points)[:, 2]
    assert z.min() > 30.0 and z.max() - z.min() > 1.0
    # Oblique views too, and the altitude is above the mean ground.
    level = site.terrain.mean_height(site.bounds)
    c2w = plan_survey(replace(TINY_HILLS.survey, oblique=True), site.bounds, np.random.default_rng(0), level)
    assert abs(c2w[:, 2, 3].mean() - (level + ALTITUDE)) < 0.5
    depth = render_photo(site, cam, c2w[1], supersample=1)[1]
    p = world_points(cam, c2w[1], depth)[_ground_hits(site, cam, c2w[1])]
    assert np.abs(p[:, 2] - site.ground_height(p[:, 0], p[:, 1])).max() < 0.01
    # Every building's lowest level and every trunk reaches down to the ground under it.
    objects = site.objects
    base = objects.center[:, 2] - objects.half[:, 2]
    grounded = np.flatnonzero(
        (objects.kind == TRUNK) | ((objects.kind == BUILDING) & (base == objects.ground))
    )
    assert len(grounded) > 10 and (objects.kind[grounded] == BUILDING).any()
    u = np.linspace(-1.0, 1.0, 9)
    for k in grounded:
        lx, ly = (a.ravel() for a in np.meshgrid(u * objects.half[k, 0], u * objects.half[k, 1]))
        c, s = np.cos(objects.yaw[k]), np.sin(objects.yaw[k])
        x, y = objects.center[k, 0] + c * lx - s * ly, objects.center[k, 1] + s * lx + c * ly
        assert base[k] <= site.ground_height(x, y).min() + 1e-9


def test_changed_hills_stand_on_the_terrain():
    base = build_site(TINY_HILLS.site, seed=5)
    changed = build_site(TINY_HILLS.site, seed=5, changed=True)
    new = changed.objects.select(~np.isin(changed.objects.group, base.objects.group))
    assert len(new) >= 1 and np.all(new.kind == BUILDING)
    for k in range(len(new)):
        bottom = new.center[k, 2] - new.half[k, 2]
        corners = new.center[k, :2] + np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]]) * new.half[k, :2]
        under = changed.ground_height(corners[:, 0], corners[:, 1])
        assert bottom <= under.min() + 1e-9 and bottom > under.min() - 1.0


def test_exposure_and_white_balance_are_per_photo_and_recorded(tiny_hills, tmp_path):
    meta = json.loads((tiny_hills / "sample.json").read_text())
    gains = meta["photo_gains"]
    scene = load_dataset(tiny_hills)
    assert len(gains) == len(scene) and gains[0]["image"] == "images/photo_0000.png"
    rgb_gain = np.array([g["rgb_gain"] for g in gains])
    exposure = np.array([g["log2_exposure"] for g in gains])
    assert np.allclose(rgb_gain, 2.0 ** exposure[:, None] * np.array([g["white_balance"] for g in gains]))
    assert 0.02 < exposure.std() < 0.2 and len(np.unique(rgb_gain[:, 0])) == len(scene)
    # The same survey without jitter: each photo is the plain one times its recorded gains.
    plain_preset = replace(
        TINY_HILLS, survey=replace(TINY_HILLS.survey, exposure_jitter=0.0, white_balance_jitter=0.0)
    )
    plain = generate_sample_scene(tmp_path / "plain", plain_preset, seed=5)
    assert "photo_gains" not in json.loads((plain.root / "sample.json").read_text())
    for i in (0, 1):
        jittered = np.asarray(Image.open(scene.image_paths[i]), dtype=np.float64)
        flat = np.asarray(Image.open(plain.image_paths[i]), dtype=np.float64)
        expected = flat * rgb_gain[i]
        ok = (flat < 255.0) & (expected < 254.5)  # neither clipped
        assert np.abs(jittered - expected)[ok].max() < 0.5 * rgb_gain[i].max() + 0.51
    # So two photos of one surface point differ by the ratio of their gains.
    i, j = 0, 1
    depth_i = np.load(scene.depth_paths[i])
    cam = scene.cameras[i]
    p = world_points(cam, scene.c2w[i], depth_i).reshape(-1, 3)
    uv, z = project(cam, torch.from_numpy(scene.c2w[j]), torch.from_numpy(p))
    uv = uv.numpy()
    inside = (uv[:, 0] > 0) & (uv[:, 0] < cam.width) & (uv[:, 1] > 0) & (uv[:, 1] < cam.height)
    depth_j = np.load(scene.depth_paths[j])
    col, row = np.floor(uv[inside]).astype(int).T
    visible = np.abs(depth_j[row, col] - z.numpy()[inside]) < 0.02 * z.numpy()[inside]
    rgb_i = np.asarray(Image.open(scene.image_paths[i]), dtype=np.float64).reshape(-1, 3)[inside][visible]
    rgb_j = np.asarray(Image.open(scene.image_paths[j]), dtype=np.float64)[row[visible], col[visible]]
    ratio = np.median(rgb_j, axis=0) / np.median(rgb_i, axis=0)
    assert visible.sum() > 500
    assert np.allclose(ratio, rgb_gain[j] / rgb_gain[i], rtol=0.04)


def test_hills_dataset_is_deterministic(tiny_hills, tmp_path):
    again = generate_sample_scene(tmp_path / "again", TINY_HILLS, seed=5)
    files = sorted(p.relative_to(tiny_hills) for p in tiny_hills.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again.root) for p in again.root.rglob("*") if p.is_file())
    assert all((tiny_hills / f).read_bytes() == (again.root / f).read_bytes() for f in files)


def test_above_ground_mask_marks_roofs_not_terrain(tiny_hills):
    site = load_site(tiny_hills)
    objects = site.objects
    tops = np.where(objects.kind == BUILDING, objects.center[:, 2] + objects.half[:, 2], -np.inf)
    k = int(np.argmax(tops))
    cam = TINY_HILLS.survey.camera()
    c2w = _nadir(*objects.center[k, :2], tops[k] + 30.0)
    depth = render_photo(site, cam, c2w, supersample=1)[1]
    mask = above_ground_mask(site, cam, c2w, depth)
    assert mask.shape == depth.shape and mask.dtype == bool
    assert mask[21:24, 28:32].all()  # the roof under the camera
    ground = _ground_hits(site, cam, c2w)
    assert ground.any() and not mask[ground].any()
    assert not above_ground_mask(site, cam, c2w, np.full_like(depth, np.inf)).any()


def test_cli_hills_and_no_points(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import birdnerf_cli.sample_data  # noqa: F401
    from birdnerf_cli.main import app

    monkeypatch.setitem(generate_module.PRESETS, "tiny", TINY)
    monkeypatch.setitem(generate_module.PRESETS, "hills", TINY_HILLS)
    runner = CliRunner()
    out = tmp_path / "plain"
    result = runner.invoke(app, ["sample-data", str(out), "--scene", "tiny", "--no-points"])
    assert result.exit_code == 0, result.output
    assert "no sparse points" in " ".join(result.output.split())
    meta = json.loads((out / "transforms.json").read_text())
    assert "points_file" not in meta.get("birdnerf", {})
    assert not any("depth_file_path" in f for f in meta["frames"])
    assert not (out / "points.npz").exists()
    scene = load_dataset(out)
    assert scene.points is None and scene.depth_paths is None
    assert len(list((out / "depth").glob("*.npy"))) == len(scene)
    sample = json.loads((out / "sample.json").read_text())
    assert sample["truth_depth"] == "depth" and sample["sparse_points"] is False
    result = runner.invoke(app, ["sample-data", str(tmp_path / "hills"), "--scene", "hills"])
    assert result.exit_code == 0, result.output
    assert load_dataset(tmp_path / "hills").points is not None
    assert load_site(tmp_path / "hills").terrain.base_z > 30.0
    help_text = " ".join(runner.invoke(app, ["sample-data", "--help"]).output.split())
    assert "hills" in help_text and "--no-points" in help_text and "flat ground at z = 0" not in help_text
