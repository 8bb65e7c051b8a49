"""The estimates behind the checks that refuse work too large for the machine, against the
things they count: a block's real parameters, the orthophoto tiles' real windows."""

from __future__ import annotations

import dataclasses
import math

import pytest

from birdnerf import resources
from birdnerf.block.model import BlockModel, RenderConfig
from birdnerf.composite import BlendIndex
from birdnerf.errors import BirdnerfError
from birdnerf.export.budget import tsdf_blocks
from birdnerf.field import FieldConfig, HashGridConfig
from birdnerf.ortho.budget import tile_cells
from birdnerf.ortho.grid import block_windows, raster_window
from birdnerf.partition import PartitionConfig, partition_dataset
from birdnerf.train import TrainConfig
from birdnerf.train.budget import check_training_fits, parameter_count, step_memory

FIELDS = {
    "default": FieldConfig(),
    "small, no codes": FieldConfig(
        grid=HashGridConfig(n_levels=4, log2_hashmap_size=12, max_resolution=64), appearance_dim=0
    ),
}


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_the_parameter_count_is_the_models(name):
    model = BlockModel([0, 0, 0, 10, 10, 5], FIELDS[name], num_images=7, render=RenderConfig())
    assert parameter_count(FIELDS[name], 7) == sum(p.numel() for p in model.parameters())


def test_a_training_step_that_cannot_fit_is_refused(monkeypatch):
    config = TrainConfig()
    need = step_memory(config, 50)
    assert step_memory(dataclasses.replace(config, rays_per_batch=2 * config.rays_per_batch), 50) > need
    assert step_memory(dataclasses.replace(config, samples_per_batch=2 * config.samples_per_batch), 50) > need
    monkeypatch.setattr(resources, "available_memory", lambda: 2 * need)
    check_training_fits(config, 50)  # fits
    with pytest.raises(BirdnerfError, match=r"training \(3 blocks at once, 4,096 rays .*--jobs"):
        check_training_fits(config, 50, jobs=3)


def test_the_tsdf_bound_follows_the_pixels_or_the_area():
    # Voxel blocks much smaller than a pixel's footprint: each pixel's truncation span (2 blocks at
    # 4 voxels of truncation, half of them as measured); much larger: the views' ground area.
    assert tsdf_blocks(1000, gsd=1.0, voxel=0.001, trunc_voxels=4) == 1000 * 0.5 * 2
    columns = 1000 * 1.0 / (8 * 0.5) ** 2
    assert tsdf_blocks(1000, gsd=1.0, voxel=0.5, trunc_voxels=4) == pytest.approx(columns * 2 * 2)


def test_orthophoto_tiles_stay_inside_their_estimate(mini_dataset, tmp_path):
    run = tmp_path / "run"
    partition, _ = partition_dataset(mini_dataset, run, PartitionConfig(blocks=(2, 2)))
    for gsd in (0.7, 2.0):
        raster = raster_window(partition, gsd)
        windows = block_windows(partition, BlendIndex(partition), raster, gsd)
        bounds = tile_cells(partition, raster, gsd)
        trainable = [b for b, block in enumerate(partition.blocks) if block.trainable]
        for b, window in windows.items():
            bound = bounds[trainable.index(b)]
            assert window.width * window.height <= bound
            assert bound <= 1.5 * window.width * window.height + 4 * math.sqrt(bound)  # and not far above
