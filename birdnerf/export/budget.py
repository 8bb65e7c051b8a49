"""What an export costs, from its options alone, checked before any view is rendered.

Memory follows one block (the export goes block by block): its rendered views (depth, colour and
masks of every pixel, while the next view renders), the fused points of every pixel with their
merge temporaries, and its TSDF grid with the mesh extracted from it. Disk holds each block's
points and mesh as parts, then the assembled PLYs beside them.

The TSDF grid is open3d's voxel block grid: blocks of 8^3 voxels, allocated around each depth
pixel within the truncation distance. Where a block is wider than a pixel's footprint on the
ground, the views' pixels share blocks (the views' ground area over a block's, counted with the
views' overlap); where it is narrower, each pixel allocates its own few blocks.

These are bounds from counting, not measurements: the TSDF's share in particular assumes a
surface that is mostly seen from above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from birdnerf.composite.stage import FRAME_BYTES_PER_PIXEL
from birdnerf.export.ply import FACE, VERTEX
from birdnerf.export.views import block_views, pinhole
from birdnerf.partition.manifest import Partition
from birdnerf.resources import check_fits
from birdnerf.scene.scene import Scene

VIEW_BYTES_PER_PIXEL = 8 + 12 + 2
"""A kept view's depth (float64), colour (float32) and two masks."""
FUSE_BYTES_PER_PIXEL = 3 * (24 + 12 + 24)
"""A pixel's fused point, colour and camera direction, with the copies its merge makes."""
VOXELS_PER_BLOCK = 8**3
SURFACE_VERTICES_PER_BLOCK = 64
"""Mesh vertices a voxel block holds (a surface cuts 8 x 8 of its voxels)."""
MESH_BYTES_PER_VERTEX = 36 + 72 + 2 * (12 + 24)
"""A mesh vertex's position, colour and normal in open3d's float32 tensors and its float64 legacy
copy, and its two triangles in both (int32 and int64)."""
VOXEL_BYTES = 20 + MESH_BYTES_PER_VERTEX * SURFACE_VERTICES_PER_BLOCK / VOXELS_PER_BLOCK
"""A voxel's TSDF, weight and colour (float32), and its share of the mesh extracted from it."""
RELIEF = 2.0
"""Voxel blocks in a column of the ground where views share blocks, and surface points or mesh
vertices over a cell of the ground: walls and roofs above it."""
BLOCKS_PER_PIXEL = 0.5
"""Voxel blocks a depth pixel allocates where blocks are smaller than its footprint: open3d 0.19
allocated ~0.1 a pixel with 0.2 mm voxels on the mini survey (its own subsampling of the depth)."""
FIXED_BYTES = 512 << 20
"""The block models cached at once (up to 8), open3d and the compositor's temporaries: the
default export of the mini survey (2 blocks, 44 views of 80x60 px) grew by 469 MB."""


@dataclass
class ExportNeeds:
    memory: int
    disk: int
    views: int
    largest_view: tuple[int, int]


def tsdf_blocks(pixels: int, gsd: float, voxel: float, trunc_voxels: float) -> float:
    """Voxel blocks of a block's TSDF: ``pixels`` depth pixels of ``gsd`` metres on the ground.

    Each pixel touches the blocks along its truncation distance (``span`` blocks, fewer as
    measured: :data:`BLOCKS_PER_PIXEL`); pixels whose footprints share a block's column count it
    once."""
    span = math.ceil(2 * trunc_voxels / 8) + 1
    shared = pixels * gsd**2 / (8 * voxel) ** 2 * span * RELIEF
    return min(pixels * BLOCKS_PER_PIXEL * span, shared)


def export_needs(
    partition: Partition,
    scene: Scene,
    config,
    gsd: float,
    voxel: float,
    spacing: float,
    points: bool,
    mesh: bool,
) -> ExportNeeds:
    """Memory and disk (bytes) of an export with ``config`` (a :class:`ExportConfig`); ``gsd`` is
    the rendered views' ground sample distance, ``voxel`` the TSDF's edge and ``spacing`` the
    points' (scene units). What is written is also bounded by the block's expanded rectangle."""
    memory = disk = views = 0
    largest = (0, 0)
    for block in partition.blocks:
        if not block.trainable:
            continue
        chosen = block_views(scene, block, config.max_views)
        sizes = [
            (c.width, c.height) for c in (pinhole(scene.cameras[i], config.render_scale) for i in chosen)
        ]
        pixels = sum(w * h for w, h in sizes)
        largest = max([largest, *sizes], key=lambda size: size[0] * size[1])
        views += len(sizes)
        x0, y0, x1, y1 = block.expanded
        area = (x1 - x0) * (y1 - y0)
        block_memory = pixels * (VIEW_BYTES_PER_PIXEL + FUSE_BYTES_PER_PIXEL)
        if mesh:
            blocks = tsdf_blocks(pixels, gsd, voxel, config.sdf_trunc_voxels)
            block_memory += int(blocks * VOXELS_PER_BLOCK * VOXEL_BYTES)
            vertices = min(blocks * SURFACE_VERTICES_PER_BLOCK, area / voxel**2 * RELIEF)
            disk += int(2 * vertices * (VERTEX.itemsize + 2 * FACE.itemsize))
        if points:
            disk += int(2 * min(pixels, area / spacing**2 * RELIEF) * VERTEX.itemsize)
        memory = max(memory, block_memory)
    memory += largest[0] * largest[1] * FRAME_BYTES_PER_PIXEL + FIXED_BYTES  # the view being rendered
    return ExportNeeds(memory, disk, views, largest)


def check_export_fits(needs: ExportNeeds, out) -> None:
    """Refuse, with one line, an export whose block does not fit in memory or whose files do not
    fit on the disk under ``out``."""
    w, h = needs.largest_view
    check_fits(
        f"exporting {needs.views} views of up to {w}x{h} px",
        memory=needs.memory,
        disk=needs.disk,
        folder=out,
        hint="use a smaller --scale, fewer --views or a larger --mesh-voxel",
        state_all=True,
    )
