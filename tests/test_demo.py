"""The end-to-end demo at test sizes: every output it promises, a held-out score, and a rerun
that reuses the finished stages."""

import hashlib
import json
import shutil

from PIL import Image

from birdnerf.demo import DemoConfig, run_demo
from birdnerf.partition import PartitionConfig, load_scene, read_partition
from tests.conftest import MINI_STEPS, mini_train_config


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
    assert result.psnr == scores["psnr"] > 14.0 and 0.2 < result.ssim <= 1.0
    # Each held-out photo: RGB, depth and block-id images of the camera's size; the fly-over: GIFs.
    for photo in scores["per_photo"]:
        stem = result.renders / "test" / photo["name"].replace("/", "_").removesuffix(".png")
        for suffix in (".png", ".depth.png", ".blocks.png"):
            assert Image.open(f"{stem}{suffix}").size == (80, 60)
    for animation in (result.video, result.depth_video):
        with Image.open(animation) as gif:
            assert gif.format == "GIF" and gif.n_frames == 3 and gif.size == (80, 60)

    again = run_demo(tmp_path, config)  # an interrupted or repeated demo reuses finished stages
    assert _model_hashes(result.run_dir) == models
    assert again.psnr == result.psnr
    assert again.seconds["sample data"] < 1.0 and again.seconds["train"] < 0.2 * result.seconds["train"]
