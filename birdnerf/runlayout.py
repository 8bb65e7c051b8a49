"""Where every file of a run lives: one object that every package asks for paths.

``docs/formats.md`` describes each file; this module only names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MANIFEST = "partition.json"
STAGED = "partition.staged.json"
HISTORY = "history"
POINTS = "points.npz"
BLOCKS = "blocks"
RENDERS = "renders"
EVAL = "eval.json"
LOCK = ".lock"
ORTHO = "ortho"
MAP = "partition.png"
PROBE = ".probe"


def block_folder(block_id: str, revision: int = 1) -> str:
    """A block's folder relative to the run: ``blocks/<id>``, or ``blocks/<id>.v<N>`` when an
    update (manifest version N) retrained it; older folders stay, so versions can be restored."""
    return f"{BLOCKS}/{block_id}" if revision == 1 else f"{BLOCKS}/{block_id}.v{revision}"


@dataclass(frozen=True)
class RunLayout:
    """The paths of a run directory ``root``."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def manifest(self) -> Path:
        """``partition.json``: the current version's manifest."""
        return self.root / MANIFEST

    @property
    def staged(self) -> Path:
        """``partition.staged.json``: an update's next version while it trains."""
        return self.root / STAGED

    @property
    def history(self) -> Path:
        return self.root / HISTORY

    def version(self, number: int) -> Path:
        """``history/partition.v<N>.json``: an earlier version's manifest."""
        return self.history / f"partition.v{number}.json"

    def versions(self) -> list[Path]:
        """Every archived manifest in ``history/``, in name order."""
        return sorted(self.history.glob("partition.v*.json"))

    @property
    def points(self) -> Path:
        """``points.npz``: points measured from the photos, when the dataset has none."""
        return self.root / POINTS

    @property
    def map(self) -> Path:
        return self.root / MAP

    @property
    def blocks(self) -> Path:
        return self.root / BLOCKS

    def block(self, block_id: str, revision: int = 1) -> Path:
        """A block's folder (see :func:`block_folder`)."""
        return self.root / block_folder(block_id, revision)

    def renders(self, label: str) -> Path:
        """``renders/<label>``: views of a split ("test", "train", "all") or of a camera path."""
        return self.root / RENDERS / label

    @property
    def eval(self) -> Path:
        return self.root / EVAL

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    @property
    def ortho(self) -> Path:
        """``ortho/``: the orthophoto, DSM and their tile cache."""
        return self.root / ORTHO

    def probe(self, token: str) -> Path:
        """``.probe-<token>.partial/``: where every node of a cluster writes a file to show that it
        sees the run (removed afterwards; a killed check's folder is a leftover like any other)."""
        return self.root / f"{PROBE}-{token}.partial"
