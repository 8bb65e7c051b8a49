"""The end-to-end demo at test sizes: every output it promises, a held-out score, and a rerun
that reuses the finished stages."""

import hashlib
import json
import shutil

import imageio_ffmpeg
import pytest
import torch
from PIL import Image

from birdnerf.demo import DemoConfig, run_demo
from birdnerf.partition import PartitionConfig, load_scene, read_partition
from birdnerf.scene.images import load_rgb
from tests.conftest import MINI_STEPS, mini_train_config
from tests.gates import image_scores, mean_scores


def _model_hashes(run):
    return {p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.glob("blocks/*/model.pt")}


def test_demo_renders_scores_and_resumes(mini_dataset, tmp_path):
    shutil.copytree(mini_dataset, tmp_path / "data")  # the sample-data stage reuses a dataset in place
    config = DemoConfig(
        steps=MINI_STEPS,
        rays_per_batch=1024,
        video_frames=3,
        partition=PartitionConfig(blocks=(1, 2)),
        train=mini_train_config(),
    )
    result = run_demo(tmp_path, config)

    partition = read_partition(result.run_dir)
    assert [b.id for b in partition.blocks] == ["r00c00", "r00c01"]
    models = _model_hashes(result.run_dir)
    assert set(models) == {"r00c00", "r00c01"}
    scores = json.loads(result.eval_json.read_text())
    test_photos = load_scene(partition).indices("test")
    assert scores["n_test_photos"] == len(test_photos) == len(scores["per_photo"]) > 0
    assert result.psnr == scores["psnr"] and result.ssim == scores["ssim"]
    # Against each test photo's own mean colour, computed here (measured: 21.2 dB / SSIM 0.47
    # against 16.6 dB / 0.29; blocks +5.6 and +4.8 dB on their held-out pixels).
    scene = load_scene(partition)
    targets = [torch.from_numpy(load_rgb(scene.image_paths[i])).float() / 255 for i in test_photos]
    own = mean_scores([image_scores(t, t) for t in targets])
    assert result.baseline_psnr == pytest.approx(own["baseline_psnr"])
    assert result.baseline_ssim == pytest.approx(own["baseline_ssim"])
    assert result.psnr > own["baseline_psnr"] + 3.0, (result.psnr, own)
    assert own["baseline_ssim"] + 0.07 < result.ssim <= 1.0, (result.ssim, own)
    assert set(result.trained) == {"r00c00", "r00c01"}
    assert all(r["quality"]["margin_db"] > 3.0 for r in result.trained.values()), result.trained
    # Each held-out photo: RGB, depth and block-id images of the camera's size; the fly-over: MP4s.
    for photo in scores["per_photo"]:
        stem = result.renders / "test" / photo["name"].replace("/", "_").removesuffix(".png")
        for suffix in (".png", ".depth.png", ".blocks.png"):
            assert Image.open(f"{stem}{suffix}").size == (80, 60)
    for animation in (result.video, result.depth_video):
        frames = imageio_ffmpeg.read_frames(str(animation))
        meta = next(frames)
        assert animation.suffix == ".mp4" and meta["codec"] == "h264" and meta["size"] == (80, 60)
        assert sum(1 for _ in frames) == 3

    again = run_demo(tmp_path, config)  # an interrupted or repeated demo reuses finished stages
    assert _model_hashes(result.run_dir) == models
    assert again.psnr == result.psnr and again.baseline_psnr == result.baseline_psnr
    assert again.trained == {}  # nothing retrained
    assert again.seconds["sample data"] < 1.0 and again.seconds["train"] < 0.2 * result.seconds["train"]
