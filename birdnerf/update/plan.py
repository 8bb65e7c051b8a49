"""Which blocks new photos touch, and the manifest version that adds them.

New photos join the blocks whose expanded rectangles they cover, by the same rule as the
partition. Photos beyond the grid grow it: whole columns (rows) of the outermost width are added
on that side, and a block is created in each new cell that gets enough photos. Ids stay stable:
the grid cell labelled ``r00c00`` keeps its label, and a column left of it is ``cm01``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from birdnerf.partition.footprint import compute_footprints
from birdnerf.partition.layout import block_id, expanded_rects
from birdnerf.partition.manifest import BLOCK_ID, Block, Partition
from birdnerf.partition.partition import altitude_range, assign_photos, box_options
from birdnerf.scene.scene import Scene, merge_scenes

BOX_SLACK = 0.05
"""A touched block's box grows (and the block is retrained from scratch) only when the surface
reaches this fraction of the box's height beyond it; smaller shifts are noise in the points."""


@dataclass
class UpdatePlan:
    """A staged manifest version and what it changes."""

    partition: Partition
    added: list[str]
    """Names (in the merged scene) of the new photos."""
    retrain: dict[str, str] = field(default_factory=dict)
    """Block id -> "fine-tune" or "from-scratch" (new block, or its box had to grow)."""
    created: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    """Older photos dropped from the touched blocks (``replace_older``)."""
    unused: list[str] = field(default_factory=list)
    """New photos no block takes (beyond the grid, too few to make a block)."""


def _label(text: str) -> int:
    return -int(text[1:]) if text.startswith("m") else int(text)


def _grow(edges: list[float], lo: float, hi: float) -> tuple[list[float], int]:
    """Edges extended by cells of the outer widths until they span [lo, hi]; cells added below."""
    edges = list(edges)
    before = 0
    while lo < edges[0]:
        edges.insert(0, edges[0] - (edges[1] - edges[0]))
        before += 1
    while hi > edges[-1]:
        edges.append(edges[-1] + (edges[-1] - edges[-2]))
    return edges, before


def plan_update(
    current: Partition,
    scene: Scene,
    added: Scene,
    prefix: str,
    *,
    replace_older: bool = False,
    fine_tune: bool = True,
) -> UpdatePlan:
    """The next version of ``current`` with the photos of ``added`` (world frame) in its blocks.

    ``scene`` is the run's current (merged) scene; the added photos are named ``<prefix>/<name>``.
    Blocks whose training photos change get ``revision`` = the new version (their own folder);
    all other blocks are carried over unchanged.
    """
    config = current.config
    version = current.version + 1
    merged = merge_scenes(scene, [(added, prefix)])
    new_names = merged.names[len(scene) :]
    fp = compute_footprints(added, max_range_factor=config.max_range_factor)
    x_edges, shift_c = _grow(current.x_edges, float(fp.center[:, 0].min()), float(fp.center[:, 0].max()))
    y_edges, shift_r = _grow(current.y_edges, float(fp.center[:, 1].min()), float(fp.center[:, 1].max()))
    xe, ye = np.asarray(x_edges), np.asarray(y_edges)
    expanded = expanded_rects(xe, ye, config.overlap, config.overlap_m)
    members = assign_photos(fp, xe, ye, expanded, config.min_coverage)
    cols = len(x_edges) - 1

    partition = copy.deepcopy(current)
    partition.version, partition.x_edges, partition.y_edges = version, x_edges, y_edges
    for b in partition.blocks:
        b.row, b.col = b.row + shift_r, b.col + shift_c
    by_cell = {(b.row, b.col): b for b in partition.blocks}
    ref = partition.blocks[0]
    ref_r, ref_c = (_label(g) for g in BLOCK_ID.fullmatch(ref.id).groups())
    origin = (ref.row - ref_r, ref.col - ref_c)  # grid cell of label (0, 0)
    altitude = float(np.median(fp.altitude))
    plan = UpdatePlan(partition, new_names)

    changed = _changed_rect(fp.center)
    retired = set(partition.retired)
    if replace_older:
        old_fp = compute_footprints(scene, max_range_factor=config.max_range_factor)
        inside = _inside(old_fp.center, changed)
        plan.removed = sorted(n for n, i in zip(scene.names, inside, strict=True) if i and n not in retired)
        retired |= set(plan.removed)
    partition.retired = sorted(retired)

    for cell, photos in sorted(members.items()):
        r, c = divmod(cell, cols)
        train = [new_names[i] for i in sorted(photos) if added.split[i] == "train"]
        tests = [new_names[i] for i in sorted(photos) if added.split[i] == "test"]
        block = by_cell.get((r, c))
        rect = expanded[r, c].tolist()
        if block is None:
            if len(train) < 2:
                continue
            core = [x_edges[c], y_edges[r], x_edges[c + 1], y_edges[r + 1]]
            zmin, zmax = altitude_range(
                merged, rect, altitude, config.box_margin, **box_options(partition.frame)
            )
            new_id = block_id(r - origin[0], c - origin[1])
            block = Block(new_id, r, c, core, rect, [rect[0], rect[1], zmin, rect[2], rect[3], zmax], [], [])
            partition.blocks.append(block)
            plan.created.append(new_id)
        kept = [n for n in block.images if n not in retired]
        dropped_train = len(kept) != len(block.images)
        block.images = kept + train
        block.test_images = [n for n in block.test_images if n not in retired] + tests
        block.stats = {**block.stats, "n_images": len(block.images), "n_test_images": len(block.test_images)}
        if not train and not dropped_train:
            continue  # only new test photos: the model stays as it is
        block.revision = version
        if block.id in plan.created:
            plan.retrain[block.id] = "from-scratch"
            continue
        zmin, zmax = altitude_range(merged, rect, altitude, config.box_margin, **box_options(partition.frame))
        old = block.box
        slack = BOX_SLACK * (old[5] - old[2])
        if zmin < old[2] - slack or zmax > old[5] + slack:  # new geometry sticks out of the box
            block.box = [old[0], old[1], min(zmin, old[2]), old[3], old[4], max(zmax, old[5])]
            plan.retrain[block.id] = "from-scratch"
        else:
            plan.retrain[block.id] = "fine-tune" if fine_tune else "from-scratch"

    partition.blocks.sort(key=lambda b: (b.row, b.col))
    used = {n for b in partition.blocks for n in b.images + b.test_images}
    plan.unused = [n for n in new_names if n not in used]
    return plan


def _changed_rect(centers: np.ndarray) -> list[float]:
    """The area the new photos are of: the rectangle of their footprint centres."""
    return [*centers.min(axis=0).tolist(), *centers.max(axis=0).tolist()]


def _inside(points: np.ndarray, rect: list[float]) -> np.ndarray:
    x, y = points[:, 0], points[:, 1]
    return (x >= rect[0]) & (x <= rect[2]) & (y >= rect[1]) & (y <= rect[3])
