import json

import numpy as np
import pytest
import torch

from birdnerf.composite import BlockCache, render_run, render_view, visible_blocks
from birdnerf.eval import evaluate_run
from birdnerf.eval.metrics import psnr
from birdnerf.partition import load_scene, read_partition
from birdnerf.scene.images import load_rgb
from tests.surveys import NADIR


def _held_out(run):
    partition = read_partition(run)
    scene = load_scene(partition)
    return partition, scene, scene.indices("test")


def test_composite_of_blocks_matches_one_block_trained_on_everything(mini_runs):
    scores = {}
    for name, run in mini_runs.items():
        partition, scene, tests = _held_out(run)
        cache = BlockCache(run)
        values = []
        for i in tests:
            view = render_view(partition, cache, scene.cameras[i], scene.c2w[i])
            target = torch.from_numpy(load_rgb(scene.image_paths[i])).float() / 255
            values.append(psnr(view.rgb, target))
        scores[name] = float(np.mean(values))
    assert scores["single"] > 14.0
    assert scores["split"] > scores["single"] - 1.5  # no visible price for cutting the scene


def test_only_blocks_the_view_sees_are_loaded(mini_runs):
    run = mini_runs["split"]
    partition, scene, _ = _held_out(run)
    left, right = partition.blocks
    cam = scene.cameras[0]
    c2w = np.eye(4)
    c2w[:3, :3] = NADIR
    c2w[:3, 3] = [left.core[0] + 10.0, 0.5 * (left.core[1] + left.core[3]), 30.0]
    cache = BlockCache(run)
    view = render_view(partition, cache, cam, c2w)
    assert visible_blocks(partition, cam, c2w) == [left.id]
    assert cache.loads == [left.id] and view.blocks == [left.id]
    assert torch.all(view.block_map == 0)
    # Over the shared edge, at the survey's altitude, both blocks render.
    c2w[:3, 3] = [partition.x_edges[1], 0.0, 60.0]
    view = render_view(partition, cache, cam, c2w)
    assert view.blocks == [left.id, right.id] and cache.loads == [left.id, right.id]
    assert set(view.block_map.unique().tolist()) == {0, 1}


def test_cache_evicts_the_least_recently_used_block(mini_runs):
    run = mini_runs["split"]
    ids = [b.id for b in read_partition(run).blocks]
    cache = BlockCache(run, capacity=1)
    cache.get(ids[0])
    cache.get(ids[1])
    cache.get(ids[0])
    assert cache.loads == [ids[0], ids[1], ids[0]]
    assert ids[0] in cache and ids[1] not in cache


def test_render_writes_pngs_depth_and_video(mini_runs, tmp_path):
    from birdnerf.composite import orbit_path

    run = mini_runs["split"]
    partition, scene, tests = _held_out(run)
    summary = render_run(run, split="test", out_dir=tmp_path / "test")
    assert len(summary.views) == len(tests)
    stem = summary.views[0]
    for suffix in (".png", ".depth.png", ".blocks.png", ".depth.npy"):
        assert (tmp_path / "test" / f"{stem}{suffix}").is_file()
    depth = np.load(tmp_path / "test" / f"{stem}.depth.npy", allow_pickle=False)
    truth = np.load(scene.depth_paths[tests[0]], allow_pickle=False)
    assert np.median(np.abs(depth - truth)) < 2.0  # metres, at 60 m altitude
    path = orbit_path(partition, scene.cameras[0].scaled(0.5), altitude=50.0, frames=4)
    summary = render_run(run, camera_path=path, out_dir=tmp_path / "path", video="gif")
    assert summary.animation.stat().st_size > 0 and summary.depth_animation.is_file()
    assert len(summary.views) == 4


def test_eval_reports_boundary_and_interior_scores(mini_runs):
    run = mini_runs["split"]
    result = evaluate_run(run, save_renders=False)
    saved = json.loads((run / "eval.json").read_text())
    assert saved["psnr"] == pytest.approx(result["psnr"])
    assert result["psnr"] > 14.0 and 0.2 < result["ssim"] <= 1.0
    assert result["boundary_pixels"] > 0 and result["interior_pixels"] > 0
    # Seams must not show: the band around the block edge scores like the interiors.
    assert result["psnr_boundary"] > result["psnr_interior"] - 2.0
    assert result["lpips"] is None and result["lpips_unavailable"]
    assert set(result["per_block"]) == {"r00c00", "r00c01"}
