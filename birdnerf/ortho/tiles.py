"""One block's orthographic tile: what the block alone sees along vertical rays over its cells,
rendered once and cached as ``DIR/blocks/<id>.npz``.

A tile holds the block's own (opacity-premultiplied) colour, opacity and surface height at every
cell where it has a blend weight; the mosaic blends tiles exactly as the compositor blends blocks
along a view's rays. A tile depends on nothing but its block's model and the cells it covers, so
retraining a block invalidates its tile alone. The record in each file (model digest, GSD, cells,
mask digest) says what it was rendered from; a tile whose record differs is rendered again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from birdnerf import atomic
from birdnerf.composite.cache import BlockCache
from birdnerf.composite.infer import render_block
from birdnerf.errors import BirdnerfError
from birdnerf.ortho.grid import TOP_MARGIN_M, Window
from birdnerf.partition.manifest import Block

TILE_FORMAT = 2
TILES = "blocks"
"""Folder of the tile cache inside the ortho output folder."""
SURFACE_OPACITY = 0.5
"""Opacity at which a vertical ray has reached the surface the DSM reports (its median depth):
haze and floaters in front of a surface, weaker than that, do not lift the DSM."""


@dataclass
class BlockTile:
    """A block's rendering over ``window`` (cells outside ``mask`` are zero).

    Attributes:
        rgb: (H, W, 3) float32 colour premultiplied by opacity.
        opacity: (H, W) float32 accumulated opacity.
        height: (H, W) float32 world z at the ray's expected depth (opacity-weighted mean), metres.
        surface: (H, W) float32 world z at the ray's median depth (where its opacity reaches
            :data:`SURFACE_OPACITY`; ``height`` where it never does), metres.
        mask: (H, W) bool, the cells the block has a weight at.
    """

    window: Window
    rgb: np.ndarray
    opacity: np.ndarray
    height: np.ndarray
    surface: np.ndarray
    mask: np.ndarray


def tile_path(out_dir: Path, block_id: str) -> Path:
    """Where a block's tile is cached: ``<ortho dir>/blocks/<id>.npz``."""
    return Path(out_dir) / TILES / f"{block_id}.npz"


def model_digest(run_dir: Path, block: Block) -> str:
    """SHA-256 of the block's ``config.json`` and ``model.pt`` (what its tile was rendered from)."""
    folder = run_dir / block.folder
    if not (folder / "done.json").exists():
        raise BirdnerfError(f"block {block.id} is not trained yet (run `birdnerf train`)", folder)
    digest = hashlib.sha256()
    for name in ("config.json", "model.pt"):
        try:
            with open(folder / name, "rb") as f:
                for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError as err:
            raise BirdnerfError(f"cannot read the block's model ({err.strerror})", folder / name) from None
    return digest.hexdigest()


def tile_record(run_dir: Path, block: Block, window: Window, mask: np.ndarray, gsd: float) -> dict:
    """What a tile depends on: equal records give equal tiles."""
    return {
        "format": TILE_FORMAT,
        "block": block.id,
        "folder": block.folder,
        "model_sha256": model_digest(run_dir, block),
        "gsd_m": gsd,
        "window": [window.col0, window.top, window.width, window.height],
        "mask_sha256": hashlib.sha256(np.packbits(mask).tobytes()).hexdigest(),
        "z_top": block.box[5] + TOP_MARGIN_M,
    }


def load_tile(path: Path) -> tuple[BlockTile, dict]:
    """The tile stored at ``path`` and its record (OSError, KeyError or ValueError if unreadable)."""
    with np.load(path, allow_pickle=False) as data:
        record = json.loads(str(data["record"]))
        arrays = (data[k] for k in ("rgb", "opacity", "height", "surface", "mask"))
        return BlockTile(Window(*record["window"]), *arrays), record


def stored_record(path: Path) -> dict | None:
    """The record of the tile at ``path`` (its arrays are not read), None if there is none."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return json.loads(str(data["record"]))
    except (OSError, KeyError, ValueError, TypeError):  # missing, truncated or foreign
        return None


def read_tile(path: Path, record: dict) -> BlockTile | None:
    """The cached tile at ``path`` when its record equals ``record``, else None."""
    try:
        tile, stored = load_tile(path)
    except (OSError, KeyError, ValueError, TypeError):  # missing, truncated or foreign: render again
        return None
    return tile if stored == record else None


def write_tile(path: Path, tile: BlockTile, record: dict) -> None:
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f,
            record=np.array(json.dumps(record)),
            rgb=tile.rgb,
            opacity=tile.opacity,
            height=tile.height,
            surface=tile.surface,
            mask=tile.mask,
        )


@torch.no_grad()
def render_tile(
    cache: BlockCache, block: Block, window: Window, mask: np.ndarray, gsd: float, band_cells: int = 1 << 16
) -> BlockTile:
    """Render ``block`` along the vertical rays of the cells of ``window`` inside ``mask``, in bands
    of rows of at most ``band_cells`` cells (bounded memory), on the fast inference path."""
    model = cache.get(block)
    z_top = block.box[5] + TOP_MARGIN_M
    rays = window.rays(gsd, z_top)
    h, w = window.height, window.width
    rgb = np.zeros((h * w, 3), np.float32)
    opacity, height, surface = (np.zeros(h * w, np.float32) for _ in range(3))
    flat = torch.from_numpy(mask.reshape(-1))
    band_rows = max(1, band_cells // w)
    for r0 in range(0, h, band_rows):
        n_rows = min(band_rows, h - r0)
        cells = torch.nonzero(flat[r0 * w : (r0 + n_rows) * w], as_tuple=True)[0]
        if cells.numel() == 0:
            continue
        origins, dirs = rays.band(r0, n_rows, cache.device)
        out = render_block(model, origins[cells], dirs[cells], first_hit=True, hit_opacity=SURFACE_OPACITY)
        at = (cells + r0 * w).numpy()
        rgb[at] = out.rgb.float().cpu().numpy()
        opacity[at] = out.opacity.float().cpu().numpy()
        height[at] = z_top - out.depth.float().cpu().numpy()
        median = z_top - out.first_hit.float().cpu().numpy()
        surface[at] = np.where(np.isfinite(median), median, height[at])
    planes = (a.reshape(h, w) for a in (opacity, height, surface))
    return BlockTile(window, rgb.reshape(h, w, 3), *planes, mask)
