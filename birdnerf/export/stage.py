"""The export stage: a coloured point cloud and a TSDF mesh of a trained run, block by block.

For each trained block, its training viewpoints are rendered as RGB-D views from the composite
(:mod:`birdnerf.export.views`), pixels that neighbouring views do not confirm are dropped
(:mod:`birdnerf.export.fuse`), and what lies in the block's core goes to disk: the fused points
(one per voxel, with normals) and the TSDF mesh of the views, cropped to the core so that the
overlaps between blocks are not doubled. The blocks' parts are assembled into the final PLYs at
the end (:mod:`birdnerf.export.ply`), so memory follows one block, not the site.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from birdnerf import atomic
from birdnerf.composite import BlendIndex, BlockCache
from birdnerf.device import resolve_device
from birdnerf.errors import BirdnerfError
from birdnerf.export.budget import check_export_fits, export_needs
from birdnerf.export.frames import OutputFrame, output_frame
from birdnerf.export.fuse import consistent_masks, fused_points, voxel_merge
from birdnerf.export.geometry import crop_mesh, oriented_normals, require_open3d, tsdf_mesh
from birdnerf.export.ply import PlyParts, vertex_records
from birdnerf.export.views import block_views, render_views
from birdnerf.partition import load_scene, read_partition
from birdnerf.partition.manifest import Block, Partition
from birdnerf.progress import ProgressFn
from birdnerf.runlock import locks_run
from birdnerf.scene.scene import Scene
from birdnerf.torch_globals import keep_torch_globals


@dataclass
class ExportConfig:
    """How views are rendered, which surface points are trusted, and how they are sampled."""

    frame: str = "world"
    """Output coordinates: "world" (the run's frame), "input" (the dataset's input frame) or "enu"
    (georeferenced East-North-Up metres; the origin is written to ``<file>.geo.json``)."""
    render_scale: float = 1.0
    """Size of the rendered views relative to the photos."""
    max_views: int = 32
    """Training viewpoints rendered per block, at most (evenly spread over its photos)."""
    min_agree: int = 2
    """Other views whose rendered depth must confirm a surface point for it to be kept (K)."""
    neighbours: int = 8
    """Views a point is checked against: those with the nearest camera centres."""
    depth_tolerance: float = 0.02
    """Agreement tolerance: ``|depth in view j - point's depth in view j|`` at most this fraction
    of that depth."""
    min_opacity: float = 0.5
    """Rays whose opacity stays under this meet no surface."""
    point_spacing: float | None = None
    """Points are merged to one per cube of this edge (scene units: metres when georeferenced);
    None: the views' ground sample distance (altitude / focal length in rendered pixels)."""
    mesh_voxel: float | None = None
    """TSDF voxel edge (scene units); None: the views' ground sample distance."""
    sdf_trunc_voxels: float = 4.0
    """TSDF truncation distance, in voxels."""
    device: str = "auto"
    """Where the block models run (``auto``: CUDA when available)."""


@dataclass
class ExportSummary:
    """What the export wrote."""

    points: Path | None = None
    mesh: Path | None = None
    geo: list[Path] = field(default_factory=list)
    n_points: int = 0
    n_vertices: int = 0
    n_triangles: int = 0
    blocks: list[str] = field(default_factory=list)
    views: int = 0
    point_spacing: float = 0.0
    mesh_voxel: float = 0.0
    seconds: float = 0.0


def _writes_into_run(run_dir, *_, points=None, mesh=None, **__) -> bool:
    root = Path(run_dir).resolve()
    return any(p is not None and Path(p).resolve().is_relative_to(root) for p in (points, mesh))


@locks_run("export", when=_writes_into_run)
@keep_torch_globals()
def export_run(
    run_dir: str | Path,
    *,
    points: str | Path | None = None,
    mesh: str | Path | None = None,
    config: ExportConfig | None = None,
    progress: ProgressFn | None = None,
) -> ExportSummary:
    """Export the trained run as a point cloud PLY (``points``) and/or a mesh PLY (``mesh``).

    Both are binary PLYs with double-precision positions, normals and 8-bit colours, in
    ``config.frame``; each is written under its name only when complete. ``progress`` is called
    once per block with its point and triangle counts.
    """
    config = config or ExportConfig()
    start = time.perf_counter()
    outputs = [Path(p) for p in (points, mesh) if p is not None]
    _check_outputs(outputs, points is not None and mesh is not None)
    partition = read_partition(run_dir)
    scene = load_scene(partition)
    frame = output_frame(partition, config.frame, scene.geo)
    require_open3d()
    gsd = ground_sample_distance(scene, partition, config.render_scale)
    spacing = config.point_spacing or gsd
    voxel = config.mesh_voxel or gsd
    needs = export_needs(partition, scene, config, gsd, voxel, spacing, points is not None, mesh is not None)
    check_export_fits(needs, outputs[0].absolute().parent)
    blocks = [b for b in partition.blocks if b.trainable]
    summary = ExportSummary(point_spacing=spacing, mesh_voxel=voxel)
    cache = BlockCache(run_dir, capacity=8, device=resolve_device(config.device))
    index = BlendIndex(partition)
    work = atomic.partial_dir(outputs[0])
    try:
        cloud_parts, mesh_parts = PlyParts(work, "points"), PlyParts(work, "mesh")
        for k, block in enumerate(blocks):
            chosen = block_views(scene, block, config.max_views)
            views = render_views(
                partition, cache, index, scene, chosen, config.render_scale, config.min_opacity
            )
            masks = consistent_masks(views, config.depth_tolerance, config.min_agree, config.neighbours)
            summary.views += len(views)
            if points is not None:
                cloud_parts.append(block_cloud(views, masks, partition, block, spacing, frame))
            if mesh is not None:
                mesh_parts.append(*block_mesh(views, masks, partition, block, voxel, config, frame))
            summary.blocks.append(block.id)
            if progress:
                info = {"block": block.id, "views": len(views)}
                if points is not None:
                    info["points"] = cloud_parts.n_vertices
                if mesh is not None:
                    info["triangles"] = mesh_parts.n_faces
                progress(k + 1, len(blocks), info)
        comments = [f"birdnerf export of {Path(run_dir).resolve().name}", f"frame {frame.name}"]
        if frame.geo:
            comments.append("origin WGS84 lat {lat} lon {lon} alt {alt}".format(**frame.geo))
        if points is not None:
            summary.points = cloud_parts.assemble(Path(points), comments)
            summary.n_points = cloud_parts.n_vertices
        if mesh is not None:
            summary.mesh = mesh_parts.assemble(Path(mesh), comments)
            summary.n_vertices, summary.n_triangles = mesh_parts.n_vertices, mesh_parts.n_faces
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary.geo = [geo for geo in (write_geo(p, frame) for p in outputs) if geo is not None]
    summary.seconds = time.perf_counter() - start
    return summary


def block_cloud(views, masks, partition: Partition, block: Block, spacing: float, frame: OutputFrame):
    """The block's fused points in its core, one per voxel, with oriented normals, as PLY records.

    Normals are fitted on the points of the core and a margin of three voxels around it, so the
    fit at a core's edge sees the surface beyond it."""
    xyz, rgb, toward = fused_points(views, masks)
    near = torch.from_numpy(owned(xyz[:, :2].numpy(), partition, block, margin=3 * spacing))
    xyz, rgb, toward = voxel_merge(xyz[near], rgb[near], toward[near], spacing)
    xyz, toward = xyz.numpy(), toward.numpy()
    normals = oriented_normals(xyz, toward, radius=3 * spacing)
    mine = owned(xyz[:, :2], partition, block)
    colors = (rgb[torch.from_numpy(mine)].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    return vertex_records(frame.points(xyz[mine]), frame.directions(normals[mine]), colors)


def block_mesh(views, masks, partition: Partition, block: Block, voxel: float, config, frame: OutputFrame):
    """The TSDF mesh of the block's views, its triangles whose centroid lies in the block's core,
    as PLY vertex records and (T, 3) triangles."""
    fused = tsdf_mesh(views, masks, voxel, config.sdf_trunc_voxels)
    part = crop_mesh(fused, owned(fused.vertices[fused.triangles].mean(axis=1), partition, block))
    triangles = part.triangles[:, ::-1] if frame.flips_orientation else part.triangles
    return vertex_records(frame.points(part.vertices), frame.directions(part.normals), part.colors), triangles


def owned(xy: np.ndarray, partition: Partition, block: Block, margin: float = 0.0) -> np.ndarray:
    """(N,) bool: bird-view points (N, >=2) in the block's core (grown by ``margin``). Cores tile
    the plane as half-open cells ``[x0, x1) x [y0, y1)``, the outer ones reaching to infinity,
    as :func:`birdnerf.partition.layout.core_cell` assigns points."""
    xs, ys = partition.x_edges, partition.y_edges
    x0 = -np.inf if block.col == 0 else xs[block.col]
    x1 = np.inf if block.col == len(xs) - 2 else xs[block.col + 1]
    y0 = -np.inf if block.row == 0 else ys[block.row]
    y1 = np.inf if block.row == len(ys) - 2 else ys[block.row + 1]
    x, y = np.asarray(xy[:, 0]), np.asarray(xy[:, 1])
    return (x >= x0 - margin) & (x < x1 + margin) & (y >= y0 - margin) & (y < y1 + margin)


def ground_sample_distance(scene: Scene, partition: Partition, scale: float) -> float:
    """Median height of the cameras above the ground over their focal length in rendered pixels:
    the ground footprint of one rendered pixel at the centre of a nadir view (scene units)."""
    heights = scene.centers[:, 2] - float(partition.frame["ground_z"])
    focal = np.array([c.fy for c in scene.cameras]) * scale
    gsd = float(np.median(heights / focal))
    if not np.isfinite(gsd) or gsd <= 0:
        raise BirdnerfError("cameras are not above the ground; give --point-spacing and --mesh-voxel")
    return gsd


def write_geo(out: Path, frame: OutputFrame) -> Path | None:
    """``<out>.geo.json`` with the ENU origin for a georeferenced export; a stale one is removed."""
    path = out.with_name(out.name + ".geo.json")
    if frame.geo is None:
        path.unlink(missing_ok=True)
        return None
    record = {"file": out.name, **frame.geo, "units": "metres", "axes": "x east, y north, z up"}
    atomic.write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def _check_outputs(outputs: list[Path], both: bool) -> None:
    if not outputs:
        raise BirdnerfError("nothing to export: give a point cloud and/or a mesh file (--points, --mesh)")
    for out in outputs:
        if out.suffix.lower() != ".ply":
            raise BirdnerfError("output files are PLY: the name must end in .ply", out)
        if out.is_dir():
            raise BirdnerfError("is a folder, not a file name", out)
    if both and outputs[0].resolve() == outputs[1].resolve():
        raise BirdnerfError("the point cloud and the mesh need different files", outputs[0])
