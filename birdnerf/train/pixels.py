"""A block's training pixels streamed from disk: a compact index, colours behind a memory map.

Holding every pixel's ray in RAM (:func:`birdnerf.train.data.block_rays`, the reference twin)
costs 40 bytes a pixel: 100 photos of 12 MP would need tens of GB. Instead a block keeps

- an **index** of its usable pixels as runs of consecutive columns of one row of one photo
  (about one run per image row, since a block's rectangle is convex on the ground): 20 bytes a
  run, a few MB for a hundred 12 MP photos;
- their **colours** in one raw uint8 file (``pixels.rgb`` in the block folder, (R, 3), in index
  order), read through a memory map;

and builds each batch's ray origins and directions from the cameras on the fly. Pixel ``k`` of
the index is the ``k``-th pixel of :func:`~birdnerf.train.data.block_rays` (photos in order, then
row-major), so a seeded batch draws the same pixels and the same rays as the reference path.

Peak memory: pages of the colour file that a process touched count towards its resident set, so
the map is dropped and reopened whenever the pages read since the last reopen could exceed
``budget_bytes`` (counting :data:`READ_BYTES` a read); index building works through
``chunk_pixels`` pixels of a photo at a time and holds one decoded photo.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from birdnerf import atomic
from birdnerf.partition.footprint import MAX_RANGE_FACTOR, ground_hits
from birdnerf.partition.manifest import Block
from birdnerf.resources import check_fits
from birdnerf.scene.camera import Camera, camera_rays, pixel_directions
from birdnerf.scene.images import load_rgb
from birdnerf.scene.scene import Scene

COLORS_FILE = "pixels.rgb"
INDEX_FILE = "pixels.npz"
READ_BYTES = 64 << 10
"""Resident bytes one random read of the colour file may add: a page fault on a file mapping also
maps the neighbouring pages already in the page cache (Linux's fault-around, 64 KiB), which
measured ~17 KiB a read on average over a 365 MB file, 64 KiB at worst."""
CHUNK_PIXELS = 1 << 16
"""Pixels of a photo whose rays are built at once while indexing (about 10 MB of temporaries,
which stay in the cache: 4x larger chunks index half as fast)."""


@dataclass
class PixelIndex:
    """The usable pixels of a block's photos, as runs of consecutive columns.

    Attributes:
        names: dataset-relative names of the photos, in appearance-code order.
        scene_ids: index in the scene of each photo of ``names``.
        runs: (K, 3) int32 (local photo, row, first column) of each run, in pixel order.
        starts: (K + 1,) int64 cumulative pixel counts: run k holds pixels [starts[k], starts[k+1]).
    """

    names: list[str]
    scene_ids: list[int]
    runs: np.ndarray
    starts: np.ndarray

    def __len__(self) -> int:
        return int(self.starts[-1])

    def locate(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(local photo, column, row) int64 arrays of pixels ``k`` (int64 in [0, len))."""
        run = np.searchsorted(self.starts, k, side="right") - 1
        photo, row, col0 = (self.runs[run, i].astype(np.int64) for i in range(3))
        return photo, col0 + (k - self.starts[run]), row


def photo_mask_rows(scene: Scene, index: int, rect: list[float], chunk_pixels: int = CHUNK_PIXELS):
    """Yield (first row, (h, W) bool mask) of photo ``index``'s pixels whose ground point lies in
    ``rect``, a few rows at a time; the same test as :func:`birdnerf.train.data.block_rays`."""
    cam = scene.cameras[index]
    c2w = torch.from_numpy(scene.c2w[index])
    ground_z = float(scene.ground_z or 0.0)
    step = max(1, chunk_pixels // cam.width)
    cols = torch.arange(cam.width, dtype=torch.float64) + 0.5
    for r0 in range(0, cam.height, step):
        rows = torch.arange(r0, min(cam.height, r0 + step), dtype=torch.float64) + 0.5
        v, u = torch.meshgrid(rows, cols, indexing="ij")
        origins, dirs = camera_rays(cam, c2w, torch.stack([u, v], dim=-1))
        o = origins.numpy().reshape(-1, 1, 3)
        hits = ground_hits(o, dirs.numpy().reshape(-1, 1, 3), ground_z, MAX_RANGE_FACTOR)
        x, y = hits[:, 0, 0], hits[:, 0, 1]
        inside = (x >= rect[0]) & (x <= rect[2]) & (y >= rect[1]) & (y <= rect[3])
        yield r0, inside.reshape(len(rows), cam.width)


def mask_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, first column, length) of the runs of True in each row of an (h, W) bool mask."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    begin_r, begin_c = np.nonzero(edges == 1)
    _, end_c = np.nonzero(edges == -1)
    return begin_r, begin_c, end_c - begin_c


def build_index(
    scene: Scene,
    block: Block,
    names: list[str],
    colors_out=None,
    chunk_pixels: int = CHUNK_PIXELS,
) -> PixelIndex:
    """Index the pixels of ``names`` that belong to ``block``; with ``colors_out`` (a binary file)
    also write their colours there, uint8 RGB in index order (each photo is decoded once)."""
    lookup = {n: i for i, n in enumerate(scene.names)}
    runs, lengths = [], []
    for local, name in enumerate(names):
        i = lookup[name]
        rgb = None
        for r0, mask in photo_mask_rows(scene, i, block.expanded, chunk_pixels):
            if not mask.any():
                continue
            rows, first, length = mask_runs(mask)
            runs.append(np.stack([np.full_like(rows, local), rows + r0, first], axis=1).astype(np.int32))
            lengths.append(length)
            if colors_out is not None:
                if rgb is None:
                    rgb = load_rgb(scene.image_paths[i], scene.cameras[i])
                colors_out.write(np.ascontiguousarray(rgb[r0 : r0 + mask.shape[0]][mask]).tobytes())
    run_array = np.concatenate(runs) if runs else np.empty((0, 3), dtype=np.int32)
    counts = np.concatenate(lengths) if lengths else np.empty(0, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)
    return PixelIndex(names, [lookup[n] for n in names], run_array, starts)


def camera_table(cameras: list[Camera]) -> dict[str, Tensor]:
    """Per-photo intrinsics as float64 (P,) tensors, one per :class:`Camera` field."""
    keys = ("fx", "fy", "cx", "cy", "k1", "k2", "k3", "k4", "p1", "p2")
    return {k: torch.tensor([float(getattr(c, k)) for c in cameras], dtype=torch.float64) for k in keys}


class _Cameras:
    """Intrinsics of N rays as (N,) tensors, read by :func:`pixel_directions` like a Camera."""

    def __init__(self, table: dict[str, Tensor], photo: Tensor):
        for key, values in table.items():
            setattr(self, key, values[photo])
        distortion = ("k1", "k2", "k3", "k4", "p1", "p2")
        self.has_distortion = any(bool(getattr(self, k).ne(0).any()) for k in distortion)


def pixel_rays(
    table: dict[str, Tensor], c2w: Tensor, photo: Tensor, cols: Tensor, rows: Tensor
) -> tuple[Tensor, Tensor]:
    """float32 world origins and unit directions (N, 3) of pixels (photo, column, row) (N,) each.

    ``table`` from :func:`camera_table`, ``c2w`` (P, 4, 4) float64 of the same photos. Computed in
    float64 like :func:`birdnerf.train.data.photo_rays`, so the rays agree with it to float32
    rounding.
    """
    uv = torch.stack([cols.double() + 0.5, rows.double() + 0.5], dim=-1)
    d_cam = pixel_directions(_Cameras(table, photo), uv)  # duck-typed: fields are (N,) tensors
    rot = c2w[photo, :3, :3]
    dirs = (rot * d_cam[:, None, :]).sum(dim=-1)
    return c2w[photo, :3, 3].float(), dirs.float()


@dataclass
class PixelBatch:
    """Rays of a batch of pixels, float32 on the CPU (move them with :meth:`to`)."""

    origins: Tensor
    dirs: Tensor
    rgb: Tensor
    image_ids: Tensor

    def to(self, device: torch.device | str) -> PixelBatch:
        parts = (self.origins, self.dirs, self.rgb, self.image_ids)
        return PixelBatch(*(t.to(device, non_blocking=True) for t in parts))


class BlockPixels:
    """A block's pixels: :class:`PixelIndex` plus a colour source; ``batch(k)`` builds rays.

    ``colors`` is the path of the raw colour file (read through a memory map that is reopened
    once ``budget_bytes`` of its pages may have been read), or None to decode photos on demand
    (for a few thousand scored pixels).
    """

    def __init__(self, scene: Scene, index: PixelIndex, colors: Path | None, budget_bytes: int = 256 << 20):
        self.scene = scene
        self.index = index
        self.colors_path = colors
        self.budget_reads = max(1, budget_bytes // READ_BYTES)
        self.table = camera_table([scene.cameras[i] for i in index.scene_ids])
        self.c2w = torch.from_numpy(np.ascontiguousarray(scene.c2w[index.scene_ids]))
        self._map: np.memmap | None = None
        self._reads = 0

    @property
    def names(self) -> list[str]:
        return self.index.names

    def __len__(self) -> int:
        return len(self.index)

    def _colors(self, k: np.ndarray) -> np.ndarray:
        if self.colors_path is None:
            return self._decode(k)
        out = np.empty((len(k), 3), dtype=np.uint8)
        for start in range(0, len(k), self.budget_reads):
            part = k[start : start + self.budget_reads]
            if self._map is None or self._reads + len(part) > self.budget_reads:
                self._map = None  # unmaps: the pages read so far leave the resident set
                self._map = np.memmap(self.colors_path, dtype=np.uint8, mode="r", shape=(len(self), 3))
                self._reads = 0
            self._reads += len(part)
            out[start : start + len(part)] = self._map[part]
        return out

    def _decode(self, k: np.ndarray) -> np.ndarray:
        photo, col, row = self.index.locate(k)
        out = np.empty((len(k), 3), dtype=np.uint8)
        for p in np.unique(photo):
            i = self.index.scene_ids[p]
            rgb = load_rgb(self.scene.image_paths[i], self.scene.cameras[i])
            sel = photo == p
            out[sel] = rgb[row[sel], col[sel]]
        return out

    def batch(self, k: Tensor) -> PixelBatch:
        """Rays and colours of pixels ``k`` (N,) int64 of the index."""
        k_np = k.cpu().numpy().astype(np.int64)
        photo, col, row = (torch.from_numpy(a) for a in self.index.locate(k_np))
        origins, dirs = pixel_rays(self.table, self.c2w, photo, col, row)
        rgb = torch.from_numpy(self._colors(k_np)).float() / 255.0
        return PixelBatch(origins, dirs, rgb, photo)

    def close(self) -> None:
        self._map = None

    def remove(self) -> None:
        """Close, and delete the cached index and colour file (the block folder's)."""
        self.close()
        if self.colors_path is not None:
            self.colors_path.unlink(missing_ok=True)
            self.colors_path.with_name(INDEX_FILE).unlink(missing_ok=True)


def _fingerprint(scene: Scene, block: Block, names: list[str]) -> str:
    """Everything the cached pixels depend on: photos (size, time), cameras, poses, rectangle."""
    lookup = {n: i for i, n in enumerate(scene.names)}
    parts = []
    for name in names:
        i = lookup[name]
        stat = Path(scene.image_paths[i]).stat()
        parts.append([name, stat.st_size, stat.st_mtime_ns, repr(scene.cameras[i]), scene.c2w[i].tolist()])
    record = {"photos": parts, "rect": list(block.expanded), "ground_z": scene.ground_z, "version": 1}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def block_pixels(
    scene: Scene, block: Block, folder: Path, budget_bytes: int = 256 << 20, chunk_pixels: int = CHUNK_PIXELS
) -> BlockPixels:
    """The training pixels of ``block`` (its ``images``), cached in ``folder`` (the block's).

    The index and colour file are reused while the photos, cameras and rectangle are unchanged
    (a resumed block does not decode its photos again), else rebuilt; both are written atomically.
    """
    folder = Path(folder)
    names = list(block.images)
    key = _fingerprint(scene, block, names)
    index_path, colors_path = folder / INDEX_FILE, folder / COLORS_FILE
    index = _read_index(index_path, key, names, scene)
    if index is None or not colors_path.exists():
        # Every pixel of the block's photos at most, 3 bytes each: refused up front if it cannot fit.
        lookup = {n: i for i, n in enumerate(scene.names)}
        most = sum(scene.cameras[lookup[n]].width * scene.cameras[lookup[n]].height for n in names)
        check_fits(
            f"block {block.id}'s training pixels ({len(names)} photos)",
            disk=3 * most,
            folder=folder,
            hint="free space there, or import the photos smaller (birdnerf import --max-width)",
        )
        with atomic.atomic_path(colors_path) as tmp, open(tmp, "wb") as out:
            index = build_index(scene, block, names, out, chunk_pixels)
        with atomic.atomic_path(index_path) as tmp, open(tmp, "wb") as f:
            np.savez(f, runs=index.runs, starts=index.starts, key=np.array(key))
    return BlockPixels(scene, index, colors_path, budget_bytes)


def _read_index(path: Path, key: str, names: list[str], scene: Scene) -> PixelIndex | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            runs, starts = data["runs"], data["starts"]
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache is rebuilt
    lookup = {n: i for i, n in enumerate(scene.names)}
    return PixelIndex(names, [lookup[n] for n in names], runs, starts)


def held_out_pixels(scene: Scene, block: Block, names: list[str]) -> BlockPixels:
    """Pixels of ``names`` (e.g. the block's test photos) indexed in memory, colours decoded on
    demand: for scoring a few thousand of them."""
    return BlockPixels(scene, build_index(scene, block, names), None)
