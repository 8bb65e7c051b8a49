"""Accuracy and cost of ``birdnerf export`` on a sample scene (a script, not a test).

Generates a sample scene (or reuses one), partitions and trains it (finished blocks are kept, so
a second call only exports), exports the point cloud and the TSDF mesh, and scores both against
the scene's exact surface (its ground-truth depth maps) at 0.25 m and 0.5 m, beside the flat
plane at the ground height sampled on the same area at the same spacing. Prints precision,
recall and F-score overall and on the structures (points over half a metre above the terrain),
the point and triangle counts, the export time, and each F-score's ratio to the plane's.

    PYTHONPATH=. python benchmarks/bench_export.py --out /tmp/birdnerf-export   # small scene, 2 x 2 blocks
    PYTHONPATH=. python benchmarks/bench_export.py --run /tmp/some/trained/run  # score an existing run
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from birdnerf.export import ExportConfig, export_run, reference_surface, score_points
from birdnerf.export.score import flat_plane
from birdnerf.partition import PartitionConfig, partition_dataset, read_partition
from birdnerf.synthetic import generate_sample_scene
from birdnerf.train import TrainConfig, train_run


def prepare(args: argparse.Namespace) -> Path:
    """A trained run: the one given, or the sample scene's, trained here when needed."""
    if args.run:
        return args.run
    data, run = args.out / "data", args.out / "run"
    if not (data / "transforms.json").exists():
        generate_sample_scene(data, args.scene, seed=0)
    if not (run / "partition.json").exists():
        partition_dataset(data, run, PartitionConfig())
    start = time.perf_counter()
    train_run(run, dataclasses.replace(TrainConfig(), steps=args.steps))
    print(f"training (or checking) the blocks: {time.perf_counter() - start:.0f} s", flush=True)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/birdnerf-export"))
    parser.add_argument("--run", type=Path, default=None, help="score this trained run instead")
    parser.add_argument("--scene", default="small")
    parser.add_argument("--steps", type=int, default=300, help="training steps per block")
    parser.add_argument("--views", type=int, default=ExportConfig.max_views, help="views per block")
    parser.add_argument("--scale", type=float, default=1.0, help="rendered view size / photo size")
    parser.add_argument("--spacing", type=float, default=None, help="point spacing (default: the GSD)")
    args = parser.parse_args()
    torch.set_flush_denormal(True)

    run = prepare(args)
    out = args.out / "export"
    config = ExportConfig(max_views=args.views, render_scale=args.scale, point_spacing=args.spacing)
    start = time.perf_counter()
    summary = export_run(run, points=out / "cloud.ply", mesh=out / "mesh.ply", config=config)
    seconds = time.perf_counter() - start
    print(
        f"export: {seconds:.1f} s for {len(summary.blocks)} blocks, {summary.views} views; "
        f"{summary.n_points:,} points (spacing {summary.point_spacing:.3g} m), "
        f"{summary.n_vertices:,} vertices / {summary.n_triangles:,} triangles "
        f"(voxel {summary.mesh_voxel:.3g} m)"
    )

    import open3d as o3d

    partition = read_partition(run)
    reference = reference_surface(partition.dataset, np.asarray(partition.frame["load_transform"]), 0.1)
    area = (partition.x_edges[0], partition.y_edges[0], partition.x_edges[-1], partition.y_edges[-1])
    candidates = {
        "point cloud": np.asarray(o3d.io.read_point_cloud(str(summary.points)).points),
        "mesh vertices": np.asarray(o3d.io.read_triangle_mesh(str(summary.mesh)).vertices),
        "flat plane": flat_plane(area, float(partition.frame["ground_z"]), summary.point_spacing),
    }
    print(
        f"reference: {len(reference.points):,} points of the true surface, "
        f"{reference.above_ground.mean():.0%} above ground"
    )
    scores = {name: score_points(points, reference, area) for name, points in candidates.items()}
    plane = scores["flat plane"]
    columns = ("d (m)", "precision", "recall", "F-score", "x plane", "points")
    print(f"{'':14s} {'part':10s} " + " ".join(f"{c:>9s}" for c in columns))
    for name, by_part in scores.items():
        for part, rows in by_part.items():
            for row, flat in zip(rows, plane[part], strict=True):
                ratio = row.fscore / flat.fscore if flat.fscore > 0 else float("inf")
                print(
                    f"{name:14s} {part:10s} {row.distance:9.2f} {row.precision:9.3f} {row.recall:9.3f} "
                    f"{row.fscore:9.3f} {ratio:9.2f} {row.n_predicted:9,d}"
                )


if __name__ == "__main__":
    main()
