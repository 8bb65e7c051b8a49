import numpy as np
import pytest
import torch

from birdnerf.composite import (
    BlendIndex,
    block_weights,
    orbit_path,
    read_camera_path,
    visible_blocks,
    write_camera_path,
)
from birdnerf.composite.blend import block_weights_reference
from birdnerf.composite.path import look_at
from birdnerf.composite.view import FAST_MIN_WEIGHT, trimmed_weights
from birdnerf.errors import BirdnerfError
from birdnerf.partition import PartitionConfig, partition_scene
from birdnerf.partition.layout import block_id, expanded_rects
from birdnerf.partition.manifest import Block, Partition
from tests.surveys import NADIR, lawnmower


@pytest.fixture(scope="module")
def partition():
    part = partition_scene(lawnmower(nx=12, ny=12), PartitionConfig(blocks=(3, 3), overlap=0.25))
    part.frame = {"ground_z": 0.0}
    return part


def test_weights_are_a_partition_of_unity(partition):
    rng = np.random.default_rng(0)
    pts = torch.from_numpy(rng.uniform(-60, 180, size=(20000, 2)))
    w = block_weights(pts, partition)
    assert w.shape == (20000, 9)
    assert torch.all(w >= 0)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(20000, dtype=w.dtype))


def random_layout(rng: np.random.Generator) -> Partition:
    """A grid as the partitioner or an update may leave it: uneven cores, overlaps in metres
    (up to twice the narrowest core) or fractions, holes, and blocks too small to train."""
    rows, cols = rng.integers(1, 7, size=2)
    x_edges = np.cumsum(np.r_[rng.uniform(-50, 50), rng.uniform(2, 60, cols)])
    y_edges = np.cumsum(np.r_[rng.uniform(-50, 50), rng.uniform(2, 60, rows)])
    narrowest = min(np.diff(x_edges).min(), np.diff(y_edges).min())
    overlap_m = rng.uniform(0, 2 * narrowest) if rng.random() < 0.5 else None
    rects = expanded_rects(x_edges, y_edges, rng.uniform(0, 0.5), overlap_m)
    blocks = []
    for r in range(rows):
        for c in range(cols):
            if rows * cols > 1 and rng.random() < 0.2:
                continue  # a hole: no block was ever made here
            images = ["a.png", "b.png"] if rng.random() > 0.15 else []
            core = [x_edges[c], y_edges[r], x_edges[c + 1], y_edges[r + 1]]
            rect = rects[r, c].tolist()
            blocks.append(Block(block_id(r, c), r, c, core, rect, [*rect[:2], 0, *rect[2:], 10], images, []))
    if not any(b.trainable for b in blocks):
        blocks[0].images = ["a.png", "b.png"]
    return Partition("", PartitionConfig(), {"ground_z": 0.0}, x_edges.tolist(), y_edges.tolist(), blocks)


@pytest.mark.parametrize("seed", range(40))
def test_weights_are_a_partition_of_unity_on_any_layout(seed):
    rng = np.random.default_rng(seed)
    part = random_layout(rng)
    x, y = part.x_edges, part.y_edges
    pts = np.column_stack(
        [rng.uniform(x[0] - 30, x[-1] + 30, 5000), rng.uniform(y[0] - 30, y[-1] + 30, 5000)]
    )
    # Points on and next to every edge, where bands meet.
    edges = np.array(np.meshgrid(x, y)).reshape(2, -1).T
    pts = np.concatenate([pts, edges, edges + 1e-9, edges - 1e-9])
    fraction = rng.uniform(0.1, 1.0)
    sparse = BlendIndex(part, fraction).weights(torch.from_numpy(pts))
    assert torch.all(sparse.weight >= 0)
    assert torch.all(sparse.weight.sum(dim=1).sub(1).abs() <= 1e-6)
    # The index agrees with a scan of every block's separable weight (no renormalisation
    # hides bands that meet: the scan's weights are products, the index's pairs per axis).
    dense = block_weights_reference(torch.from_numpy(pts), part, fraction)
    torch.testing.assert_close(sparse.dense(len(part.blocks)), dense, atol=1e-9, rtol=0)
    used = sparse.index[sparse.weight > 0]
    assert all(part.blocks[b].trainable for b in used.unique().tolist())
    # Inside a trainable block's core, away from its edges, that block has every bit of the weight.
    for k, b in enumerate(part.blocks):
        inner = torch.tensor([[(b.core[0] + b.core[2]) / 2, (b.core[1] + b.core[3]) / 2]])
        w = BlendIndex(part, fraction=0.01).weights(inner)
        if b.trainable:
            assert w.index[0, 0] == k and w.weight[0, 0] == 1.0


def test_owner_far_inside_a_block_is_that_block(partition):
    for k, b in enumerate(partition.blocks):
        center = torch.tensor([[(b.core[0] + b.core[2]) / 2, (b.core[1] + b.core[3]) / 2]])
        w = block_weights(center, partition)[0]
        assert w[k] == 1.0 and w.sum() == 1.0


def test_weights_blend_smoothly_only_inside_the_overlap(partition):
    b = partition.blocks[0]  # r00c00; its right edge is shared with r00c01
    edge = b.core[2]
    overlap = b.expanded[2] - b.core[2]
    y = (b.core[1] + b.core[3]) / 2
    xs = torch.linspace(edge - overlap, edge + overlap, 201, dtype=torch.float64)
    w = block_weights(torch.stack([xs, torch.full_like(xs, y)], -1), partition)
    left, right = w[:, 0], w[:, 1]
    assert torch.all(left[1:] <= left[:-1] + 1e-12)  # monotone hand-over
    assert left[100] == pytest.approx(0.5)  # half-way at the shared edge
    assert left[0] == 1.0 and right[-1] == 1.0
    # Blending happens within half the overlap of the edge: a block never renders beyond
    # the part of its expanded rectangle that it was trained on.
    blended = (left > 0) & (right > 0)
    assert torch.all((xs[blended] - edge).abs() <= 0.5 * overlap + 1e-9)


def test_only_blocks_under_the_view_are_visible(partition):
    scene = lawnmower(nx=1, ny=1)
    cam = scene.cameras[0]
    corner = partition.blocks[0]
    c2w = np.eye(4)
    c2w[:3, :3] = NADIR
    c2w[:3, 3] = [corner.core[0] + 5, corner.core[1] + 5, 20.0]  # low, over the first block's corner
    assert visible_blocks(partition, cam, c2w) == [corner.id]
    c2w[:3, 3] = [partition.x_edges[1], partition.y_edges[1], 50.0]  # over a 4-block corner
    assert sorted(visible_blocks(partition, cam, c2w)) == ["r00c00", "r00c01", "r01c00", "r01c01"]


def test_camera_path_round_trip(tmp_path, partition):
    cam = lawnmower(nx=1, ny=1).cameras[0]
    path = orbit_path(partition, cam, altitude=40.0, frames=6)
    back = read_camera_path(write_camera_path(tmp_path / "path.json", path))
    np.testing.assert_allclose(back.c2w, path.c2w, atol=1e-8)
    assert (back.camera.width, back.camera.height) == (cam.width, cam.height)
    assert back.camera.fy == pytest.approx(cam.fy)
    # Every orbit camera looks at the site centre, from 40 m up.
    np.testing.assert_allclose(path.c2w[:, 2, 3], 40.0)
    pose = look_at(np.array([0.0, 0.0, 10.0]), np.array([0.0, 0.0, 0.0]))
    np.testing.assert_allclose(pose[:3, 2], [0, 0, -1])


def test_bad_camera_path_is_one_clear_error(tmp_path):
    bad = tmp_path / "path.json"
    bad.write_text('{"render_width": 10}')
    with pytest.raises(BirdnerfError, match="path.json: not a camera path"):
        read_camera_path(bad)


def test_the_fast_paths_trimmed_weights_are_continuous_and_sum_to_one(partition):
    """Trimmed by FAST_MIN_WEIGHT, a block stops rendering where its weight falls to it, without a
    step: across the band at the shared edge and at a four-block corner, neighbouring points
    1 mm apart differ by about as little as untrimmed weights do, and every point's weights sum
    to one."""
    index = BlendIndex(partition)
    b = partition.blocks[0]
    edge, top = b.core[2], b.core[3]
    overlap = b.expanded[2] - b.core[2]
    xs = torch.arange(edge - overlap, edge + overlap, 1e-3, dtype=torch.float64)
    for y in ((b.core[1] + b.core[3]) / 2, top, top + 0.1 * overlap):  # an edge, the corner, near it
        pts = torch.stack([xs, torch.full_like(xs, y)], -1)
        full = index.weights(pts).dense(len(partition.blocks))
        trimmed = trimmed_weights(index, pts, FAST_MIN_WEIGHT)
        dense = trimmed.dense(len(partition.blocks))
        assert torch.all(dense >= 0)
        assert torch.all(dense.sum(dim=1).sub(1).abs() <= 1e-6)
        step = (dense[1:] - dense[:-1]).abs().max()
        assert step <= 2 * (full[1:] - full[:-1]).abs().max() + 1e-9
        assert step < 1e-3  # a hard cut at 5 % would step by 0.05
        # Fewer renders: the blocks a point uses are those whose full weight exceeds the trim.
        used = dense > 0
        assert torch.equal(used, full > FAST_MIN_WEIGHT)
        assert used.sum() < (full > 0).sum()
