"""Coordinate frames of exported geometry: the run's world frame, the dataset's input frame, ENU.

A run's world frame is reached from the reader's input frame by the similarity recorded in the
partition manifest, ``frame["world_from_input"]``: the dataset's own ``world_from_input`` (the
frame move an importer made, e.g. COLMAP gauge -> GPS-aligned ENU, kept in its transforms.json
under ``birdnerf``) followed by ``frame["load_transform"]`` (the move that partitioning made,
dataset -> world). So:

- input = ``inv(frame["world_from_input"]) @ world`` (where the user's data was);
- ENU = ``inv(frame["load_transform"]) @ world`` for a dataset whose ``geo`` record says its
  frame is ENU (x east, y north, z up, metres from the WGS84 origin it names).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from birdnerf.errors import BirdnerfError
from birdnerf.geo.enu import enu_origin
from birdnerf.partition.manifest import Partition
from birdnerf.runlayout import RunLayout

FRAMES = ("world", "input", "enu")


@dataclass(frozen=True)
class OutputFrame:
    """Where exported coordinates live: a similarity from the run's world frame, and the
    geographic origin when the frame is ENU."""

    name: str
    from_world: np.ndarray
    """(4, 4) similarity: output = from_world @ world."""
    geo: dict | None = None
    """{"frame": "ENU", "ellipsoid": "WGS84", "lat", "lon" (degrees), "alt" (metres)} for ENU."""

    def points(self, xyz: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> output frame (float64)."""
        m = self.from_world
        return np.asarray(xyz, np.float64) @ m[:3, :3].T + m[:3, 3]

    def directions(self, normals: np.ndarray) -> np.ndarray:
        """(N, 3) world unit vectors -> output frame (rotated, still unit length)."""
        rot = self.from_world[:3, :3]
        rot = rot / np.cbrt(np.linalg.det(rot))
        return np.asarray(normals, np.float64) @ rot.T

    @property
    def flips_orientation(self) -> bool:
        """Whether the map mirrors (so triangles must change their winding to face the same side)."""
        return bool(np.linalg.det(self.from_world[:3, :3]) < 0)


def output_frame(partition: Partition, name: str, geo: dict | None) -> OutputFrame:
    """The frame ``name`` ("world", "input" or "enu") of a run, ``geo`` being its dataset's record."""
    if name not in FRAMES:
        raise BirdnerfError(f"frame must be one of {', '.join(FRAMES)}, not {name!r}")
    if name == "world":
        return OutputFrame("world", np.eye(4))
    if name == "input":
        return OutputFrame("input", _inverse(partition, "world_from_input"))
    origin = enu_origin(geo, partition.dataset)
    if origin is None:
        raise BirdnerfError(
            "the run is not georeferenced (its dataset has no ENU geographic reference), so there "
            "are no ENU coordinates to export; use --frame world or --frame input",
            partition.dataset,
        )
    record = {"frame": "ENU", "ellipsoid": geo.get("ellipsoid", "WGS84"), **origin.as_dict()}
    return OutputFrame("enu", _inverse(partition, "load_transform"), record)


def _inverse(partition: Partition, key: str) -> np.ndarray:
    """The inverse of the manifest frame record's 4x4 transform ``key``."""
    try:
        matrix = np.asarray(partition.frame[key], dtype=np.float64)
        ok = matrix.shape == (4, 4) and np.all(np.isfinite(matrix)) and abs(np.linalg.det(matrix)) > 1e-12
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        where = RunLayout(partition.run_dir).manifest if partition.run_dir else None
        raise BirdnerfError(f"frame record's {key} is not an invertible 4x4 transform", where)
    return np.linalg.inv(matrix)
