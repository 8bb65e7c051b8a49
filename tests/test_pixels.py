"""Training pixels streamed from disk agree value by value with the in-memory reference rays."""

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from birdnerf.partition import PartitionConfig, partition_dataset
from birdnerf.scene.camera import Camera
from birdnerf.train.data import block_rays, photo_rays
from birdnerf.train.pixels import (
    COLORS_FILE,
    INDEX_FILE,
    READ_BYTES,
    BlockPixels,
    PixelIndex,
    block_pixels,
    camera_table,
    held_out_pixels,
    mask_runs,
    pixel_rays,
)


@pytest.fixture(scope="module")
def split_block(mini_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("pixels") / "run"
    partition, scene = partition_dataset(mini_dataset, run, PartitionConfig(blocks=(1, 2)))
    return scene, partition.blocks[0]


def test_streamed_pixels_equal_the_reference_rays(split_block, tmp_path):
    scene, block = split_block
    ref = block_rays(scene, block, block.images)
    # A tiny chunk and budget: indexing works a few rows at a time and the map is reopened often.
    pixels = block_pixels(scene, block, tmp_path, budget_bytes=4 * READ_BYTES * 100, chunk_pixels=300)
    assert len(pixels) == len(ref) > 1000
    assert pixels.names == ref.names
    k = torch.randint(len(ref), (5000,), generator=torch.Generator().manual_seed(1))
    for part in k.split(100):  # the map is reopened every 4 batches
        batch = pixels.batch(part)
        assert torch.equal(batch.image_ids, ref.image_ids[part])
        assert torch.equal(batch.rgb, ref.rgb[part])
        torch.testing.assert_close(batch.origins, ref.origins[part], rtol=0, atol=1e-5)
        torch.testing.assert_close(batch.dirs, ref.dirs[part], rtol=0, atol=1e-6)
    photo, col, row = pixels.index.locate(np.arange(len(ref)))
    assert np.array_equal(np.stack([col, row], 1), ref.pixels.numpy())
    assert np.array_equal(photo, ref.image_ids.numpy())
    # The held-out variant (colours decoded on demand) reads the same pixels.
    memory = held_out_pixels(scene, block, block.images)
    assert torch.equal(memory.batch(k[:500]).rgb, ref.rgb[k[:500]])


def test_the_cache_is_reused_until_the_block_changes(split_block, tmp_path):
    scene, block = split_block
    first = block_pixels(scene, block, tmp_path)
    stamp = (tmp_path / COLORS_FILE).stat().st_mtime_ns
    again = block_pixels(scene, block, tmp_path)
    assert (tmp_path / COLORS_FILE).stat().st_mtime_ns == stamp
    assert len(again) == len(first)
    smaller = dataclasses.replace(block, expanded=list(block.core))
    rebuilt = block_pixels(scene, smaller, tmp_path)
    assert len(rebuilt) == len(block_rays(scene, smaller, block.images)) < len(first)
    (tmp_path / INDEX_FILE).write_bytes(b"damaged")
    assert len(block_pixels(scene, smaller, tmp_path)) == len(rebuilt)


def test_rays_of_distorted_cameras_match_the_reference(split_block):
    scene, _ = split_block
    cams = [
        Camera(40, 30, 35.0, 36.0, 19.5, 15.2, k1=-0.12, k2=0.03, p1=0.002, p2=-0.001),
        Camera(40, 30, 30.0, 30.0, 20.0, 15.0),
    ]
    c2w = torch.from_numpy(scene.c2w[:2].copy())
    photo = torch.tensor([0] * 1200 + [1] * 1200)
    v, u = torch.meshgrid(torch.arange(30), torch.arange(40), indexing="ij")
    cols, rows = u.flatten().repeat(2), v.flatten().repeat(2)
    origins, dirs = pixel_rays(camera_table(cams), c2w, photo, cols, rows)
    for p, cam in enumerate(cams):
        one = dataclasses.replace(
            scene, cameras=[cam], c2w=scene.c2w[p : p + 1], image_paths=scene.image_paths[:1], split=["train"]
        )
        o_ref, d_ref = photo_rays(one, 0)
        sel = photo == p
        torch.testing.assert_close(origins[sel], o_ref.reshape(-1, 3).float(), rtol=0, atol=1e-5)
        torch.testing.assert_close(dirs[sel], d_ref.reshape(-1, 3).float(), rtol=0, atol=1e-6)


def test_mask_runs():
    mask = np.array([[0, 1, 1, 0, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=bool)
    rows, first, length = mask_runs(mask)
    assert rows.tolist() == [0, 0, 1] and first.tolist() == [1, 4, 0] and length.tolist() == [2, 1, 5]


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident set from /proc")
def test_the_colour_map_stays_within_its_budget(split_block, tmp_path):
    scene, block = split_block
    n = 24 << 20  # 72 MB of colours
    colors = tmp_path / COLORS_FILE
    with open(colors, "wb") as f:
        f.truncate(3 * n)
    index = PixelIndex(block.images[:1], [0], np.zeros((1, 3), dtype=np.int32), np.array([0, n]))
    rng = np.random.default_rng(0)

    def growth(budget: int) -> float:
        pixels = BlockPixels(scene, index, colors, budget_bytes=budget)
        before = resident_mb()
        for _ in range(6):
            pixels._colors(rng.integers(0, n, 4096))
        return resident_mb() - before

    unbounded, bounded = growth(1 << 40), growth(16 << 20)
    assert unbounded > 40, unbounded  # without reopening, random reads map most of the file
    assert bounded < 16 + 8, bounded


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
