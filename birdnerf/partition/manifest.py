"""The partition manifest ``RUN/partition.json``: one versioned, deterministic JSON file."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from birdnerf import atomic
from birdnerf.errors import BirdnerfError

SCHEMA = "birdnerf.partition"
SCHEMA_VERSION = 1
MANIFEST = "partition.json"
BLOCK_ID = re.compile(r"r(m?\d+)c(m?\d+)")
MIN_IMAGES = 2
"""Blocks with fewer training photos are not trained and never render."""


@dataclass
class PartitionConfig:
    """How to cut the survey into blocks."""

    blocks: tuple[int, int] | None = None
    """Rows x columns of blocks; when None, chosen from ``images_per_block``."""
    images_per_block: int = 20
    """Target number of training photos whose centre lies in each block's core."""
    overlap: float = 0.25
    """Overlap added on each side of a block, as a fraction of its core size."""
    overlap_m: float | None = None
    """Overlap in scene units (metres when georeferenced); overrides ``overlap``."""
    min_coverage: float = 0.1
    """A photo joins a block when at least this fraction of its pixels see the expanded rectangle."""
    max_range_factor: float = 3.0
    """Oblique footprints are clipped at this multiple of the altitude from the camera."""
    box_margin: float = 0.1
    """Margin added above and below the altitude range of a block's 3D box (fraction of range)."""


def block_folder(block_id: str, revision: int = 1) -> str:
    """A block's folder relative to the run: ``blocks/<id>``, or ``blocks/<id>.v<N>`` when an
    update (manifest version N) retrained it; older folders stay, so versions can be restored."""
    return f"blocks/{block_id}" if revision == 1 else f"blocks/{block_id}.v{revision}"


@dataclass
class Block:
    """One block: the region it owns, the region it trains on, and its photos."""

    id: str
    row: int
    col: int
    core: list[float]  # xmin, ymin, xmax, ymax on the ground plane
    expanded: list[float]  # core + overlap
    box: list[float]  # xmin, ymin, zmin, xmax, ymax, zmax: expanded x altitude range
    images: list[str]  # training photos (dataset-relative names)
    test_images: list[str]  # held-out photos that see the block
    stats: dict = field(default_factory=dict)
    revision: int = 1
    """Manifest version whose training wrote this block's model (its folder, see ``folder``)."""

    @property
    def folder(self) -> str:
        return block_folder(self.id, self.revision)

    @property
    def trainable(self) -> bool:
        return len(self.images) >= MIN_IMAGES


@dataclass
class Partition:
    """The blocks of a survey and the world frame they live in."""

    dataset: str
    config: PartitionConfig
    frame: dict  # world_from_input (4x4), ground_z, up_source, ground_source
    x_edges: list[float]
    y_edges: list[float]
    blocks: list[Block]
    version: int = 1  # manifest version, bumped by updates
    sources: list[dict] = field(default_factory=list)
    """Datasets added by updates: ``{"path", "prefix", "load_transform", "version"}`` each."""
    change: dict = field(default_factory=dict)
    """What made this version: kind, time, blocks touched, photos added and removed."""
    retired: list[str] = field(default_factory=list)
    """Photos superseded by newer ones of the same area (no block trains on or scores them)."""

    def block(self, block_id: str) -> Block:
        for b in self.blocks:
            if b.id == block_id:
                return b
        raise BirdnerfError(f"no block {block_id!r} (blocks: {', '.join(b.id for b in self.blocks)})")

    @property
    def world_from_input(self) -> np.ndarray:
        return np.asarray(self.frame["world_from_input"], dtype=np.float64)


def _round(value):
    """Round floats to 6 decimals recursively, so that manifests are byte-for-byte stable."""
    if isinstance(value, float):
        r = round(value, 6)
        return 0.0 if r == 0 else r
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_round(v) for v in value]
    return value


def to_json(partition: Partition) -> dict:
    data = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION}
    data.update(asdict(partition))
    return _round(data)


def write_partition(run_dir: str | Path, partition: Partition) -> Path:
    """Write ``run_dir/partition.json`` atomically and return its path."""
    path = Path(run_dir) / MANIFEST
    atomic.write_json(path, to_json(partition))
    return path


def read_partition(run_dir: str | Path) -> Partition:
    """Read ``run_dir/partition.json`` (or the given file), checking its schema."""
    path = Path(run_dir)
    if path.is_dir():
        path = path / MANIFEST
    if not path.is_file():
        raise BirdnerfError("no partition manifest here (run `birdnerf partition` first)", path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BirdnerfError(f"malformed JSON ({err})", path) from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise BirdnerfError(f"not a birdnerf partition manifest (schema != {SCHEMA!r})", path)
    if data.get("schema_version") != SCHEMA_VERSION:
        raise BirdnerfError(f"unsupported schema_version {data.get('schema_version')!r}", path)
    try:
        cfg = dict(data["config"])
        if cfg.get("blocks") is not None:
            cfg["blocks"] = tuple(cfg["blocks"])
        config = PartitionConfig(**{f.name: cfg[f.name] for f in fields(PartitionConfig) if f.name in cfg})
        blocks = [Block(**b) for b in data["blocks"]]
        for b in blocks:  # ids and revisions name folders: they must not reach outside the run
            if not BLOCK_ID.fullmatch(str(b.id)) or not isinstance(b.revision, int) or b.revision < 1:
                raise BirdnerfError(f"bad block id or revision ({b.id!r}, {b.revision!r})", path)
        return Partition(
            dataset=data["dataset"],
            config=config,
            frame=data["frame"],
            x_edges=data["x_edges"],
            y_edges=data["y_edges"],
            blocks=blocks,
            version=data.get("version", 1),
            sources=data.get("sources", []),
            change=data.get("change", {}),
            retired=data.get("retired", []),
        )
    except (KeyError, TypeError) as err:
        raise BirdnerfError(f"manifest is missing or has a bad field ({err})", path) from None
