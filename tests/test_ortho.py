"""``birdnerf ortho``: COG layout and georeferencing, the compositor's twin, accuracy against the
generator's exact surface, the tile cache, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from typer.testing import CliRunner

from birdnerf.composite import BlendIndex, BlockCache, OrthoRays, render_rays_view
from birdnerf.ortho import OrthoConfig, render_ortho
from birdnerf.ortho.grid import Window
from birdnerf.ortho.mosaic import TileSource, blend_window
from birdnerf.ortho.tiles import load_tile
from birdnerf.ortho.truth import true_ortho
from birdnerf.partition import read_partition
from birdnerf.synthetic.site import BUILDING
from birdnerf.synthetic.truth import load_site
from birdnerf_cli.main import app

rasterio = pytest.importorskip("rasterio")


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def raster_rays(result, z_top: float) -> OrthoRays:
    """The result's raster as the compositor's orthographic ray source."""
    meta = json.loads(result.sidecar.read_text())
    x0, _, _, y1 = meta["world_bounds"]
    return OrthoRays(x0, y1, result.gsd, result.width, result.height, z_top)


@pytest.fixture(scope="module")
def split_ortho(mini_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("ortho") / "ortho"
    return render_ortho(mini_runs["split"], OrthoConfig(out_dir=out))


@pytest.fixture(scope="module")
def truth(split_ortho, mini_dataset):
    site = load_site(mini_dataset)
    return site, true_ortho(site, raster_rays(split_ortho, site.max_height + 5.0))


def test_cogs_in_the_runs_frame(split_ortho, mini_runs):
    result = split_ortho
    partition = read_partition(mini_runs["split"])
    cores = np.array([b.core for b in partition.blocks])
    assert result.frame == "run world frame" and sorted(result.rendered) == ["r00c00", "r00c01"]
    for path, bands, dtype in ((result.orthophoto, 4, "uint8"), (result.dsm, 1, "float32")):
        with rasterio.open(path) as ds:
            assert "birdnerf run world frame" in ds.crs.to_wkt()
            size = (result.width, result.height, bands, dtype)
            assert (ds.width, ds.height, ds.count, ds.dtypes[0]) == size
            t = ds.transform
            assert (t.a, t.b, t.d, t.e) == (result.gsd, 0.0, 0.0, -result.gsd)
            # The raster covers the cores, on cells anchored at the world origin.
            assert t.c <= cores[:, 0].min() < t.c + result.gsd and t.c / result.gsd == round(t.c / result.gsd)
            assert t.f >= cores[:, 3].max() > t.f - result.gsd
            assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            assert ds.compression.name.lower() == "deflate"
            assert ds.profile["tiled"] and ds.block_shapes[0] == (256, 256)
            assert ds.overviews(1), "no overviews"
    with rasterio.open(result.orthophoto) as ds:
        assert ds.colorinterp[3].name == "alpha"
    with rasterio.open(result.dsm) as ds:
        assert ds.nodata == -9999.0
    default_gsd = json.loads(result.sidecar.read_text())["gsd_m"]
    assert 0.2 < default_gsd < 2.0  # 80 px photos over a 90 m site


def test_mosaic_is_the_compositors_blend(split_ortho, mini_runs):
    """The cached tiles blended window by window equal the compositor rendering the same vertical
    rays on its fast path, and stay within the fast/reference parity of its reference path
    (over a strip of 32 columns across the blocks' shared edge, blend band included)."""
    run = mini_runs["split"]
    partition = read_partition(run)
    z_top = max(b.box[5] for b in partition.blocks) + 1.0
    raster = raster_rays(split_ortho, z_top)
    gsd = raster.gsd
    seam = round((partition.x_edges[1] - raster.x0) / gsd)
    strip = Window(round(raster.x0 / gsd) + seam - 16, round(raster.y1 / gsd), 32, raster.height)
    index = BlendIndex(partition)
    names = {k: b.id for k, b in enumerate(partition.blocks)}
    tiles = TileSource(lambda b: load_tile(split_ortho.out_dir / "blocks" / f"{names[b]}.npz")[0])
    mosaic = blend_window(index, tiles, strip, gsd, 0.5)
    rgba, dsm = read(split_ortho.orthophoto)[:, :, seam - 16 : seam + 16], read(split_ortho.dsm)[0]
    assert np.array_equal(np.moveaxis(rgba, 0, -1), mosaic.rgba)
    assert np.array_equal(dsm[:, seam - 16 : seam + 16], mosaic.height)
    cache = BlockCache(run)
    for fast in (True, False):
        view = render_rays_view(partition, cache, strip.rays(gsd, z_top), fast=fast)
        assert len(view.blocks) == 2
        seen = (view.opacity >= 0.5).numpy() & (mosaic.opacity >= 0.5)
        assert seen.mean() > 0.95  # the site is surveyed everywhere inside the cores
        colour = (view.rgb / view.opacity.clamp_min(1e-6)[..., None]).clamp(0, 1).numpy()
        diff = np.abs(np.round(colour * 255) - mosaic.rgba[..., :3])[seen]
        height_diff = np.abs((z_top - view.depth.numpy()) - mosaic.mean_height)[seen]
        if fast:
            assert np.abs(view.opacity.numpy() - mosaic.opacity).max() < 1e-5
            assert diff.max() <= 1 and height_diff.max() < 1e-3
        else:
            psnr = -10 * np.log10(max(np.mean((diff / 255.0) ** 2), 1e-20))
            assert psnr >= 40.0 and np.median(height_diff) < 0.05


def _building(site, truth, margin_px: int = 6):
    """The object index of the largest building roof seen whole inside the raster."""
    labels = np.where(np.isin(truth.hit, np.flatnonzero(site.objects.kind == BUILDING)), truth.hit, -1)
    h, w = labels.shape
    best, area = None, 0
    for k in np.unique(labels[labels >= 0]):
        rows, cols = np.nonzero(labels == k)
        inside = rows.min() > margin_px and cols.min() > margin_px
        inside &= rows.max() < h - margin_px and cols.max() < w - margin_px
        if inside and len(rows) > area:
            best, area = int(k), len(rows)
    assert best is not None and area > 30
    return best


def test_a_roof_lies_where_the_generator_put_it(split_ortho, truth):
    """Over the largest building the DSM stands above the ground, the blob of cells more than half
    its height above the ground is centred on the true roof within 2.5 cells, and the orthophoto is
    opaque there. The blob's outline is scored too, loosely: the test run's fields (120 steps on
    80 x 60 px photos) are fat around tall things (see the benchmark for a trained run)."""
    site, true = truth
    k = _building(site, true)
    roof = true.hit == k
    rise = float(np.median(true.height[roof] - true.ground[roof]))
    dsm = read(split_ortho.dsm)[0]
    core = ndimage.binary_erosion(roof, iterations=1)
    assert np.median(dsm[core] - true.ground[core]) > 0.75 * rise
    assert (read(split_ortho.orthophoto)[3][roof] == 255).all()
    rows, cols = np.nonzero(roof)
    win = (slice(rows.min() - 5, rows.max() + 6), slice(cols.min() - 5, cols.max() + 6))
    labels, _ = ndimage.label(ndimage.binary_opening((dsm - true.ground)[win] > 0.5 * rise))
    found = labels == np.bincount(labels[roof[win]]).argmax()  # the blob over this roof
    offset = np.subtract(ndimage.center_of_mass(found), ndimage.center_of_mass(roof[win]))
    # Measured: 2.27 cells with boxes that reach half the flying height (29.9 m), 1.47 cells with
    # boxes capped by the points (24.6 m): the taller slab leaves this 120-step field more room.
    assert np.hypot(*offset) <= 2.5, offset
    edge_true = roof[win] & ~ndimage.binary_erosion(roof[win])
    edge_found = found & ~ndimage.binary_erosion(found)
    to_true = ndimage.distance_transform_edt(~edge_true)[edge_found]
    to_found = ndimage.distance_transform_edt(~edge_found)[edge_true]
    assert 0.5 * (to_true.mean() + to_found.mean()) <= 6.0


def test_dsm_beats_the_flat_ground_plane(split_ortho, truth, mini_runs):
    """Where the true surface is not ground (roofs, tree crowns) the DSM's RMSE is under half that
    of a flat plane at the run's ground height (the test run gives about a third)."""
    _, true = truth
    dsm = read(split_ortho.dsm)[0]
    ground_z = read_partition(mini_runs["split"]).frame["ground_z"]
    valid = dsm != -9999.0
    raised = valid & (true.height - true.ground > 0.5)
    rmse = np.sqrt(np.mean((dsm - true.height)[raised] ** 2))
    flat = np.sqrt(np.mean((ground_z - true.height)[raised] ** 2))
    assert raised.sum() > 500 and rmse < 0.5 * flat, (rmse, flat)


def test_tiles_are_reused_until_a_block_changes(mini_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(mini_runs["split"], run)
    config = OrthoConfig(gsd=1.5)
    first = render_ortho(run, config)
    assert first.out_dir == run / "ortho" and sorted(first.rendered) == ["r00c00", "r00c01"]
    again = render_ortho(run, config)
    assert again.rendered == [] and sorted(again.reused) == ["r00c00", "r00c01"]
    assert np.array_equal(read(first.dsm), read(again.dsm))
    # A retrained block (here: its weights changed) invalidates its own tile only.
    weights = run / "blocks" / "r00c01" / "model.pt"
    state = torch.load(weights, weights_only=True)
    state["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, weights)
    third = render_ortho(run, config)
    assert third.rendered == ["r00c01"] and third.reused == ["r00c00"]
    assert not list(run.rglob("*.tmp*")) and not (run / ".lock").read_text().strip()


def test_a_georeferenced_run_is_written_in_utm(mini_runs, mini_dataset, tmp_path):
    from pyproj import Transformer

    data, run = tmp_path / "data", tmp_path / "run"
    shutil.copytree(mini_dataset, data)
    meta = json.loads((data / "transforms.json").read_text())
    meta["birdnerf"]["geo"] = {"frame": "ENU", "ellipsoid": "WGS84", "lat": -33.9, "lon": 18.4, "alt": 20.0}
    (data / "transforms.json").write_text(json.dumps(meta))
    shutil.copytree(mini_runs["single"], run)
    manifest = json.loads((run / "partition.json").read_text())
    manifest["dataset"] = str(data)
    (run / "partition.json").write_text(json.dumps(manifest))
    result = render_ortho(run, OrthoConfig(gsd=2.0, out_dir=tmp_path / "ortho"))
    assert (result.frame, result.crs) == ("UTM", "EPSG:32734")  # 34 S
    with rasterio.open(result.dsm) as ds:
        assert ds.crs.to_epsg() == 32734
        # The world origin (the ENU origin: identity frame) lands on the origin's UTM position.
        x0, _, _, y1 = json.loads(result.sidecar.read_text())["world_bounds"]
        col, row = (0.0 - x0) / 2.0, (y1 - 0.0) / 2.0  # the cell position of world (0, 0)
        east, north = ds.transform * (col, row)
        e0, n0 = Transformer.from_crs("EPSG:4326", "EPSG:32734", always_xy=True).transform(18.4, -33.9)
        assert abs(east - e0) < 0.05 and abs(north - n0) < 0.05
        t = ds.transform
        assert abs(np.hypot(t.a, t.d) - 2.0 * 0.9996) < 0.01  # UTM's scale near its central meridian
        heights = ds.read(1)
        assert np.all(heights[heights != -9999.0] > 20.0 - 5.0)  # ellipsoidal: origin height + z
    assert json.loads(result.sidecar.read_text())["affine_max_residual_m"] < 0.01


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["{missing}"], "no partition manifest"),
        (["{run}", "--gsd", "0"], "--gsd"),
        (["{run}", "--gsd", "-2"], "--gsd"),
        (["{run}", "--gsd", "1e-6"], "a raster may have: use a larger --gsd"),
    ],
)
def test_bad_run_or_gsd_is_one_line(args, needle, mini_runs, tmp_path):
    run = mini_runs["split"]
    before = sorted(p.name for p in run.iterdir())
    argv = ["ortho", *[a.format(run=run, missing=tmp_path / "nope") for a in args], "-o", str(tmp_path / "o")]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0] and "Traceback" not in result.output, result.output
    assert sorted(p.name for p in run.iterdir()) == before and not (tmp_path / "o").exists()
