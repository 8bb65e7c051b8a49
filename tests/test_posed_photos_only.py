"""End to end on posed photos alone: hilly terrain far from z = 0, no sparse points, no depth maps.

The geometry must come from the photos (stereo at partition time); the result must beat what
needs no model at all: each held-out photo's mean colour, and a flat plane at ground height for
depth (scored only where the true surface stands above the terrain).
"""

import json

import numpy as np
import pytest

from birdnerf.composite import BlockCache, render_view
from birdnerf.eval import evaluate_run
from birdnerf.partition import PartitionConfig, load_scene, partition_dataset, read_partition
from birdnerf.synthetic import SamplePreset, SiteConfig, SurveyConfig, generate_sample_scene
from birdnerf.synthetic.generate import TRUTH_DEPTH
from birdnerf.synthetic.truth import above_ground_mask, load_site
from birdnerf.train import train_run
from tests.conftest import mini_train_config
from tests.gates import depth_errors

GROUND_Z = 37.0
# Measured at 120 steps: held-out PSNR 20.0 dB against 16.7 dB for the photos' mean colour
# (20.3 dB with the generator's own points); median depth error on the 1,000 test pixels more
# than 1 m above the terrain 3.9 m, against 5.3 m for the flat plane.
PSNR_MARGIN_DB = 2.0
DEPTH_MARGIN_M = 1.0


@pytest.fixture(scope="module")
def hilly_run(tmp_path_factory):
    """A 90 m hilly site at 80x60 px, written without points, partitioned 1x2 and trained."""
    root = tmp_path_factory.mktemp("hills")
    preset = SamplePreset(
        "mini-hills",
        SiteConfig(
            extent_m=90.0, ground_z_m=GROUND_Z, terrain_relief_m=6.0, crown_lobes=3, tower_fraction=0.1
        ),
        SurveyConfig(width=80, height=60, focal_px=64.0, exposure_jitter=0.05, white_balance_jitter=0.02),
        write_points=False,
    )
    generate_sample_scene(root / "data", preset, seed=3)
    partition_dataset(root / "data", root / "run", PartitionConfig(blocks=(1, 2)))
    train_run(root / "run", mini_train_config())
    return root / "data", root / "run"


def test_ground_is_measured_not_guessed(hilly_run):
    data, run = hilly_run
    frame = read_partition(run).frame
    assert frame["ground_source"] == "triangulated" and frame["measured_points"] > 1000
    level = json.loads((data / "sample.json").read_text())["ground_level_m"]
    assert abs(frame["ground_z"] - level) < 2.0  # the 0.3-quantile of the measured heights
    site = load_site(data)
    for block in read_partition(run).blocks:
        xs = np.linspace(block.core[0], block.core[2], 9)
        ys = np.linspace(block.core[1], block.core[3], 9)
        terrain = site.ground_height(*np.meshgrid(xs, ys))
        assert block.box[2] < terrain.min() and block.box[5] > terrain.max() + 10.0, block.box


def test_posed_photos_beat_the_mean_colour_and_the_flat_plane(hilly_run):
    data, run = hilly_run
    result = evaluate_run(run, save_renders=False)
    assert result["psnr"] > result["baseline_psnr"] + PSNR_MARGIN_DB, (
        result["psnr"],
        result["baseline_psnr"],
    )
    assert result["ssim"] > result["baseline_ssim"], (result["ssim"], result["baseline_ssim"])
    for block in result["per_block"].values():
        assert block["margin_db"] > 1.0, block
    for done in run.glob("blocks/*/done.json"):
        assert json.loads(done.read_text())["quality"]["margin_db"] > 1.0

    partition = read_partition(run)
    scene = load_scene(partition)
    site = load_site(data)
    cache = BlockCache(run)
    rendered, plane = [], []
    for i in scene.indices("test"):
        cam, c2w = scene.cameras[i], scene.c2w[i]
        truth = np.load(data / TRUTH_DEPTH / f"{scene.image_paths[i].stem}.npy", allow_pickle=False)
        above = above_ground_mask(site, cam, c2w, truth, min_height_m=1.0)
        depth = render_view(partition, cache, cam, c2w).depth.numpy()
        # The dataset's frame is the site's, so the plane sits at the site's ground level.
        errors = depth_errors(scene, i, depth, GROUND_Z, truth=truth, above=above)
        rendered.append(errors[0])
        plane.append(errors[1])
    rendered, plane = np.concatenate(rendered), np.concatenate(plane)
    assert len(rendered) > 300
    assert np.median(rendered) < np.median(plane) - DEPTH_MARGIN_M, (np.median(rendered), np.median(plane))
    assert np.isfinite(rendered).all()
