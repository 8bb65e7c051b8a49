"""The partition manifest ``RUN/partition.json``: one versioned, deterministic JSON file."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from birdnerf import atomic
from birdnerf.errors import BirdnerfError
from birdnerf.partition.footprint import MAX_RANGE_FACTOR
from birdnerf.runlayout import MANIFEST, block_folder

SCHEMA = "birdnerf.partition"
SCHEMA_VERSION = 1
BLOCK_ID = re.compile(r"r(m?\d+)c(m?\d+)")
MIN_IMAGES = 2
"""Points measured from the photos at partition time, in the run directory (world frame)."""
OPTIONAL_CONFIG = ("ground_z", "z_range")
"""Config fields written only when set, so manifests that do not use them stay as they were."""
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
    max_range_factor: float = MAX_RANGE_FACTOR
    """Oblique footprints are clipped at this multiple of the altitude from the camera."""
    box_margin: float = 0.1
    """Margin added above and below the altitude range of a block's 3D box (fraction of range)."""
    headroom: float = 0.5
    """Every block's box reaches at least this fraction of the flying height above the ground,
    whatever its points say: sparse matching misses what it cannot match (a forest canopy), and a
    surface above the box is squeezed into it at the wrong depth. Manifests written before this
    setting read as 0 (boxes capped by the points), so their updates keep the same boxes."""
    ground_z: float | None = None
    """Height of the ground, when known: replaces the estimate (sparse points, depth maps, points
    measured from the photos, or the photo-spacing guess). In the dataset's units, along its up
    axis: for a z-up dataset simply its z coordinate. Precisely, the world frame is found by
    rotating the estimated up direction onto +z about the dataset's origin (then turning about
    z and shifting); the height is the z coordinate after that rotation, before the shift. For a
    dataset already in the bird-view frame (birdnerf's own), its z coordinate."""
    z_range: tuple[float, float] | None = None
    """(lowest, highest) height of the surface (ground to the tallest roof or tree), same units
    and axis as ``ground_z``: every block's 3D box spans exactly this height range."""

    def check(self) -> None:
        """Raise BirdnerfError for a user-stated height that cannot be right."""
        if self.ground_z is not None and not math.isfinite(self.ground_z):
            raise BirdnerfError(f"--ground-z must be a finite height, got {self.ground_z}")
        if self.z_range is not None:
            lo, hi = self.z_range
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise BirdnerfError(f"--z-range needs ZMIN < ZMAX (finite heights), got {lo:g} {hi:g}")
            if self.ground_z is not None and not lo <= self.ground_z <= hi:
                raise BirdnerfError(f"--ground-z {self.ground_z:g} lies outside --z-range {lo:g} {hi:g}")


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
    frame: dict
    """world_from_input and load_transform (4x4), ground_z, up_source, ground_source; when they
    apply: ground_uncertainty_m (how far below ground_z the ground may lie, scene units: the
    ground was guessed), z_range (user-stated box heights, world z), measured_points and
    points_file (points measured from the photos, a file in the run directory)."""
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
    run_dir: Path | None = field(default=None, compare=False, repr=False)
    """The run directory this manifest was read from or written to (not stored in the file)."""

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
    del data["run_dir"]
    for key in OPTIONAL_CONFIG:
        if data["config"][key] is None:
            del data["config"][key]
    return _round(data)


def points_path(run_dir: str | Path, name: object) -> Path:
    """``run_dir / name`` for a file named in a manifest, refusing any that leaves the run."""
    root = Path(run_dir).resolve()
    path = (root / str(name)).resolve()
    if not isinstance(name, str) or not name or not path.is_relative_to(root) or path == root:
        raise BirdnerfError(f"points file {name!r} is not a file inside the run directory", root / MANIFEST)
    return path


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
        found = data.get("schema_version")
        newer = isinstance(found, int) and found > SCHEMA_VERSION
        hint = " was written by a newer birdnerf: upgrade birdnerf" if newer else " is not one birdnerf wrote"
        raise BirdnerfError(
            f"partition manifest version {found!r}{hint} (this one reads version {SCHEMA_VERSION})", path
        )
    try:
        cfg = {"headroom": 0.0, **data["config"]}
        for key in ("blocks", "z_range"):
            if cfg.get(key) is not None:
                cfg[key] = tuple(cfg[key])
        config = PartitionConfig(**{f.name: cfg[f.name] for f in fields(PartitionConfig) if f.name in cfg})
        blocks = [Block(**b) for b in data["blocks"]]
        for b in blocks:  # ids and revisions name folders: they must not reach outside the run
            if not BLOCK_ID.fullmatch(str(b.id)) or not isinstance(b.revision, int) or b.revision < 1:
                raise BirdnerfError(f"bad block id or revision ({b.id!r}, {b.revision!r})", path)
        if "points_file" in data["frame"]:
            points_path(path.parent, data["frame"]["points_file"])
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
            run_dir=path.parent,
        )
    except (KeyError, TypeError) as err:
        raise BirdnerfError(f"manifest is missing or has a bad field ({err})", path) from None
