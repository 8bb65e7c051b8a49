"""Training every block of a run: in sequence, or in a pool of processes that share the cores.

Blocks are independent, so each can run in its own process (or, later, on its own machine).
Threads x processes never exceed the cores unless asked: ``jobs`` processes get
``cores // jobs`` torch threads each.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from birdnerf.partition import load_scene, read_partition
from birdnerf.partition.manifest import MANIFEST
from birdnerf.torch_globals import keep_torch_globals
from birdnerf.train import checkpoint as ckpt
from birdnerf.train.loop import TrainConfig, train_block


@dataclass
class BlockPlan:
    block_id: str
    action: str  # "train", "resume", "skip-done" or "skip-empty"


def plan_blocks(
    run_dir: Path, block_ids: list[str] | None, resume: bool, force: bool, manifest: Path | None = None
) -> list[BlockPlan]:
    """What to do with each requested block of ``run_dir`` (as ``manifest`` lists them, if given)."""
    partition = read_partition(manifest or run_dir)
    ids = block_ids or [b.id for b in partition.blocks]
    plans = []
    for block_id in ids:
        block = partition.block(block_id)
        folder = ckpt.block_dir(run_dir, block_id, block.revision)
        if not block.trainable:
            plans.append(BlockPlan(block_id, "skip-empty"))
        elif (folder / "done.json").exists() and not force:
            plans.append(BlockPlan(block_id, "skip-done"))
        elif resume and (folder / "checkpoint.pt").exists() and not force:
            plans.append(BlockPlan(block_id, "resume"))
        else:
            plans.append(BlockPlan(block_id, "train"))
    return plans


def _train_one(
    run_dir: str,
    manifest: str,
    block_id: str,
    config: dict,
    resume: bool,
    threads: int,
    events,
    init_from: str | None = None,
) -> dict:
    """Worker entry point (also used in-process): train one block, report progress to ``events``."""
    torch.set_num_threads(threads)
    partition = read_partition(manifest)
    scene = load_scene(partition)

    def progress(done: int, total: int, info: dict) -> None:
        events.put((block_id, done, total, info))

    return train_block(
        run_dir,
        scene,
        partition.block(block_id),
        TrainConfig.from_dict(config),
        resume=resume,
        progress=progress,
        init_from=init_from,
    )


class _Inline:
    """A queue stand-in that calls back at once (sequential mode)."""

    def __init__(self, callback: Callable) -> None:
        self.callback = callback

    def put(self, item) -> None:
        self.callback(*item)


@keep_torch_globals()
def train_run(
    run_dir: str | Path,
    config: TrainConfig,
    *,
    block_ids: list[str] | None = None,
    jobs: int = 1,
    threads: int | None = None,
    resume: bool = True,
    force: bool = False,
    on_progress: Callable[[str, int, int, dict], None] | None = None,
    on_plan: Callable[[list[BlockPlan]], None] | None = None,
    manifest: Path | None = None,
    init_from: dict[str, Path] | None = None,
) -> dict[str, dict]:
    """Train the blocks of ``run_dir`` (all, or ``block_ids``); returns figures per trained block.

    Each finished block's figures (its ``done.json``) hold ``quality``: PSNR (dB) on its held-out
    pixels beside the mean-colour baseline of the same pixels (see
    :func:`birdnerf.train.quality.block_quality`); blocks skipped as done are not in the result.

    ``manifest`` trains the blocks as another manifest file lists them (an update's staged
    version); ``init_from`` maps block ids to finished models to fine-tune from.
    """
    run_dir = Path(run_dir)
    manifest = Path(manifest) if manifest else run_dir / MANIFEST
    init_from = {k: str(v) for k, v in (init_from or {}).items()}
    plans = plan_blocks(run_dir, block_ids, resume, force, manifest)
    if on_plan:
        on_plan(plans)
    todo = [p for p in plans if p.action in ("train", "resume")]
    cores = os.cpu_count() or 1
    jobs = max(1, min(jobs, len(todo) or 1))
    threads = threads or max(1, cores // jobs)
    notify = on_progress or (lambda *_: None)
    results: dict[str, dict] = {}
    if jobs == 1:
        for plan in todo:
            results[plan.block_id] = _train_one(
                str(run_dir),
                str(manifest),
                plan.block_id,
                config.to_dict(),
                resume and not force,
                threads,
                _Inline(notify),
                init_from.get(plan.block_id),
            )
        return results
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        events = manager.Queue()
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {
                pool.submit(
                    _train_one,
                    str(run_dir),
                    str(manifest),
                    p.block_id,
                    config.to_dict(),
                    resume and not force,
                    threads,
                    events,
                    init_from.get(p.block_id),
                ): p.block_id
                for p in todo
            }
            pending = set(futures)
            while pending:
                try:
                    notify(*events.get(timeout=0.2))
                except queue.Empty:
                    pass
                for fut in [f for f in pending if f.done()]:
                    pending.discard(fut)
                    results[futures[fut]] = fut.result()
            while not events.empty():
                notify(*events.get())
    return results
