"""``update``: add photos of a changed area to a trained run, retraining only the blocks they touch."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from birdnerf import formats
from birdnerf.block import checkpoint as ckpt
from birdnerf.errors import BirdnerfError
from birdnerf.geo.enu import GeoPoint, enu_to_enu
from birdnerf.partition.manifest import Partition, read_partition
from birdnerf.partition.partition import apply_frame, dataset_label, load_scene
from birdnerf.runlayout import RunLayout
from birdnerf.runlock import locks_run
from birdnerf.scene.images import check_photos
from birdnerf.scene.load import load_dataset
from birdnerf.scene.scene import Scene
from birdnerf.torch_globals import keep_torch_globals
from birdnerf.train.budget import check_training_fits
from birdnerf.train.loop import TrainConfig
from birdnerf.train.ray_pool import RayOptions
from birdnerf.train.runner import failed_blocks, train_run
from birdnerf.update import versions
from birdnerf.update.plan import UpdatePlan, plan_update


@dataclasses.dataclass
class UpdateOptions:
    """How an update retrains the blocks it touches."""

    from_scratch: bool = False
    """Retrain touched blocks from a fresh field instead of fine-tuning their current model."""
    replace_older: bool = False
    """Drop older photos of the changed area (the new photos' footprint centres) from the
    touched blocks, so that the area shows its new state."""
    steps: int | None = None
    """Training steps per retrained block; default: the steps the run was trained with, half of
    them when fine-tuning."""
    allow_new_area: bool = False
    """Accept photos that touch none of the run's blocks (they only make new blocks beyond it)."""


def source_transform(frame: dict, base_geo: dict | None, raw: Scene) -> np.ndarray:
    """(4, 4) map from a new dataset's input frame to the run's world frame.

    The new photos are taken to be in the run's input frame, unless both datasets carry an ENU
    geographic reference: then they are first moved from their ENU origin to the run's.
    """
    load = np.asarray(frame["load_transform"], dtype=np.float64)
    geo = raw.geo
    if base_geo and geo and base_geo.get("frame") == "ENU" and geo.get("frame") == "ENU":
        source = GeoPoint(geo["lat"], geo["lon"], geo["alt"])
        target = GeoPoint(base_geo["lat"], base_geo["lon"], base_geo["alt"])
        return load @ enu_to_enu(source, target)
    return load


def check_same_frame(scene: Scene, raw: Scene, data: Path) -> None:
    """New photos must be placeable in the run's frame: both georeferenced (ENU), or neither."""
    run_geo = bool(scene.geo and scene.geo.get("frame") == "ENU")
    new_geo = bool(raw.geo and raw.geo.get("frame") == "ENU")
    if run_geo != new_geo:
        which = (
            "these photos are georeferenced but the run is not"
            if new_geo
            else ("the run is georeferenced but these photos are not")
        )
        raise BirdnerfError(f"{which}, so they cannot be placed in its frame", data)


def _digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_new_content(scene: Scene, raw: Scene, data: Path) -> None:
    """Refuse photos whose content is already in the run (a copied folder of the same photos) or
    that appear twice among the new ones."""
    known = {_digest(p): name for p, name in zip(scene.image_paths, scene.names, strict=True)}
    seen: dict[str, str] = {}
    repeats = []
    for path, name in zip(raw.image_paths, raw.names, strict=True):
        digest = _digest(path)
        if digest in known or digest in seen:
            repeats.append((name, known.get(digest) or seen[digest]))
        seen.setdefault(digest, name)
    if repeats:
        name, twin = repeats[0]
        raise BirdnerfError(
            f"{len(repeats)} of these {len(raw.names)} photos are already in the run or repeated "
            f"({name!r} has the same content as {twin!r})",
            data,
        )


def base_config(run_dir: Path, partition: Partition) -> TrainConfig:
    """The training configuration the run's blocks were trained with (the first one found)."""
    for block in partition.blocks:
        path = ckpt.block_dir(run_dir, block.id, block.revision) / "config.json"
        if path.exists():
            return formats.build(
                TrainConfig.from_dict, ckpt.read_config(path.parent).get("train"), path, "training settings"
            )
    return TrainConfig()


def prepare_update(run_dir: str | Path, data: str | Path, options: UpdateOptions) -> UpdatePlan:
    """Read the run and the new dataset, and plan the next version (nothing is written)."""
    run_dir = Path(run_dir)
    current = read_partition(run_dir)
    label = dataset_label(Path(data))
    for k, path in enumerate([current.dataset] + [s["path"] for s in current.sources]):
        if path == label:
            where = "the run's dataset" if k == 0 else f"added by version {current.sources[k - 1]['version']}"
            raise BirdnerfError(f"these photos are already in the run ({where})", Path(data))
    scene = load_scene(current)
    raw = load_dataset(data)
    raw.validate()
    check_photos(raw.image_paths, raw.cameras, raw.names, Path(data))
    check_same_frame(scene, raw, Path(data))
    check_new_content(scene, raw, Path(data))
    transform = source_transform(current.frame, scene.geo, raw)
    added = apply_frame(raw, {**current.frame, "load_transform": transform.tolist()})
    prefix = f"v{current.version + 1}"
    plan = plan_update(
        current, scene, added, prefix, replace_older=options.replace_older, fine_tune=not options.from_scratch
    )
    if len(plan.unused) == len(plan.added):
        raise BirdnerfError(
            "none of these photos fall on the run's blocks, and too few lie together beyond them to "
            "make a block (is the dataset in the run's frame?)",
            Path(data),
        )
    if not options.allow_new_area and set(plan.retrain) <= set(plan.created):
        raise BirdnerfError(
            f"these photos touch none of the run's blocks: they would only make {len(plan.created)} new "
            "block(s) beyond the site (is the dataset in the run's frame?); pass --allow-new-area to "
            "add them anyway",
            Path(data),
        )
    plan.partition.sources.append(
        {
            "path": label,
            "prefix": prefix,
            "load_transform": transform.tolist(),
            "version": current.version + 1,
        }
    )
    plan.partition.change = {
        "kind": "update",
        "time": versions.now(),
        "data": label,
        "options": dataclasses.asdict(options),
        "photos_added": len(plan.added),
        "photos_removed": len(plan.removed),
        "removed": plan.removed,
        "blocks_retrained": plan.retrain,
        "blocks_created": plan.created,
        "photos_unused": plan.unused,
    }
    return plan


@locks_run("update")
@keep_torch_globals()
def update_run(
    run_dir: str | Path,
    data: str | Path,
    options: UpdateOptions | None = None,
    *,
    jobs: int = 1,
    threads: int | None = None,
    on_plan: Callable[[UpdatePlan], None] | None = None,
    on_progress: Callable[[str, int, int, dict], None] | None = None,
    ray: RayOptions | None = None,
) -> UpdatePlan:
    """Add the photos in ``data`` to the run and retrain the blocks they touch; returns the plan.

    The new version is staged and its blocks trained into new folders; only then does it become
    current (see :mod:`birdnerf.update.versions`). An interrupted update leaves the run at its
    old version; running the same update again resumes it, a different one discards it.
    With ``ray``, the blocks train as Ray tasks (see :func:`birdnerf.train.train_run`); a block that
    keeps failing leaves the update staged, to be resumed by running it again.
    """
    run_dir = Path(run_dir)
    options = options or UpdateOptions()
    current = read_partition(run_dir)
    versions.check_trained(run_dir, current)
    plan = prepare_update(run_dir, data, options)
    base = base_config(run_dir, current)
    if plan.retrain:  # refused before the new version is staged
        photos = max(len(plan.partition.block(b).images) for b in plan.retrain)
        check_training_fits(base, photos, max(1, min(jobs, len(plan.retrain))))
    staged_path = RunLayout(run_dir).staged
    if staged_path.exists() and not versions.same_plan(read_partition(staged_path), plan.partition):
        versions.discard_staged(run_dir)
    if not staged_path.exists():
        versions.stage(run_dir, plan.partition)
    if on_plan:
        on_plan(plan)
    old_blocks = {b.id: b for b in current.blocks}
    start = time.perf_counter()
    for mode in ("fine-tune", "from-scratch"):
        ids = [b for b, m in plan.retrain.items() if m == mode]
        if not ids:
            continue
        steps = options.steps or (max(1, base.steps // 2) if mode == "fine-tune" else base.steps)
        init = (
            {b: ckpt.block_dir(run_dir, b, old_blocks[b].revision) for b in ids}
            if mode == "fine-tune"
            else None
        )
        results = train_run(
            run_dir,
            dataclasses.replace(base, steps=steps),
            block_ids=ids,
            jobs=jobs,
            threads=threads,
            manifest=staged_path,
            init_from=init,
            on_progress=on_progress,
            ray=ray,
        )
        failed = failed_blocks(results)
        if failed:
            first = next(iter(failed))
            raise BirdnerfError(
                f"{len(failed)} block(s) failed, the first {first}: {failed[first]}; the update stays "
                "staged: run it again to resume"
            )
    staged = read_partition(staged_path)
    staged.change["seconds"] = round(time.perf_counter() - start, 1)
    versions.stage(run_dir, staged)
    plan.partition = versions.commit(run_dir)
    return plan
