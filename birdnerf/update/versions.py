"""Versions of a run's manifest: the current one is ``RUN/partition.json``, earlier ones are kept
in ``RUN/history/partition.v<N>.json``.

Every update or rollback makes a new version; no version and no block folder is ever deleted,
so any version can be restored. A new version is first written in full to
``RUN/partition.staged.json`` (its blocks trained into their own folders), then committed: the
current manifest is archived, and the staged file is renamed over ``partition.json``. A rename is
atomic, so a run is always at its old version or its new one, never in between.
"""

from __future__ import annotations

import copy
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from birdnerf import atomic
from birdnerf.block import checkpoint as ckpt
from birdnerf.errors import BirdnerfError
from birdnerf.partition.manifest import Partition, read_partition, to_json
from birdnerf.runlayout import MANIFEST, STAGED, RunLayout
from birdnerf.runlock import locks_run


def now() -> str:
    """The time stamp of a change record: UTC, ISO 8601, to the second."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def history_path(run_dir: str | Path, version: int) -> Path:
    return RunLayout(run_dir).version(version)


def list_versions(run_dir: str | Path) -> list[Partition]:
    """Every version of the run's manifest, oldest first (the last one is current)."""
    run_dir = Path(run_dir)
    current = read_partition(run_dir)
    found = {current.version: current}
    for path in RunLayout(run_dir).versions():
        partition = read_partition(path)
        found.setdefault(partition.version, partition)
    return [found[v] for v in sorted(found) if v <= current.version]


def read_version(run_dir: str | Path, version: int) -> Partition:
    current = read_partition(run_dir)
    if version == current.version:
        return current
    path = history_path(run_dir, version)
    if not path.is_file():
        known = ", ".join(str(p.version) for p in list_versions(run_dir))
        raise BirdnerfError(f"no version {version} (versions: {known})", Path(run_dir) / MANIFEST)
    return read_partition(path)


def same_plan(a: Partition, b: Partition) -> bool:
    """Whether two manifests are the same version with the same content, the time aside."""
    ja, jb = to_json(a), to_json(b)
    ja["change"] = {k: v for k, v in ja["change"].items() if k not in ("time", "seconds")}
    jb["change"] = {k: v for k, v in jb["change"].items() if k not in ("time", "seconds")}
    return ja == jb


def discard_staged(run_dir: str | Path) -> Partition | None:
    """Remove a staged version left by an interrupted update, and the block folders it trained."""
    run_dir = Path(run_dir)
    staged_path = run_dir / STAGED
    if not staged_path.exists():
        return None
    current = read_partition(run_dir)
    try:
        staged = read_partition(staged_path)
    except BirdnerfError:
        staged_path.unlink()
        return None
    if staged.version > current.version:  # never touch folders a committed version uses
        for block in staged.blocks:
            if block.revision == staged.version:
                shutil.rmtree(run_dir / block.folder, ignore_errors=True)
    staged_path.unlink(missing_ok=True)
    return staged


def check_trained(run_dir: str | Path, partition: Partition) -> None:
    """Raise unless every trainable block of ``partition`` has a finished model on disk."""
    for block in partition.blocks:
        if block.trainable and not (ckpt.block_dir(run_dir, block.id, block.revision) / "done.json").exists():
            raise BirdnerfError(
                f"block {block.id} of version {partition.version} has no finished model in {block.folder} "
                "(run `birdnerf train` first)",
                Path(run_dir),
            )


def commit(run_dir: str | Path) -> Partition:
    """Make the staged version current (see the module docstring); returns it."""
    run_dir = Path(run_dir)
    current, staged = read_partition(run_dir), read_partition(run_dir / STAGED)
    if staged.version != current.version + 1:
        raise BirdnerfError(
            f"staged version {staged.version} does not follow the current version {current.version}",
            run_dir / STAGED,
        )
    check_trained(run_dir, staged)
    archive = history_path(run_dir, current.version)
    if not archive.exists():
        atomic.write_text(archive, (run_dir / MANIFEST).read_text(encoding="utf-8"))
    os.replace(run_dir / STAGED, run_dir / MANIFEST)
    return staged


@locks_run("update --rollback")
def rollback(run_dir: str | Path, version: int | None = None) -> Partition:
    """Restore ``version`` (default: the one before the current) as a new version; returns it.

    Nothing is retrained: the restored version's block folders are still on disk.
    """
    run_dir = Path(run_dir)
    discard_staged(run_dir)
    current = read_partition(run_dir)
    target_version = current.version - 1 if version is None else version
    if target_version < 1 or target_version >= current.version:
        raise BirdnerfError(
            f"cannot roll back to version {target_version}: choose one of 1..{current.version - 1}",
            run_dir / MANIFEST,
        )
    target = read_version(run_dir, target_version)
    check_trained(run_dir, target)
    restored = copy.deepcopy(target)
    restored.version = current.version + 1
    restored.change = {"kind": "rollback", "time": now(), "restores": target_version}
    stage(run_dir, restored)
    return commit(run_dir)


def stage(run_dir: str | Path, partition: Partition) -> Path:
    """Write ``partition`` as the staged version (atomically); returns its path."""
    path = Path(run_dir) / STAGED
    atomic.write_json(path, to_json(partition))
    return path
