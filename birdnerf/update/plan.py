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

from birdnerf.partition.footprint import Footprints, compute_footprints
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
    merged = merge_scenes(scene, [(added, prefix)])
    new_names = merged.names[len(scene) :]
    fp = compute_footprints(added, max_range_factor=config.max_range_factor)
    grid = _Grid.grown(current, merged, fp)
    xe, ye = np.asarray(grid.partition.x_edges), np.asarray(grid.partition.y_edges)
    members = assign_photos(fp, xe, ye, grid.expanded, config.min_coverage)
    plan = UpdatePlan(grid.partition, new_names)
    retired = _retire_older(plan, scene, fp.center, replace_older)
    by_cell = {(b.row, b.col): b for b in grid.partition.blocks}
    cols = len(xe) - 1
    for cell, photos in sorted(members.items()):
        r, c = divmod(cell, cols)
        train = [new_names[i] for i in sorted(photos) if added.split[i] == "train"]
        tests = [new_names[i] for i in sorted(photos) if added.split[i] == "test"]
        block = by_cell.get((r, c))
        if block is None:
            if len(train) < 2:
                continue
            block = grid.new_block(r, c)
            plan.created.append(block.id)
        if not _add_photos(block, train, tests, retired):
            continue  # only new test photos: the model stays as it is
        block.revision = grid.partition.version
        plan.retrain[block.id] = (
            "from-scratch" if block.id in plan.created else grid.retrain_mode(block, r, c, fine_tune)
        )
    grid.partition.blocks.sort(key=lambda b: (b.row, b.col))
    used = {n for b in grid.partition.blocks for n in b.images + b.test_images}
    plan.unused = [n for n in new_names if n not in used]
    return plan


@dataclass
class _Grid:
    """The next version's block grid, grown to take new photos, and what its blocks' boxes need."""

    partition: Partition
    """A copy of the current manifest with the next version number and the grown grid."""
    expanded: np.ndarray
    """(rows, cols, 4) expanded rectangle of every cell."""
    merged: Scene
    altitude: float
    """Median altitude of the new photos above the ground."""
    origin: tuple[int, int]
    """Grid cell (row, col) of the label ``r00c00``."""

    @classmethod
    def grown(cls, current: Partition, merged: Scene, fp: Footprints) -> _Grid:
        """``current``'s grid grown by whole rows and columns until it holds every new photo's
        footprint centre; old blocks keep their ids and move to their new cells."""
        x_edges, shift_c = _grow(current.x_edges, float(fp.center[:, 0].min()), float(fp.center[:, 0].max()))
        y_edges, shift_r = _grow(current.y_edges, float(fp.center[:, 1].min()), float(fp.center[:, 1].max()))
        config = current.config
        expanded = expanded_rects(np.asarray(x_edges), np.asarray(y_edges), config.overlap, config.overlap_m)
        partition = copy.deepcopy(current)
        partition.version, partition.x_edges, partition.y_edges = current.version + 1, x_edges, y_edges
        for b in partition.blocks:
            b.row, b.col = b.row + shift_r, b.col + shift_c
        ref = partition.blocks[0]
        ref_r, ref_c = (_label(g) for g in BLOCK_ID.fullmatch(ref.id).groups())
        origin = (ref.row - ref_r, ref.col - ref_c)
        return cls(partition, expanded, merged, float(np.median(fp.altitude)), origin)

    def box_heights(self, rect: list[float]) -> tuple[float, float]:
        """(zmin, zmax) of the surface under ``rect`` in the merged scene."""
        config = self.partition.config
        heights = box_options(self.partition.frame, config)
        return altitude_range(self.merged, rect, self.altitude, config.box_margin, **heights)

    def new_block(self, r: int, c: int) -> Block:
        """An empty block in cell (r, c), added to the partition."""
        x_edges, y_edges = self.partition.x_edges, self.partition.y_edges
        rect = self.expanded[r, c].tolist()
        core = [x_edges[c], y_edges[r], x_edges[c + 1], y_edges[r + 1]]
        zmin, zmax = self.box_heights(rect)
        new_id = block_id(r - self.origin[0], c - self.origin[1])
        block = Block(new_id, r, c, core, rect, [rect[0], rect[1], zmin, rect[2], rect[3], zmax], [], [])
        self.partition.blocks.append(block)
        return block

    def retrain_mode(self, block: Block, r: int, c: int, fine_tune: bool) -> str:
        """``fine-tune`` (if asked) while the surface stays in the block's box, else
        ``from-scratch`` with the box grown to hold it."""
        zmin, zmax = self.box_heights(self.expanded[r, c].tolist())
        old = block.box
        slack = BOX_SLACK * (old[5] - old[2])
        if zmin < old[2] - slack or zmax > old[5] + slack:  # new geometry sticks out of the box
            block.box = [old[0], old[1], min(zmin, old[2]), old[3], old[4], max(zmax, old[5])]
            return "from-scratch"
        return "fine-tune" if fine_tune else "from-scratch"


def _retire_older(plan: UpdatePlan, scene: Scene, new_centers: np.ndarray, replace_older: bool) -> set[str]:
    """The photos no block may use in the next version: those retired before and, with
    ``replace_older``, the run's photos whose footprint centre lies in the changed area (listed
    in ``plan.removed``)."""
    partition = plan.partition
    retired = set(partition.retired)
    if replace_older:
        old_fp = compute_footprints(scene, max_range_factor=partition.config.max_range_factor)
        inside = _inside(old_fp.center, _changed_rect(new_centers))
        plan.removed = sorted(n for n, i in zip(scene.names, inside, strict=True) if i and n not in retired)
        retired |= set(plan.removed)
    partition.retired = sorted(retired)
    return retired


def _add_photos(block: Block, train: list[str], tests: list[str], retired: set[str]) -> bool:
    """Give ``block`` the new photos and drop its retired ones; whether its training photos changed."""
    kept = [n for n in block.images if n not in retired]
    dropped_train = len(kept) != len(block.images)
    block.images = kept + train
    block.test_images = [n for n in block.test_images if n not in retired] + tests
    block.stats = {**block.stats, "n_images": len(block.images), "n_test_images": len(block.test_images)}
    return bool(train) or dropped_train


def _changed_rect(centers: np.ndarray) -> list[float]:
    """The area the new photos are of: the rectangle of their footprint centres."""
    return [*centers.min(axis=0).tolist(), *centers.max(axis=0).tolist()]


def _inside(points: np.ndarray, rect: list[float]) -> np.ndarray:
    x, y = points[:, 0], points[:, 1]
    return (x >= rect[0]) & (x <= rect[2]) & (y >= rect[1]) & (y <= rect[3])
