"""Pointing a run at its dataset's new place, after checking that it is the same photos."""

from __future__ import annotations

import json
from pathlib import Path

from birdnerf import atomic
from birdnerf.errors import BirdnerfError
from birdnerf.partition.manifest import Partition, read_partition, to_json
from birdnerf.partition.partition import dataset_label, plan_partition
from birdnerf.runlayout import RunLayout
from birdnerf.runlock import run_lock

SAME = ("config", "frame", "x_edges", "y_edges", "blocks")
"""What a partition of the moved dataset must reproduce exactly: the same photos (names, sizes,
poses, splits) give the same world frame, grid and image lists."""


def relink_dataset(data: str | Path, run_dir: str | Path) -> Partition:
    """Point ``run_dir`` (every version of its manifest) at the dataset now at ``data``.

    The dataset is partitioned again with the run's first settings, and must give the partition
    the run started from: the same frame, grid, blocks and photo lists (so the same photo names,
    sizes, poses and splits; photo contents are not hashed). Trained blocks, versions and
    measured points are kept. Returns the current partition, relinked.
    """
    run_dir = Path(run_dir)
    with run_lock(run_dir, "partition --relink"):
        current = read_partition(run_dir)
        first = _first_version(run_dir, current)
        fresh, _, _ = plan_partition(data, first.config)
        expected, found = to_json(first), to_json(fresh)
        differ = [key for key in SAME if expected[key] != found[key]]
        if differ:
            raise BirdnerfError(
                f"not the run's dataset: partitioned with the run's settings it gives another "
                f"{', '.join(differ)} than {first.dataset} did; the run was left as it was",
                Path(data),
            )
        label = dataset_label(Path(data))
        layout = RunLayout(run_dir)
        for path in [layout.manifest, *layout.versions()]:
            record = json.loads(path.read_text(encoding="utf-8"))
            if record.get("dataset") == first.dataset:
                atomic.write_json(path, {**record, "dataset": label})
        return read_partition(run_dir)


def _first_version(run_dir: Path, current: Partition) -> Partition:
    """The manifest the run started from (version 1)."""
    if current.version == 1:
        return current
    path = RunLayout(run_dir).version(1)
    if not path.is_file():
        raise BirdnerfError("the run's first version is missing, so its photos cannot be compared", path)
    return read_partition(path)
