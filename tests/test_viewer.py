"""The web viewer: viser camera conversion, live-render scheduling, orthophoto placement, block
status, and the whole viewer in a headless Chromium on the mini run."""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from birdnerf.composite import BlockCache, render_view
from birdnerf.composite.view import ViewRender
from birdnerf.errors import BirdnerfError
from birdnerf.partition import load_scene, read_partition
from birdnerf.scene.camera import project
from birdnerf.viewer import ViewerConfig, serve, view_camera, viser_pose
from birdnerf.viewer.camera import rotation_from_wxyz, wxyz_from_rotation
from birdnerf.viewer.live import LiveRenderer, ViewPose
from birdnerf.viewer.ortho import ORTHOPHOTO, read_ortho_layer
from birdnerf.viewer.status import block_statuses, status_markdown
from birdnerf_cli.main import app
from tests.browser import Browser, chromium_path

WAIT_S = 240.0
"""Bound on every wait for a render (the machine may be shared); an idle one takes seconds."""


def test_viser_rotation_convention_and_projection():
    import viser.transforms as tf

    rng = np.random.default_rng(0)
    for wxyz in rng.normal(size=(8, 4)):
        wxyz /= np.linalg.norm(wxyz)
        np.testing.assert_allclose(rotation_from_wxyz(wxyz), tf.SO3(wxyz).as_matrix(), atol=1e-12)
        back = wxyz_from_rotation(rotation_from_wxyz(wxyz))
        np.testing.assert_allclose(back, wxyz * np.sign(wxyz[0]), atol=1e-9)
    # viser: the camera looks along R[:, 2], its up is -R[:, 1] (OpenCV); fov is vertical.
    wxyz, position, fov, aspect = rng.normal(size=4), np.array([5.0, -3.0, 40.0]), math.radians(60), 1.6
    cam, c2w = view_camera(wxyz, position, fov, aspect, width=160)
    assert (cam.width, cam.height) == (160, 100)
    rot = tf.SO3(wxyz / np.linalg.norm(wxyz)).as_matrix()
    look, up, right = rot[:, 2], -rot[:, 1], rot[:, 0]
    half_h = math.tan(fov / 2)
    points = position + 10.0 * np.stack([look, look + half_h * up, look + half_h * aspect * right])
    uv, depth = project(cam, torch.from_numpy(c2w), torch.from_numpy(points))
    np.testing.assert_allclose(uv.numpy(), [[80, 50], [80, 0], [160, 50]], atol=1e-6)
    np.testing.assert_allclose(depth.numpy(), 10.0, atol=1e-9)


def test_viser_view_renders_like_the_photo_camera(mini_runs):
    partition = read_partition(mini_runs["split"])
    scene = load_scene(partition)
    i = scene.indices("test")[0]
    cam, c2w = scene.cameras[i].scaled(0.5), scene.c2w[i]
    assert (cam.cx, cam.cy) == (cam.width / 2, cam.height / 2) and cam.fx == cam.fy
    viewed, viewed_c2w = view_camera(*viser_pose(cam, c2w), width=cam.width)
    cache = BlockCache(mini_runs["split"], backend="torch")
    photo = render_view(partition, cache, cam, c2w)
    view = render_view(partition, cache, viewed, viewed_c2w)
    torch.testing.assert_close(view.rgb, photo.rgb, atol=1e-4, rtol=0)
    # The live renderer's strips (same camera, fewer rows, principal point moved) tile the frame.
    top, bottom = (replace(viewed, height=16, cy=viewed.cy - r0) for r0 in (0, 16))
    strips = torch.cat([render_view(partition, cache, s, viewed_c2w).rgb for s in (top, bottom)])
    torch.testing.assert_close(strips[: cam.height], view.rgb, atol=1e-5, rtol=0)


def _fake_view(cam, c2w, log, delay):
    log.append((cam.width, cam.height, c2w[0, 3]))
    time.sleep(delay)
    h, w = cam.height, cam.width
    return ViewRender(
        rgb=torch.full((h, w, 3), 0.5), depth=torch.ones(h, w), opacity=torch.ones(h, w),
        block_map=torch.zeros(h, w, dtype=torch.long), blocks=["r00c00"], reassigned=0,
    )  # fmt: skip


def _unreadable_block(cam, c2w):
    raise BirdnerfError("unreadable checkpoint", "m.pt")


def _wait(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_live_renderer_newest_camera_wins_then_refines():
    log, frames, errors = [], [], []
    live = LiveRenderer(
        lambda cam, c2w: _fake_view(cam, c2w, log, 0.05),
        frames.append,
        on_error=errors.append,
        preview_width=16,
        full_width=64,
        settle_s=0.2,
        strip_pixels=64 * 10,
    )
    live.start()
    try:
        pose = lambda x: ViewPose(np.array([1.0, 0, 0, 0]), np.array([x, 0.0, 0.0]), 1.0, 2.0)  # noqa: E731
        for x in range(30):  # a moving camera: requests far faster than renders
            live.request(7, pose(float(x)))
            time.sleep(0.005)
        _wait(lambda: live.delivered["full"] == 1)
        previews = [entry for entry in log if entry[0] == 16]
        assert 1 <= len(previews) < 30  # stale requests were skipped ...
        assert previews[-1][2] == 29.0  # ... and the newest one rendered
        full = [entry for entry in log if entry[0] == 64]
        assert len(full) == 4 and all(entry[2] == 29.0 for entry in full)  # 32 rows in strips of 10
        assert [f.level for f in frames[-4:]] == ["partial"] * 3 + ["full"]
        assert frames[-1].rgb.shape == (32, 64, 3) and frames[-1].client_id == 7
        # A camera that moves during a full render abandons it between strips.
        live.request(7, pose(100.0))
        _wait(lambda: any(entry[0] == 64 and entry[2] == 100.0 for entry in log))
        live.request(7, pose(200.0))
        _wait(lambda: live.delivered["full"] == 2)
        assert frames[-1].level == "full"
        assert sum(entry[2] == 100.0 and entry[0] == 64 for entry in log) < 4
        # A view that fails is reported, and the next one renders.
        live.set_render(
            lambda cam, c2w: (_ for _ in ()).throw(BirdnerfError("unreadable checkpoint", "m.pt"))
        )
        live.request(7, pose(300.0))
        _wait(lambda: errors)
        assert errors == ["BirdnerfError: m.pt: unreadable checkpoint"] and live.error == errors[0]
        live.set_render(lambda cam, c2w: _fake_view(cam, c2w, log, 0.0))
        live.request(7, pose(400.0))
        _wait(lambda: live.delivered["full"] == 3)
        assert live.error is None
    finally:
        live.stop()
    assert not live._thread.is_alive()


def _north_up(west: float, north: float, xsize: float, ysize: float):
    """A north-up raster transform (rows run south)."""
    from rasterio.transform import Affine

    return Affine(xsize, 0.0, west, 0.0, -ysize, north)


def _write_geotiff(path: Path, image: np.ndarray, transform, crs=None) -> None:
    import rasterio

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w, bands = image.shape
    profile = {"driver": "GTiff", "width": w, "height": h, "count": bands, "dtype": "uint8"}
    with rasterio.open(path, "w", **profile, transform=transform, crs=crs) as dst:
        dst.write(np.moveaxis(image, -1, 0))


def _corner(layer, col: float, row: float) -> np.ndarray:
    """World position of raster pixel corner (col, row) on the layer's plane."""
    rot = rotation_from_wxyz(layer.wxyz)
    h, w = layer.image.shape[:2]
    local = np.array([(col / w - 0.5) * layer.size[0], (row / h - 0.5) * layer.size[1], 0.0])
    return layer.center + rot @ local


def test_ortho_layer_placement(tmp_path):
    pytest.importorskip("rasterio")
    pyproj = pytest.importorskip("pyproj")

    image = np.zeros((40, 60, 4), np.uint8)
    # Local frame: raster coordinates are world x, y (north up: rows run towards -y).
    _write_geotiff(tmp_path / "local.tif", image, _north_up(-30.0, 20.0, 0.5, 0.5))
    layer = read_ortho_layer(tmp_path / "local.tif", 2.0, None, np.eye(4))
    np.testing.assert_allclose(_corner(layer, 0, 0), [-30, 20, 2], atol=1e-9)
    np.testing.assert_allclose(_corner(layer, 60, 40), [0, 0, 2], atol=1e-9)
    # UTM zone 32N around a geographic origin; the run's frame is the ENU frame turned and shifted.
    geo = {"frame": "ENU", "lat": 47.37, "lon": 8.54, "alt": 400.0}
    utm = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True)
    e0, n0 = utm.transform(geo["lon"], geo["lat"])
    _write_geotiff(tmp_path / "utm.tif", image, _north_up(e0 - 30.0, n0 + 20.0, 0.5, 0.5), "EPSG:32632")
    turn = np.eye(4)
    turn[:2, :2] = [[0.0, -1.0], [1.0, 0.0]]
    turn[:3, 3] = [100.0, 50.0, -400.0]
    layer = read_ortho_layer(tmp_path / "utm.tif", 0.0, geo, turn, max_side=30)
    assert layer.image.shape == (20, 30, 4)
    # The UTM grid is the ENU one turned by the meridian convergence (0.34 degrees here: 0.2 m at
    # the corners) and scaled by 0.9996: within a pixel (0.5 m), and not the raster's coordinates.
    enu_corners = np.array([[-30.0, 20.0], [0.0, 0.0]])
    expected = enu_corners @ turn[:2, :2].T + turn[:2, 3]
    for (col, row), xy in zip([(0, 0), (30, 20)], expected, strict=True):
        assert np.linalg.norm(_corner(layer, col, row)[:2] - xy) < 0.5
    with pytest.raises(BirdnerfError, match="no ENU origin"):
        read_ortho_layer(tmp_path / "utm.tif", 0.0, None, np.eye(4))
    (tmp_path / "bad.tif").write_bytes(b"not a tiff")
    with pytest.raises(BirdnerfError, match="bad.tif"):
        read_ortho_layer(tmp_path / "bad.tif", 0.0, None, np.eye(4))


def test_block_statuses_read_the_folders(mini_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(mini_runs["split"], run)
    partition = read_partition(run)
    first, second = (run / b.folder for b in partition.blocks)
    (second / "done.json").unlink()
    (first / "metrics.jsonl").write_text('{"step": 5, "loss": 0.01, "psnr": 20.0}\n{"step": 10, "lo')
    figures = {partition.blocks[0].id: {"psnr": 21.5, "margin_db": 3.2}}
    (run / "eval.json").write_text(json.dumps({"per_block": figures}))
    statuses = block_statuses(run, partition)
    assert [s.status for s in statuses] == ["done", "partial"]
    assert (statuses[0].step, statuses[0].psnr, statuses[0].heldout_psnr) == (5, 20.0, 21.5)
    assert statuses[1].step is not None and statuses[1].heldout_psnr is None
    table = status_markdown(statuses)
    assert "1 done, 1 partial" in table and "21.5 (+3.2) |" in table
    (run / "eval.json").unlink()  # without an evaluation: the block's own held-out figures
    done = json.loads((first / "done.json").read_text())["quality"]
    assert block_statuses(run, partition)[0].heldout_psnr == pytest.approx(done["psnr"])
    assert f"{done['psnr']:.1f} ({done['margin_db']:+.1f})* |" in status_markdown(
        block_statuses(run, partition)
    )


def _error_lines(args: list[str]) -> list[str]:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def test_view_command_bad_input(tmp_path):
    assert _error_lines(["view", str(tmp_path)]) == [
        f"error: {tmp_path / 'partition.json'}: no partition manifest here (run `birdnerf partition` first)"
    ]
    [line] = _error_lines(["view", str(tmp_path), "--backend", "fast"])
    assert line.startswith("error: unknown field backend 'fast' (auto, torch,")


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")
    }


@pytest.mark.skipif(chromium_path() is None, reason="no Chromium installed (CI installs it)")
def test_viewer_in_headless_chromium(mini_runs, tmp_path):
    pytest.importorskip("viser")
    pytest.importorskip("rasterio")

    run = tmp_path / "run"
    shutil.copytree(mini_runs["split"], run)
    partition = read_partition(run)
    x0, y0, x1, y1 = partition.blocks[0].core[:2] + partition.blocks[-1].core[2:]
    checker = ((np.indices((32, 32)) // 4).sum(0) % 2 * 200 + 30).astype(np.uint8)
    _write_geotiff(
        run / ORTHOPHOTO, np.stack([checker] * 3, -1), _north_up(x0, y1, (x1 - x0) / 32, (y1 - y0) / 32)
    )
    before = _files(run)
    config = ViewerConfig(port=0, full_width=96, preview_width=32, thumbnails=16, backend="torch")
    with serve(run, config) as viewer, Browser(width=1000, height=700) as browser:
        assert viewer.url.startswith("http://127.0.0.1:") and "ortho" in viewer.gui.layers
        browser.open(viewer.url)
        deadline = time.monotonic() + WAIT_S
        while viewer.delivered["full"] < 1:
            assert viewer.live.error is None, viewer.live.error
            assert time.monotonic() < deadline, f"no full render delivered: {dict(viewer.delivered)}"
            time.sleep(0.1)
        assert viewer.delivered["preview"] >= 1
        frame = viewer.last_frame
        assert frame.level == "full" and frame.rgb.shape[1] == 96 and frame.blocks
        time.sleep(1.0)  # the browser draws the picture it was sent
        shot = browser.screenshot(tmp_path / "viewer.png")
        rect = browser.evaluate("(() => { const r = document.querySelector('canvas').getBoundingClientRect();"
                                " return [r.left, r.top, r.width, r.height]; })()")  # fmt: skip
        # The scene is drawn: the canvas (left of the panel, below the notices) is not all white.
        left, top, width, height = (round(v) for v in rect)
        window = (slice(top + 160, top + height), slice(left, left + width - 340))
        assert (np.abs(shot[window].astype(float) - 255).max(-1) > 40).mean() > 0.15
        # Without the overlays the canvas shows the delivered render, stretched over it: the
        # screenshot follows it far better than it follows the same picture upside down.
        for handles in viewer.gui.layers.values():
            for handle in handles:
                handle.visible = False
        time.sleep(1.5)
        bare = browser.screenshot()[window].mean(-1).ravel()
        rows = (np.arange(height) * frame.rgb.shape[0] // height)[160:]
        cols = (np.arange(width) * frame.rgb.shape[1] // width)[: width - 340]
        sent, flipped = (image[rows][:, cols].mean(-1).ravel() for image in (frame.rgb, frame.rgb[::-1]))
        match, baseline = np.corrcoef(bare, sent)[0, 1], np.corrcoef(bare, flipped)[0, 1]
        assert match > 0.8 and match > baseline + 0.1, (match, baseline)
    assert _files(run) == before  # nothing was written into the run
