"""Mega-NeRF's evaluation protocol: appearance fitted on the left half, scored on the right half."""

import json

import pytest
import torch

from birdnerf.composite import BlockCache, render_view, visible_blocks
from birdnerf.eval import evaluate_run
from birdnerf.eval.appearance import AppearanceFit, fit_appearance, left_width
from birdnerf.eval.metrics import baseline_psnr, psnr
from birdnerf.partition import load_scene, read_partition
from birdnerf.scene.camera import camera_rays, pixel_centers
from birdnerf.scene.images import load_rgb


def _test_photo(run):
    """Partition, cache, camera, c2w, target and mean-code render of the held-out photo that sees
    the most blocks, by the reference path (which blends every block with a weight; the fast path
    trims blend bands, and this photo sees the second block in a band's outer edge only)."""
    partition = read_partition(run)
    scene = load_scene(partition)
    i = max(
        scene.indices("test"), key=lambda k: len(visible_blocks(partition, scene.cameras[k], scene.c2w[k]))
    )
    cache = BlockCache(run)
    view = render_view(partition, cache, scene.cameras[i], scene.c2w[i], fast=False)
    target = torch.from_numpy(load_rgb(scene.image_paths[i])).float() / 255
    return partition, cache, scene.cameras[i], scene.c2w[i], target, view


def test_fitting_on_the_left_half_recovers_an_exposure_change(mini_runs):
    partition, cache, cam, c2w, target, view = _test_photo(mini_runs["split"])
    assert len(view.blocks) == 2  # the fit goes through the blend of both blocks
    darker = target * 0.7
    blocks = {b.id: b for b in partition.blocks}
    means = {b: cache.get(blocks[b]).field.appearance(None).clone() for b in view.blocks}
    codes = fit_appearance(partition, cache, cam, c2w, darker, view.weights)  # the default protocol
    fitted = render_view(partition, cache, cam, c2w, appearance=codes, fast=False)
    right = torch.zeros(cam.height, cam.width, dtype=torch.bool)
    right[:, left_width(cam.width) :] = True
    before, after = psnr(view.rgb, darker, right), psnr(fitted.rgb, darker, right)
    assert after > before + 1.0, (before, after)
    assert set(codes) == set(view.blocks)
    # The cached models are untouched: same mean codes, still trainable, no stray gradients.
    for b in view.blocks:
        model = cache.get(blocks[b])
        assert torch.equal(model.field.appearance(None), means[b])
        assert not torch.equal(codes[b], means[b][0])
        assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_split_field_matches_the_field():
    from birdnerf.field import BlockField, FieldConfig, HashGridConfig

    torch.manual_seed(0)
    grid = HashGridConfig(n_levels=4, log2_hashmap_size=10)
    field = BlockField(FieldConfig(grid=grid, appearance_dim=4, num_images=3), backend="torch")
    x, d = torch.rand(64, 3), torch.randn(64, 3)
    code = torch.randn(4)
    sigma, features = field.color_features(x, d)
    rgb, sigma_ref = field(x, d, appearance_code=code)
    assert torch.allclose(sigma, sigma_ref) and torch.allclose(field.color(features, code), rgb)
    assert torch.allclose(field.color(features), field(x, d)[0])  # None: the mean code


def test_frozen_rays_render_like_the_evaluation_renderer(mini_runs):
    partition, cache, cam, c2w, _, _ = _test_photo(mini_runs["split"])
    o, d = camera_rays(cam, torch.from_numpy(c2w), pixel_centers(cam, torch.float64)[::3, ::3])
    o, d = o.reshape(-1, 3).float(), d.reshape(-1, 3).float()
    model = cache.get(partition.blocks[0])
    code = model.field.appearance(None)[0] + 0.5
    frozen = model.freeze(o, d)
    with_code = model.render_eval(o, d, appearance=code).rgb
    assert torch.allclose(model.render_frozen(frozen, code), with_code, atol=1e-3)
    assert torch.allclose(model.render_frozen(frozen), model.render_eval(o, d).rgb, atol=1e-3)
    assert (with_code - model.render_eval(o, d).rgb).abs().max() > 0.01  # the code matters


def test_fitting_never_reads_the_right_half(mini_runs):
    partition, cache, cam, c2w, target, view = _test_photo(mini_runs["split"])
    noisy = target.clone()
    noisy[:, left_width(cam.width) :] = torch.rand(
        noisy[:, left_width(cam.width) :].shape, generator=torch.Generator().manual_seed(1)
    )
    fit = AppearanceFit(steps=4, rays=512)
    codes = fit_appearance(partition, cache, cam, c2w, target, view.weights, fit)
    codes_noisy = fit_appearance(partition, cache, cam, c2w, noisy, view.weights, fit)
    assert set(codes) == set(view.blocks)
    assert all(torch.equal(codes[b], codes_noisy[b]) for b in codes)


def test_eval_json_records_the_protocol_and_scores_the_right_half(mini_runs):
    run = mini_runs["single"]
    scene = load_scene(read_partition(run))
    n = len(scene.indices("test"))
    cam = scene.cameras[0]
    result = evaluate_run(
        run, save_renders=False, appearance="fit-left", fit=AppearanceFit(steps=2, rays=256)
    )
    saved = json.loads((run / "eval.json").read_text())
    assert saved["appearance"] == "fit-left" and saved["scored_region"] == "right-half"
    assert saved["appearance_fit"] == {"steps": 2, "rays": 256, "lr": AppearanceFit.lr, "seed": 0}
    assert saved["psnr"] == result["psnr"]
    right = n * cam.height * (cam.width - left_width(cam.width))
    assert result["boundary_pixels"] + result["interior_pixels"] == right
    assert sum(entry["pixels"] for entry in result["per_block"].values()) == right
    assert result["lpips"] is None and "not" in result["lpips_unavailable"]
    # Baselines beside every score, over the same (right-half) pixels: each photo's own mean colour.
    rights = [
        torch.from_numpy(load_rgb(scene.image_paths[i])).float()[:, left_width(cam.width) :] / 255
        for i in scene.indices("test")
    ]
    expected = [baseline_psnr(t) for t in rights]
    assert [p["baseline_psnr"] for p in saved["per_photo"]] == pytest.approx(expected)
    assert saved["baseline_psnr"] == pytest.approx(sum(expected) / n)
    assert 0 < saved["baseline_ssim"] < saved["ssim"]
    assert saved["margin_db"] == pytest.approx(saved["psnr"] - saved["baseline_psnr"])
    for key in ("baseline_psnr_boundary", "baseline_psnr_interior"):
        assert key in saved
    block_keys = {"psnr", "baseline_psnr", "margin_db", "pixels"}
    assert all(set(entry) == block_keys for entry in saved["per_block"].values())
    assert all({"baseline_psnr", "baseline_ssim", "margin_db"} <= set(p) for p in saved["per_photo"])

    result = evaluate_run(run, save_renders=False)
    assert result["appearance"] == "mean" and result["scored_region"] == "whole-image"
    assert result["appearance_fit"] is None
    assert result["boundary_pixels"] + result["interior_pixels"] == n * cam.height * cam.width


def test_eval_command_explains_and_checks_the_protocol(mini_runs):
    from typer.testing import CliRunner

    from birdnerf_cli.main import app
    from birdnerf_cli.report import protocol_line

    runner = CliRunner()
    # Rich wraps help text in a box: drop the borders and line breaks before searching it.
    help_text = " ".join(runner.invoke(app, ["eval", "--help"]).output.replace("│", " ").split())
    assert "fit-left" in help_text and "LEFT half" in help_text and "RIGHT half" in help_text
    result = runner.invoke(app, ["eval", str(mini_runs["single"]), "--appearance", "median"])
    assert result.exit_code == 1 and "mean or fit-left" in result.output
    fit = {"appearance": "fit-left", "appearance_fit": {"steps": 32, "rays": 4096, "lr": 0.03, "seed": 0}}
    assert "RIGHT HALF" in protocol_line(fit) and "32 Adam steps" in protocol_line(fit)
    assert "whole photos" in protocol_line({"appearance": "mean"})


def test_eval_output_warns_below_the_baseline():
    from birdnerf_cli.report import baseline_warnings

    blocks = {"a": {"psnr": 21.0, "baseline_psnr": 16.0, "margin_db": 5.0, "pixels": 10}}
    good = {"psnr": 21.0, "baseline_psnr": 16.0, "per_block": blocks}
    assert baseline_warnings(good) == []
    assert baseline_warnings({"psnr": 21.0, "per_block": {}}) == []  # written before baselines
    noise = {"psnr": 13.5, "baseline_psnr": 14.6, "per_block": {"a": {**blocks["a"], "margin_db": -1.1}}}
    (line,) = baseline_warnings(noise)
    assert "-1.10 dB" in line and "learned nothing useful" in line and "ground height" in line
    one_bad = {**good, "per_block": {**blocks, "b": {**blocks["a"], "margin_db": 0.2}}}
    (line,) = baseline_warnings(one_bad)
    assert "block(s) b " in line
