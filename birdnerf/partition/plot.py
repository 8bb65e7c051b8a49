"""The bird-view map of a partition: cameras, footprints, core and expanded rectangles."""

from __future__ import annotations

from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.patches import Polygon, Rectangle

from birdnerf import atomic
from birdnerf.partition.footprint import Footprints
from birdnerf.partition.manifest import Partition
from birdnerf.scene.scene import Scene

MAX_FOOTPRINTS = 400  # more outlines than this turn the map into a smudge


def plot_partition(partition: Partition, scene: Scene, footprints: Footprints, path: str | Path) -> Path:
    """Save a PNG map of ``partition`` (bird view, x right, y up, scene units) atomically."""
    fig = partition_figure(partition, scene, footprints)
    path = Path(path)
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def partition_figure(partition: Partition, scene: Scene, footprints: Footprints) -> Figure:
    """The map of ``partition``: photo footprints and centres, block cores (filled, solid) and
    expanded rectangles (dashed), bird view, x right, y up, scene units."""
    # A bare Figure, not pyplot: no backend is chosen or switched (a notebook keeps its own).
    fig = Figure(figsize=(9, 9), dpi=110)
    ax = fig.subplots()
    train = scene.indices("train")
    step = max(1, len(scene) // MAX_FOOTPRINTS)
    for i in range(0, len(scene), step):
        color = "tab:blue" if scene.split[i] == "train" else "tab:orange"
        ax.add_patch(Polygon(footprints.outline[i], closed=True, fill=False, lw=0.4, alpha=0.35, color=color))
    palette = matplotlib.colormaps["tab10"]
    for k, b in enumerate(partition.blocks):
        x0, y0, x1, y1 = b.expanded
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ls="--", lw=1.0, color="tab:red"))
        x0, y0, x1, y1 = b.core
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fc=palette(k % 10), alpha=0.15, lw=0))
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.6, ec="black"))
        ax.text(
            (x0 + x1) / 2,
            (y0 + y1) / 2,
            f"{b.id}\n{len(b.images)} photos",
            ha="center",
            va="center",
            fontsize=8,
            bbox={"facecolor": "white", "alpha": 0.7, "lw": 0},
        )
    centers = scene.centers
    test = scene.indices("test")
    ax.scatter(centers[train, 0], centers[train, 1], s=6, c="tab:blue", label="train cameras")
    if test:
        ax.scatter(centers[test, 0], centers[test, 1], s=10, c="tab:orange", marker="^", label="test cameras")
    pts = footprints.outline.reshape(-1, 2)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    pad = 0.05 * (hi - lo).max()
    ax.set_xlim(lo[0] - pad, hi[0] + pad)
    ax.set_ylim(lo[1] - pad, hi[1] + pad)
    ax.set_aspect("equal")
    ax.set_xlabel("x (scene units, metres when georeferenced)")
    ax.set_ylabel("y")
    rows, cols = len(partition.y_edges) - 1, len(partition.x_edges) - 1
    ax.set_title(f"{len(scene)} photos, {rows}x{cols} blocks (core solid, expanded dashed)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig
