"""Write a synthetic drone survey of the procedural site as a nerfstudio dataset.

Layout of a dataset directory::

    images/photo_0000.png   8-bit RGB photos (``change_0000.png`` for a changed variant)
    depth/photo_0000.npy    float32 z-depth along the camera's +z axis, metres (inf: sky)
    transforms.json         poses and intrinsics (nerfstudio), splits, world-frame extras
    points.npz              sparse surface points: ``xyz`` (M, 3) float64 metres, ``rgb`` (M, 3) uint8
    sample.json             what was generated: preset, seed, extents, altitude, overlaps

Without sparse points (``SamplePreset.write_points=False``) there is no ``points.npz`` and
``transforms.json`` references neither points nor depth maps nor the ground height, as for a
plain set of posed photos (a reader must measure the ground); the depth maps are still
written, for scoring, and ``sample.json`` says where.

The world frame is the site's: metres, z up; the ground is flat at z = 0 unless the preset's
site sets a ground height or hills. The same seed always gives byte-identical files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
from PIL import Image

from birdnerf import atomic
from birdnerf.errors import BirdnerfError
from birdnerf.progress import ProgressFn
from birdnerf.scene.camera import Camera
from birdnerf.scene.nerfstudio import write_transforms
from birdnerf.scene.scene import Scene
from birdnerf.synthetic import raycast
from birdnerf.synthetic.layout import build_site
from birdnerf.synthetic.presets import PRESETS, SamplePreset, resolve_preset
from birdnerf.synthetic.site import Site, SiteConfig
from birdnerf.synthetic.survey import SurveyConfig, photo_gain, plan_survey

__all__ = [
    "PRESETS",
    "VARIANTS",
    "SamplePreset",
    "check_output_dir",
    "generate_sample_scene",
    "resolve_preset",
]

VARIANTS = ("base", "changed")
TEST_EVERY, TEST_OFFSET = 8, 4
TRUTH_DEPTH = "depth"
"""Folder of the ground-truth depth maps, relative to the dataset."""

# Options that sample.json records only when they differ from their defaults, so the records of
# sites and surveys that leave them unset keep their form (and their bytes).
OPTIONAL_SITE = (
    "ground_z_m",
    "terrain_relief_m",
    "terrain_wavelength_m",
    "crown_lobes",
    "tower_fraction",
    "tower_height_m",
)
OPTIONAL_SURVEY = ("exposure_jitter", "white_balance_jitter")


def config_record(config: SiteConfig | SurveyConfig) -> dict:
    """The fields of a site or survey config for ``sample.json`` (optional ones only if set)."""
    optional = OPTIONAL_SITE if isinstance(config, SiteConfig) else OPTIONAL_SURVEY
    defaults = {f.name: f.default for f in fields(config)}
    return {k: v for k, v in asdict(config).items() if k not in optional or v != defaults[k]}


def generate_sample_scene(
    out_dir: str | Path,
    scene: str | SamplePreset = "small",
    seed: int = 0,
    oblique: bool = False,
    progress: ProgressFn | None = None,
    *,
    variant: str = "base",
    overwrite: bool = False,
) -> Scene:
    """Render a synthetic aerial survey into ``out_dir`` and return its :class:`Scene`.

    Args:
        out_dir: dataset directory to create; it must not exist or be empty, unless
            ``overwrite`` is set and it holds a dataset (a ``transforms.json``).
        scene: preset name (a key of ``PRESETS``) or a :class:`SamplePreset`.
        seed: non-negative seed of the site layout, textures and pose jitter.
        oblique: tilt the cameras off nadir (see :mod:`birdnerf.synthetic.survey`).
        progress: optional callback ``(done, total, info)`` called after each photo.
        variant: "base" flies the whole site; "changed" adds new buildings in the site's
            +x/+y corner and flies only that corner (same world frame, a separate dataset).
        overwrite: replace an existing dataset in ``out_dir``.

    Returns:
        The scene in the world frame (``is_world_frame=True``, ``ground_z`` the mean ground
        height under the flight, 0 for flat presets; the dataset itself omits it without points),
        with every 8th photo (index % 8 == 4) held out as "test", and with depth paths and sparse points
        unless the preset's ``write_points`` is False.

    Nothing is written under ``out_dir`` unless the whole dataset was generated: files go to
    a temporary directory beside it, which is renamed into place at the end.
    """
    preset = resolve_preset(scene)
    if variant not in VARIANTS:
        raise BirdnerfError(f"unknown variant {variant!r} (choose from {', '.join(VARIANTS)})")
    if seed < 0:
        raise BirdnerfError(f"seed must be a non-negative integer, got {seed}")
    out = Path(out_dir).absolute()
    check_output_dir(out, overwrite)
    changed = variant == "changed"
    survey = replace(preset.survey, oblique=oblique)
    site = build_site(preset.site, seed, changed=changed)
    bounds = site.change_bounds if changed and site.change_bounds else site.bounds
    # The altitude is above the mean ground under the flight.
    level = site.terrain.mean_height(bounds)
    c2w = plan_survey(survey, bounds, np.random.default_rng([seed, 1 + changed]), ground_z=level)
    prefix = "change" if changed else "photo"
    tmp = atomic.partial_dir(out)
    try:
        gain_key = [seed, 3, int(changed)]
        scene_tmp, gains = _write_dataset(
            tmp, site, survey, c2w, prefix, preset, seed, gain_key, level, progress
        )
        meta = _sample_record(preset, seed, variant, site, survey, bounds, scene_tmp, level, gains)
        atomic.write_json(tmp / "sample.json", meta)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _rerooted(scene_tmp, tmp, out)


def _sample_record(
    preset: SamplePreset,
    seed: int,
    variant: str,
    site: Site,
    survey: SurveyConfig,
    bounds: tuple[float, float, float, float],
    scene: Scene,
    level: float,
    gains: list[dict],
) -> dict:
    """What ``sample.json`` records of a generated survey (see the module's docstring)."""
    meta = {
        "format": "birdnerf-sample",
        "version": 1,
        "scene": preset.name,
        "seed": seed,
        "variant": variant,
        "site_bounds_m": list(site.bounds),
        "survey_bounds_m": list(bounds),
        "change_bounds_m": list(site.change_bounds) if site.change_bounds else None,
        "max_height_m": round(site.max_height, 3),
        "gsd_m": survey.gsd_m,
        "photos": len(scene),
        "test_photos": len(scene.indices("test")),
        "site": config_record(preset.site),
        "survey": config_record(survey),
    }
    if not site.terrain.is_flat or site.terrain.base_z != 0.0:
        meta["ground_level_m"] = level
        meta["ground_z_range_m"] = [round(v, 3) for v in _ground_range(site)]
    if gains:
        meta["photo_gains"] = gains
    if not preset.write_points:
        meta["truth_depth"] = TRUTH_DEPTH
        meta["sparse_points"] = False
    return meta


def _write_dataset(
    root: Path,
    site: Site,
    survey: SurveyConfig,
    c2w: np.ndarray,
    prefix: str,
    preset: SamplePreset,
    seed: int,
    gain_key: list[int],
    ground_z: float,
    progress: ProgressFn | None,
) -> tuple[Scene, list[dict]]:
    """Render and write the photos, depth maps, points and transforms.json.

    Returns the scene and, for surveys with exposure or white-balance jitter, one record per
    photo of its gains (else an empty list).
    """
    cam = survey.camera()
    (root / "images").mkdir()
    (root / TRUTH_DEPTH).mkdir()
    n = len(c2w)
    split = ["test" if i % TEST_EVERY == TEST_OFFSET else "train" for i in range(n)]
    images = [root / "images" / f"{prefix}_{i:04d}.png" for i in range(n)]
    depths = [root / TRUTH_DEPTH / f"{prefix}_{i:04d}.npy" for i in range(n)]
    xyz, rgb, gains = [], [], []
    for i in range(n):
        color, depth, gain = _write_photo(site, survey, c2w[i], [*gain_key, i], images[i], depths[i])
        if gain is not None:
            gains.append(gain)
        if preset.write_points and split[i] == "train":
            points, colors = _sample_points(cam, c2w[i], color, depth, preset.points_per_photo, [seed, 2, i])
            xyz.append(points)
            rgb.append(colors)
        if progress is not None:
            progress(i + 1, n, {"photo": images[i].name})
    points, colors, points_file = None, None, None
    if preset.write_points:
        points = np.concatenate(xyz) if xyz else np.zeros((0, 3))
        colors = np.concatenate(rgb) if rgb else np.zeros((0, 3), dtype=np.uint8)
        points_file = "points.npz"
        np.savez(root / points_file, xyz=points, rgb=colors)
    scene = Scene(
        root=root,
        image_paths=images,
        cameras=[cam] * n,
        c2w=c2w,
        split=split,
        points=points,
        point_colors=colors,
        depth_paths=depths if preset.write_points else None,
        ground_z=ground_z,
        is_world_frame=True,
        source="synthetic",
    )
    # Without points the dataset is posed photos alone: its ground height must be measured by
    # the reader, as for any survey, so the file does not state it.
    written = scene if preset.write_points else replace(scene, ground_z=None)
    write_transforms(written, root / "transforms.json", points_file=points_file)
    return scene, gains


def _write_photo(
    site: Site, survey: SurveyConfig, c2w: np.ndarray, gain_key: list[int], image: Path, depth_path: Path
) -> tuple[np.ndarray, np.ndarray, dict | None]:
    """Render one photo with its exposure and white balance, write it and its depth map; returns
    its colours (H, W, 3) uint8, depth (H, W) and gain record (None without jitter)."""
    jitter = photo_gain(survey, gain_key)
    gain = None if jitter is None else 2.0 ** jitter[0] * jitter[1]
    color, depth = raycast.render_photo(site, survey.camera(), c2w, survey.supersample, gain)
    Image.fromarray(color).save(image, format="PNG")
    np.save(depth_path, depth, allow_pickle=False)
    if jitter is None:
        return color, depth, None
    record = {
        "image": f"images/{image.name}",
        "log2_exposure": jitter[0],
        "white_balance": [float(v) for v in jitter[1]],
        "rgb_gain": [float(v) for v in gain],
    }
    return color, depth, record


def _ground_range(site: Site, samples: int = 97) -> tuple[float, float]:
    """Lowest and highest ground (world z, metres) over the site, on a grid."""
    xmin, ymin, xmax, ymax = site.bounds
    gx, gy = np.meshgrid(np.linspace(xmin, xmax, samples), np.linspace(ymin, ymax, samples), indexing="ij")
    h = site.ground_height(gx, gy)
    return float(h.min()), float(h.max())


def _sample_points(
    cam: Camera, c2w: np.ndarray, color: np.ndarray, depth: np.ndarray, count: int, key: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """World points (M, 3) and colours (M, 3) of ``count`` random pixels with finite depth."""
    rng = np.random.default_rng(key)
    u = rng.integers(0, cam.width, count)
    v = rng.integers(0, cam.height, count)
    z = depth[v, u].astype(np.float64)
    ok = np.isfinite(z)
    rays = np.stack([(u + 0.5 - cam.cx) / cam.fx, (v + 0.5 - cam.cy) / cam.fy, np.ones(count)], 1)
    points = c2w[:3, 3] + (rays * z[:, None]) @ c2w[:3, :3].T
    return points[ok], color[v[ok], u[ok]]


def check_output_dir(out: str | Path, overwrite: bool = False) -> None:
    """Raise :class:`BirdnerfError` unless a dataset may be written to ``out``.

    ``out`` may be missing or an empty directory; with ``overwrite``, it may also hold a
    dataset (a ``transforms.json``). Other non-empty directories are never replaced.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BirdnerfError("exists and is not a directory", out)
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise BirdnerfError("directory is not empty (use overwrite to replace a dataset there)", out)
        if not (out / "transforms.json").is_file():
            raise BirdnerfError(
                "refusing to replace a non-empty directory that holds no transforms.json", out
            )


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is moved aside first and deleted after."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _rerooted(scene: Scene, tmp: Path, out: Path) -> Scene:
    root = out.resolve()
    return replace(
        scene,
        root=root,
        image_paths=[root / p.relative_to(tmp) for p in scene.image_paths],
        depth_paths=None
        if scene.depth_paths is None
        else [root / p.relative_to(tmp) for p in scene.depth_paths],
    )
