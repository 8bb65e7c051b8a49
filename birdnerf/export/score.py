"""Accuracy of exported geometry against the exact surface of a generated sample scene.

The reference is the true surface as the sample generator saw it: every pixel of every photo's
ground-truth depth map (``depth/*.npy``) back-projected to a world point, merged one per voxel.
A predicted point set is scored at distance ``d`` by

- precision (accuracy): the share of predicted points within ``d`` of a reference point,
- recall (completeness): the share of reference points within ``d`` of a predicted point,
- F-score: their harmonic mean,

over a rectangle of the ground, and again over the **structures** only: the reference points
more than half a metre above the terrain (roofs, walls, tree crowns) against the predicted
points in the bird-view cells (``cell`` metres) that hold any of them. The trivial baseline is
the flat plane ``z = ground_z`` sampled on the same area at the same spacing: on a flat site it
models the open ground exactly, and scores 0 on the structures (at ``d`` up to half a metre) by
construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from birdnerf.export.geometry import require_open3d

DISTANCES = (0.25, 0.5)
"""Distances (metres) the export is scored at."""


@dataclass(frozen=True)
class SurfaceScore:
    """Precision, recall and F-score of a point set at one distance (metres)."""

    distance: float
    precision: float
    recall: float
    fscore: float
    n_predicted: int
    n_reference: int


@dataclass
class Reference:
    """The true surface: points (M, 3) (run's world frame, metres) and whether each is above the
    terrain by more than half a metre (M,)."""

    points: np.ndarray
    above_ground: np.ndarray


def nearest_distances(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(N,) distance from each ``source`` point (N, 3) to its nearest ``target`` point (M, 3)."""
    if len(source) == 0:
        return np.zeros(0)
    if len(target) == 0:
        return np.full(len(source), np.inf)
    o3d = require_open3d()

    def cloud(p: np.ndarray):
        return o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.ascontiguousarray(p, np.float64)))

    return np.asarray(cloud(source).compute_point_cloud_distance(cloud(target)))


def surface_scores(
    predicted: np.ndarray, reference: np.ndarray, distances: tuple[float, ...] = DISTANCES
) -> list[SurfaceScore]:
    """Precision, recall and F-score of ``predicted`` (N, 3) against ``reference`` (M, 3)."""
    to_ref = nearest_distances(predicted, reference)
    to_pred = nearest_distances(reference, predicted)
    scores = []
    for d in distances:
        p = float(np.mean(to_ref <= d)) if len(to_ref) else 0.0
        r = float(np.mean(to_pred <= d)) if len(to_pred) else 0.0
        f = 2 * p * r / (p + r) if p + r > 0 else 0.0
        scores.append(SurfaceScore(d, p, r, f, len(predicted), len(reference)))
    return scores


def reference_surface(
    dataset_dir: str | Path, load_transform: np.ndarray, spacing: float, min_height_m: float = 0.5
) -> Reference:
    """The true surface of a generated dataset from its depth maps, in the run's world frame
    (``load_transform``: the partition's dataset -> world map), one point per ``spacing`` voxel."""
    from birdnerf.scene.load import load_dataset
    from birdnerf.synthetic.generate import TRUTH_DEPTH
    from birdnerf.synthetic.truth import load_site, world_points

    dataset_dir = Path(dataset_dir)
    site = load_site(dataset_dir)
    scene = load_dataset(dataset_dir)
    points, heights = [], []
    for i, name in enumerate(scene.names):
        depth = np.load(dataset_dir / TRUTH_DEPTH / f"{Path(name).stem}.npy", allow_pickle=False)
        p = world_points(scene.cameras[i], scene.c2w[i], depth)[np.isfinite(depth)]
        points.append(p)
        heights.append(p[:, 2] - site.ground_height(p[:, 0], p[:, 1]))
    xyz, height = np.concatenate(points), np.concatenate(heights)
    keys = np.floor(xyz / spacing).astype(np.int64)
    _, first = np.unique(keys, axis=0, return_index=True)
    xyz, height = xyz[np.sort(first)], height[np.sort(first)]
    m = np.asarray(load_transform, np.float64)
    return Reference(xyz @ m[:3, :3].T + m[:3, 3], height > min_height_m)


def flat_plane(area: tuple[float, float, float, float], ground_z: float, spacing: float) -> np.ndarray:
    """(K, 3) points of the plane ``z = ground_z`` on a ``spacing`` grid over ``area`` (x0, y0, x1, y1)."""
    x = np.arange(area[0] + spacing / 2, area[2], spacing)
    y = np.arange(area[1] + spacing / 2, area[3], spacing)
    gx, gy = np.meshgrid(x, y, indexing="xy")
    return np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, ground_z)], axis=1)


def in_area(xyz: np.ndarray, area: tuple[float, float, float, float]) -> np.ndarray:
    return (xyz[:, 0] >= area[0]) & (xyz[:, 0] < area[2]) & (xyz[:, 1] >= area[1]) & (xyz[:, 1] < area[3])


def cell_keys(xyz: np.ndarray, cell: float) -> np.ndarray:
    """(N,) int64 key of the bird-view cell (edge ``cell``) of each point."""
    k = np.floor(xyz[:, :2] / cell).astype(np.int64)
    return k[:, 0] * (1 << 32) + k[:, 1]


def score_points(
    predicted: np.ndarray,
    reference: Reference,
    area: tuple[float, float, float, float],
    cell: float = 2.0,
    distances: tuple[float, ...] = DISTANCES,
) -> dict[str, list[SurfaceScore]]:
    """Scores of ``predicted`` (N, 3, run's world frame) over ``area``: "overall", and
    "structures": the reference's points above the terrain (roofs, walls, crowns) against the
    predicted points in the ``cell``-metre bird-view cells that hold any of them."""
    ref = reference.points[in_area(reference.points, area)]
    pred = predicted[in_area(predicted, area)]
    above = reference.points[reference.above_ground]
    above = above[in_area(above, area)]
    cells = np.unique(cell_keys(above, cell))
    pred_s = pred[np.isin(cell_keys(pred, cell), cells)]
    return {
        "overall": surface_scores(pred, ref, distances),
        "structures": surface_scores(pred_s, above, distances),
    }
