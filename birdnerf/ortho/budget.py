"""What an orthophoto at a given GSD costs, checked before any tile is rendered.

Memory follows the largest block tile: while a tile renders, its arrays and the blend-weight
temporaries of its cells (:func:`~birdnerf.ortho.grid.block_mask`) are held; while the raster is
blended, up to :data:`TILES_HELD` tiles are loaded at once. Disk holds every tile (compressed,
counted uncompressed) and the two COGs, each written once as a scratch GeoTIFF and then copied
with its overviews (both counted uncompressed, at once). A block's tile covers at most its
expanded rectangle (its core and blend bands), so the bounds need no pass over the raster.
"""

from __future__ import annotations

import math

from birdnerf.errors import BirdnerfError
from birdnerf.ortho.grid import MAX_CELLS, Window
from birdnerf.partition.manifest import Partition
from birdnerf.resources import check_fits, shortfall, size_text

TILE_BYTES_PER_CELL = 25
"""A tile's arrays: premultiplied RGB, opacity, height and surface (float32) and its mask."""
MASK_BYTES_PER_CELL = 160
"""Blend weights of a tile's cells while its mask is built: cell centres, each cell's block slots
(index and weight) and their trimmed copies."""
TILES_HELD = 8
"""Tiles the mosaic keeps loaded (:class:`~birdnerf.ortho.mosaic.TileSource`'s capacity)."""
WINDOW_BYTES_PER_CELL = 256
"""A raster window while it blends: weights, slots and products of each of its cells."""
RASTER_BYTES_PER_CELL = 8 * 4 / 3
"""The orthophoto (RGBA uint8) and the DSM (float32) of a cell, with their overviews."""


def tile_cells(partition: Partition, raster: Window, gsd: float) -> list[int]:
    """Most cells of each trainable block's tile: the raster's cells its expanded rectangle meets."""
    cells = []
    for block in partition.blocks:
        if block.trainable:
            x0, y0, x1, y1 = block.expanded
            cols = min(math.ceil(x1 / gsd), raster.col0 + raster.width) - max(
                math.floor(x0 / gsd), raster.col0
            )
            rows = min(math.ceil(y1 / gsd), raster.top) - max(
                math.floor(y0 / gsd), raster.top - raster.height
            )
            cells.append(max(cols, 0) * max(rows, 0))
    return cells


def ortho_needs(partition: Partition, raster: Window, gsd: float, window_cells: int) -> tuple[int, int]:
    """(memory, disk) in bytes that an orthophoto of ``raster`` at ``gsd`` metres can take."""
    tiles = tile_cells(partition, raster, gsd)
    largest = max(tiles, default=0)
    render = largest * (TILE_BYTES_PER_CELL + MASK_BYTES_PER_CELL)
    blend = TILES_HELD * largest * TILE_BYTES_PER_CELL + window_cells**2 * WINDOW_BYTES_PER_CELL
    cells = raster.width * raster.height
    disk = sum(tiles) * TILE_BYTES_PER_CELL + int(2 * cells * RASTER_BYTES_PER_CELL)
    return max(render, blend), disk


def check_ortho_fits(partition: Partition, raster: Window, gsd: float, window_cells: int, out) -> None:
    """Refuse, with one line giving the raster's cells, memory and disk and a larger ``--gsd``, an
    orthophoto that cannot fit in memory or on the disk under ``out``."""
    memory, disk = ortho_needs(partition, raster, gsd, window_cells)
    what = f"an orthophoto of {raster.width:,} x {raster.height:,} cells at --gsd {gsd:g} m"
    # Costs grow as 1 / gsd^2: the factor by which they are too large gives a GSD that fits.
    factor = max(shortfall(memory, disk, out), raster.width * raster.height / MAX_CELLS)
    hint = f"use a larger --gsd (at least {_round_up(gsd * math.sqrt(factor) * 1.1)} m)"
    if raster.width * raster.height > MAX_CELLS:
        raise BirdnerfError(
            f"{what} needs up to {size_text(memory)} of memory and {size_text(disk)} of disk, "
            f"more cells than the {MAX_CELLS:,} a raster may have: {hint}",
            out,
        )
    check_fits(what, memory=memory, disk=disk, folder=out, hint=hint, state_all=True)


def _round_up(value: float) -> str:
    """``value`` rounded up to two significant digits, as text."""
    step = 10 ** (math.floor(math.log10(value)) - 1)
    return f"{math.ceil(value / step) * step:.4g}"
