"""Bird-view, pose-based partition of a survey into blocks."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from birdnerf.errors import BirdnerfError
from birdnerf.partition.footprint import Footprints, compute_footprints
from birdnerf.partition.layout import block_id, choose_shape, core_cell, coverage, expanded_rects, grid_edges
from birdnerf.partition.manifest import Block, Partition, PartitionConfig
from birdnerf.scene.frame import FrameEstimate, to_world_frame
from birdnerf.scene.scene import Scene, merge_scenes


def altitude_range(scene: Scene, rect: list[float], altitude: float, margin: float) -> tuple[float, float]:
    """(zmin, zmax) of the surface inside ``rect``: from sparse points, else a slab over the ground.

    Without points the slab reaches from a little below the ground to half the flying height.
    """
    ground = float(scene.ground_z or 0.0)
    zmin, zmax = ground - 0.05 * altitude, ground + 0.5 * altitude
    pts = scene.points
    if pts is not None and len(pts):
        inside = (
            (pts[:, 0] >= rect[0]) & (pts[:, 0] <= rect[2]) & (pts[:, 1] >= rect[1]) & (pts[:, 1] <= rect[3])
        )
        z = pts[inside, 2] if inside.sum() >= 10 else pts[:, 2]
        lo, hi = np.quantile(z, [0.005, 0.995])
        pad = margin * max(hi - lo, 0.05 * altitude)
        zmin, zmax = min(lo - pad, ground - 0.02 * altitude), hi + pad
    # The box must stay below the cameras, or training rays would start inside it.
    return float(zmin), float(min(zmax, ground + 0.95 * altitude))


def partition_scene(scene: Scene, config: PartitionConfig, dataset: str = "") -> Partition:
    """Cut a z-up ``scene`` (see :func:`birdnerf.scene.frame.to_world_frame`) into blocks."""
    if not scene.is_world_frame:
        raise ValueError("partition_scene needs a scene in the bird-view world frame")
    train = np.asarray(scene.indices("train"))
    if len(train) == 0:
        raise BirdnerfError("the dataset has no training photos", dataset or None)
    fp = compute_footprints(scene, max_range_factor=config.max_range_factor)
    bounds = fp.bounds()
    rows, cols = config.blocks or choose_shape(
        len(train), bounds[2] - bounds[0], bounds[3] - bounds[1], config.images_per_block
    )
    if rows < 1 or cols < 1:
        raise BirdnerfError(f"block grid {rows}x{cols} must have at least one row and column", dataset)
    x_edges, y_edges = grid_edges(fp.center[train], bounds, rows, cols, dataset)
    expanded = expanded_rects(x_edges, y_edges, config.overlap, config.overlap_m)
    members = assign_photos(fp, x_edges, y_edges, expanded, config.min_coverage)
    names = scene.names
    altitude = float(np.median(fp.altitude))
    core_row, core_col = core_cell(fp.center, x_edges, y_edges)
    blocks = []
    for r in range(rows):
        for c in range(cols):
            core = [x_edges[c], y_edges[r], x_edges[c + 1], y_edges[r + 1]]
            rect = expanded[r, c].tolist()
            zmin, zmax = altitude_range(scene, rect, altitude, config.box_margin)
            photos = sorted(members.get(r * cols + c, {}).items())
            images = [names[i] for i, _ in photos if scene.split[i] == "train"]
            tests = [names[i] for i, _ in photos if scene.split[i] == "test"]
            owned = int(np.sum((core_row[train] == r) & (core_col[train] == c)))
            stats = {
                "n_images": len(images),
                "n_test_images": len(tests),
                "n_core_images": owned,
                "core_area": (core[2] - core[0]) * (core[3] - core[1]),
                "mean_coverage": float(np.mean([f for i, f in photos if scene.split[i] == "train"] or [0.0])),
            }
            box = [rect[0], rect[1], zmin, rect[2], rect[3], zmax]
            blocks.append(Block(block_id(r, c), r, c, core, rect, box, images, tests, stats))
    return Partition(
        dataset=dataset,
        config=config,
        frame={},
        x_edges=x_edges.tolist(),
        y_edges=y_edges.tolist(),
        blocks=blocks,
    )


def assign_photos(
    fp: Footprints, x_edges: np.ndarray, y_edges: np.ndarray, expanded: np.ndarray, min_coverage: float
) -> dict[int, dict[int, float]]:
    """block index -> {photo index: fraction of its pixels in the block's expanded rectangle}."""
    photo, block, frac = coverage(fp.samples, x_edges, y_edges, expanded)
    cols = len(x_edges) - 1
    members: dict[int, dict[int, float]] = {}
    for p, b, f in zip(photo.tolist(), block.tolist(), frac.tolist(), strict=True):
        if f >= min_coverage:
            members.setdefault(b, {})[p] = f
    # Every photo trains at least the block whose core holds its centre pixel's ground point.
    row, col = core_cell(fp.center, x_edges, y_edges)
    for p, b in enumerate((row * cols + col).tolist()):
        members.setdefault(b, {}).setdefault(p, 0.0)
    return members


def frame_record(scene: Scene, estimate: FrameEstimate, load_transform: np.ndarray) -> dict:
    """What the manifest keeps of the world frame, so later stages load the same scene."""
    return {
        "load_transform": load_transform.tolist(),
        "world_from_input": scene.world_from_input.tolist(),
        "ground_z": float(scene.ground_z or 0.0),
        "up_source": estimate.up_source,
        "ground_source": estimate.ground_source,
    }


def scene_to_world(scene: Scene) -> tuple[Scene, dict]:
    """Bring a freshly read scene into the world frame; also return the manifest's frame record."""
    before = scene.world_from_input.copy()
    world, estimate = to_world_frame(scene)
    load_transform = world.world_from_input @ np.linalg.inv(before)
    return world, frame_record(world, estimate, load_transform)


def apply_frame(scene: Scene, frame: dict) -> Scene:
    """Apply a manifest's recorded frame to a freshly read scene (no re-estimation)."""
    transform = np.asarray(frame["load_transform"], dtype=np.float64)
    if not np.allclose(transform, np.eye(4)):
        scene = scene.transformed(transform)
    return replace(scene, ground_z=float(frame["ground_z"]), is_world_frame=True)


def dataset_label(path: Path) -> str:
    """The dataset path as stored in manifests: absolute and resolved."""
    return str(Path(path).resolve())


def partition_dataset(
    data: str | Path, run_dir: str | Path, config: PartitionConfig | None = None, *, force: bool = False
) -> tuple[Partition, Scene]:
    """Read a dataset, find its world frame, partition it, write ``partition.json`` and the map.

    A run that already holds trained blocks or updates is only re-partitioned identically, unless
    ``force``: then its blocks and history are deleted first (they belong to the old blocks).
    Returns the partition and the scene in the world frame.
    """
    from birdnerf.partition.manifest import MANIFEST, read_partition, to_json, write_partition
    from birdnerf.partition.plot import plot_partition
    from birdnerf.scene.load import load_dataset

    config = config or PartitionConfig()
    scene, frame = scene_to_world(load_dataset(data))
    partition = partition_scene(scene, config, dataset=dataset_label(Path(data)))
    partition.frame = frame
    run_dir = Path(run_dir)
    owned = [run_dir / "blocks", run_dir / "history", run_dir / "partition.staged.json"]
    if (run_dir / MANIFEST).exists() and any(p.exists() for p in owned):
        if force:
            for path in owned:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        elif to_json(read_partition(run_dir)) != to_json(partition):
            raise BirdnerfError(
                "this run already has trained blocks or updates for another partition; "
                "use a new run directory, or --force to delete them",
                run_dir,
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_partition(run_dir, partition)
    plot_partition(
        partition,
        scene,
        compute_footprints(scene, max_range_factor=config.max_range_factor),
        run_dir / "partition.png",
    )
    return partition, scene


def load_scene(partition: Partition) -> Scene:
    """The partition's dataset, read again and placed in the partition's world frame, followed by
    the photos of the datasets that updates added (named ``<prefix>/<name>``)."""
    from birdnerf.scene.load import load_dataset

    base = apply_frame(load_dataset(partition.dataset), partition.frame)
    if not partition.sources:
        return base
    added = [
        (
            apply_frame(load_dataset(s["path"]), {**partition.frame, "load_transform": s["load_transform"]}),
            s["prefix"],
        )
        for s in partition.sources
    ]
    return merge_scenes(base, added)
