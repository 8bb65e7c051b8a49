"""``info``: a run's datasets, blocks and version history, as plain data."""

from __future__ import annotations

from pathlib import Path

from birdnerf.block import checkpoint as ckpt
from birdnerf.runlayout import RunLayout
from birdnerf.update import versions


def block_status(run_dir: Path, block) -> str:
    folder = ckpt.block_dir(run_dir, block.id, block.revision)
    if not block.trainable:
        return "empty"
    if (folder / "done.json").exists():
        return "trained"
    if (folder / "checkpoint.pt").exists():
        return "partly trained"
    return "not trained"


def describe_change(change: dict) -> str:
    """One line for a version's change record."""
    kind = change.get("kind", "partition")
    if kind == "partition":
        return "partitioned"
    if kind == "rollback":
        return f"restored version {change['restores']}"
    retrained = change.get("blocks_retrained", {})
    parts = [f"+{change.get('photos_added', 0)} photos"]
    if change.get("photos_removed"):
        parts.append(f"-{change['photos_removed']} older")
    parts.append(f"retrained {', '.join(f'{b} ({m})' for b, m in retrained.items()) or 'nothing'}")
    if change.get("blocks_created"):
        parts.append(f"new {', '.join(change['blocks_created'])}")
    return "; ".join(parts)


def run_info(run_dir: str | Path) -> dict:
    """The run at a glance: current version, datasets, blocks, and every version's change."""
    run_dir = Path(run_dir)
    history = versions.list_versions(run_dir)
    current = history[-1]
    staged = RunLayout(run_dir).staged
    return {
        "run": str(run_dir),
        "version": current.version,
        "datasets": [current.dataset] + [s["path"] for s in current.sources],
        "blocks": [
            {
                "id": b.id,
                "images": len(b.images),
                "test_images": len(b.test_images),
                "revision": b.revision,
                "folder": b.folder,
                "status": block_status(run_dir, b),
            }
            for b in current.blocks
        ],
        "retired_photos": len(current.retired),
        "history": [
            {
                "version": p.version,
                "time": p.change.get("time"),
                "kind": p.change.get("kind", "partition"),
                "summary": describe_change(p.change),
                "seconds": p.change.get("seconds"),
            }
            for p in history
        ],
        "interrupted_update": staged.exists(),
    }
