"""Bird-view, pose-based partition of a survey into blocks."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from birdnerf import atomic
from birdnerf.errors import BirdnerfError
from birdnerf.partition.footprint import Footprints, compute_footprints
from birdnerf.partition.layout import block_id, choose_shape, core_cell, coverage, expanded_rects, grid_edges
from birdnerf.partition.manifest import Block, Partition, PartitionConfig, points_path
from birdnerf.runlayout import POINTS as POINTS_FILE
from birdnerf.runlayout import RunLayout
from birdnerf.runlock import run_lock
from birdnerf.scene.frame import FrameEstimate, to_world_frame
from birdnerf.scene.scene import Scene, merge_scenes


def altitude_range(
    scene: Scene,
    rect: list[float],
    altitude: float,
    margin: float,
    *,
    headroom: float = 0.0,
    ground_uncertainty: float = 0.0,
    z_range: list[float] | tuple[float, float] | None = None,
) -> tuple[float, float]:
    """(zmin, zmax) of the surface inside ``rect``: from sparse points, else a slab over the ground.

    Without points the slab reaches from a little below the ground to half the flying height.
    With points it spans their range, and reaches at least ``headroom`` times the flying height
    above the ground (see :attr:`PartitionConfig.headroom`); where points exist the block's
    surface prior still narrows the samples to a shell around them.
    A guessed ground (``ground_uncertainty`` > 0: how far below ``scene.ground_z`` the true
    ground may lie) widens the slab from that far below the guess to just below the cameras.
    A user-stated ``z_range`` (world z) is the range, as given.
    """
    if z_range is not None:
        return float(z_range[0]), float(z_range[1])
    ground = float(scene.ground_z or 0.0)
    zmin, zmax = ground - 0.05 * altitude, ground + 0.5 * altitude
    pts = scene.points
    if ground_uncertainty > 0:
        zmin, zmax = ground - ground_uncertainty, ground + altitude
    elif pts is not None and len(pts):
        inside = (
            (pts[:, 0] >= rect[0]) & (pts[:, 0] <= rect[2]) & (pts[:, 1] >= rect[1]) & (pts[:, 1] <= rect[3])
        )
        z = pts[inside, 2] if inside.sum() >= 10 else pts[:, 2]
        lo, hi = np.quantile(z, [0.005, 0.995])
        pad = margin * max(hi - lo, 0.05 * altitude)
        zmin, zmax = min(lo - pad, ground - 0.02 * altitude), max(hi + pad, ground + headroom * altitude)
    # The box must stay below the cameras, or training rays would start inside it.
    return float(zmin), float(min(zmax, ground + 0.95 * altitude))


def box_options(frame: dict, config: PartitionConfig) -> dict:
    """The keyword arguments of :func:`altitude_range` that a manifest's frame record and
    config set."""
    return {
        "headroom": config.headroom,
        "ground_uncertainty": float(frame.get("ground_uncertainty_m", 0.0)),
        "z_range": frame.get("z_range"),
    }


def partition_scene(
    scene: Scene, config: PartitionConfig, dataset: str = "", frame: dict | None = None
) -> Partition:
    """Cut a z-up ``scene`` (see :func:`birdnerf.scene.frame.to_world_frame`) into blocks.

    ``frame`` is the manifest's frame record (see :func:`scene_to_world`); its
    ``ground_uncertainty_m`` and ``z_range`` shape the blocks' boxes.
    """
    frame = frame or {}
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
    heights = box_options(frame, config)
    blocks = []
    for r in range(rows):
        for c in range(cols):
            core = [x_edges[c], y_edges[r], x_edges[c + 1], y_edges[r + 1]]
            rect = expanded[r, c].tolist()
            zmin, zmax = altitude_range(scene, rect, altitude, config.box_margin, **heights)
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
        frame=frame,
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
    record = {
        "load_transform": load_transform.tolist(),
        "world_from_input": scene.world_from_input.tolist(),
        "ground_z": float(scene.ground_z or 0.0),
        "up_source": estimate.up_source,
        "ground_source": estimate.ground_source,
    }
    ground = estimate.ground
    if ground.uncertainty > 0:
        record["ground_uncertainty_m"] = float(ground.uncertainty)
    if ground.measured_points:
        record["measured_points"] = int(ground.measured_points)
        record["points_file"] = POINTS_FILE
    if ground.points_reach_z is not None and np.isfinite(ground.points_reach_z):
        record["points_reach_z"] = float(ground.points_reach_z - estimate.z_shift)  # world z
    return record


def scene_to_world(
    scene: Scene, ground_z: float | None = None, z_range: tuple[float, float] | None = None
) -> tuple[Scene, dict]:
    """Bring a freshly read scene into the world frame; also return the manifest's frame record.

    ``ground_z`` and ``z_range`` are user-stated heights along the dataset's up axis (see
    :class:`~birdnerf.partition.manifest.PartitionConfig`); ``z_range`` is recorded in world z.
    """
    before = scene.world_from_input.copy()
    world, estimate = to_world_frame(scene, ground_z=ground_z)
    load_transform = world.world_from_input @ np.linalg.inv(before)
    record = frame_record(world, estimate, load_transform)
    if z_range is not None:
        record["z_range"] = [float(z_range[0] - estimate.z_shift), float(z_range[1] - estimate.z_shift)]
    return world, record


def check_user_geometry(scene: Scene, frame: dict, config: PartitionConfig) -> None:
    """Raise BirdnerfError when a user-stated height is not below every camera (the message uses
    the dataset's heights, as the user gave them)."""
    lowest = float(scene.centers[:, 2].min())  # world z
    if config.ground_z is not None and float(scene.ground_z or 0.0) >= lowest:
        top = lowest + config.ground_z - float(scene.ground_z or 0.0)
        raise BirdnerfError(f"--ground-z {config.ground_z:g} is not below the cameras (lowest at {top:.4g})")
    if config.z_range is not None and frame["z_range"][1] >= lowest:
        top = lowest + config.z_range[1] - frame["z_range"][1]
        raise BirdnerfError(
            f"--z-range top {config.z_range[1]:g} is not below the cameras (lowest at {top:.4g})"
        )


def apply_frame(scene: Scene, frame: dict) -> Scene:
    """Apply a manifest's recorded frame to a freshly read scene (no re-estimation)."""
    transform = np.asarray(frame["load_transform"], dtype=np.float64)
    if not np.allclose(transform, np.eye(4)):
        scene = scene.transformed(transform)
    return replace(scene, ground_z=float(frame["ground_z"]), is_world_frame=True)


def dataset_label(path: Path) -> str:
    """The dataset path as stored in manifests: absolute and resolved."""
    return str(Path(path).resolve())


def plan_partition(data: str | Path, config: PartitionConfig) -> tuple[Partition, Scene, dict]:
    """Read a dataset (every photo's header checked), find its world frame and partition it;
    nothing is written. Returns the partition, the scene in the world frame and the frame."""
    from birdnerf.scene.images import check_photos
    from birdnerf.scene.load import load_dataset

    config.check()
    raw = load_dataset(data)
    check_photos(raw.image_paths, raw.cameras, raw.names, Path(data))
    scene, frame = scene_to_world(raw, config.ground_z, config.z_range)
    check_user_geometry(scene, frame, config)
    return partition_scene(scene, config, dataset=dataset_label(Path(data)), frame=frame), scene, frame


def partition_dataset(
    data: str | Path, run_dir: str | Path, config: PartitionConfig | None = None, *, force: bool = False
) -> tuple[Partition, Scene]:
    """Read a dataset, find its world frame, partition it, write ``partition.json`` and the map.

    A run that already holds trained blocks or updates is only re-partitioned identically, unless
    ``force``: then its blocks and history are deleted first (they belong to the old blocks).
    Returns the partition and the scene in the world frame.
    """
    from birdnerf.partition.manifest import read_partition, to_json, write_partition
    from birdnerf.partition.plot import plot_partition

    config = config or PartitionConfig()
    partition, scene, frame = plan_partition(data, config)
    run_dir = Path(run_dir)
    partition.run_dir = run_dir
    with run_lock(run_dir, "partition"):
        layout = RunLayout(run_dir)
        owned = [layout.blocks, layout.history, layout.staged]
        if layout.manifest.exists() and any(p.exists() for p in owned):
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
        points = layout.points
        if frame.get("points_file"):
            # Measured points live with the run: the dataset may be read-only, and every later stage
            # (the training's surface prior first) must see the same points.
            with atomic.atomic_path(points) as tmp, open(tmp, "wb") as f:
                np.savez(f, xyz=scene.points.astype(np.float64), rgb=np.asarray(scene.point_colors, np.uint8))
        else:
            points.unlink(missing_ok=True)  # measured for an earlier partition of this run
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
    if base.points is None and partition.frame.get("points_file"):
        base.points, base.point_colors = read_points(partition)
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


def read_points(partition: Partition) -> tuple[np.ndarray, np.ndarray]:
    """The points measured at partition time, (M, 3) float64 world xyz and (M, 3) uint8 RGB,
    from the file the frame record names inside the run directory."""
    if partition.run_dir is None:
        raise ValueError("this partition was not read from a run directory; its points file is unknown")
    path = points_path(partition.run_dir, partition.frame["points_file"])
    try:
        with np.load(path, allow_pickle=False) as data:
            return data["xyz"].astype(np.float64), data["rgb"].astype(np.uint8)
    except FileNotFoundError:
        raise BirdnerfError(
            "measured points file is missing (run `birdnerf partition` again)", path
        ) from None
    except (OSError, KeyError, ValueError) as err:
        raise BirdnerfError(f"points file needs arrays 'xyz' and 'rgb' ({err})", path) from None
