"""Training every block of a run: in sequence, or in a pool of processes that share the cores.

Blocks are independent, so each can run in its own process (or, later, on its own machine).
Threads x processes never exceed the cores unless asked: ``jobs`` processes get
``cores // jobs`` torch threads each.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from birdnerf.block import checkpoint as ckpt
from birdnerf.device import resolve_device
from birdnerf.errors import BirdnerfError
from birdnerf.field.backends import resolve_backend, resolve_precision
from birdnerf.partition import load_scene, read_partition
from birdnerf.runlayout import RunLayout
from birdnerf.runlock import locks_run
from birdnerf.torch_globals import keep_torch_globals
from birdnerf.train.budget import check_training_fits
from birdnerf.train.loop import TrainConfig, train_block
from birdnerf.train.ray_pool import RayOptions


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
            _check_done(folder / "done.json")
            plans.append(BlockPlan(block_id, "skip-done"))
        elif resume and (folder / "checkpoint.pt").exists() and not force:
            plans.append(BlockPlan(block_id, "resume"))
        else:
            plans.append(BlockPlan(block_id, "train"))
    return plans


def _check_done(path: Path) -> None:
    """A block is skipped as finished only when its ``done.json`` reads as a finished block."""
    try:
        done = ckpt.read_done(path.parent)
    except BirdnerfError as err:
        message = f"{err.message}: the block's state is unreadable; retrain it with --force"
        raise BirdnerfError(message, path) from None
    if not isinstance(done, dict) or not done.get("finished"):
        raise BirdnerfError("not a finished block's record; retrain the block with --force", path)


def failed_blocks(results: dict[str, dict]) -> dict[str, str]:
    """Block id -> error of the blocks in :func:`train_run`'s results that failed (with Ray)."""
    return {block_id: r["error"] for block_id, r in results.items() if r.get("error")}


def check_backend(name: str, precision: str = "auto", device: str = "auto") -> None:
    """Refuse an unknown field backend or MLP precision, or one this machine cannot run, with the
    reason."""
    try:
        backend = resolve_backend(name, resolve_device(device))
    except (ValueError, RuntimeError) as err:
        raise BirdnerfError(f"backend {name!r}: {err}") from None
    try:
        resolve_precision(precision, backend)
    except ValueError as err:
        raise BirdnerfError(f"precision {precision!r}: {err}") from None


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


@locks_run("train")
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
    ray: RayOptions | None = None,
) -> dict[str, dict]:
    """Train the blocks of ``run_dir`` (all, or ``block_ids``); returns figures per trained block.

    Each finished block's figures (its ``done.json``) hold ``quality``: PSNR (dB) on its held-out
    pixels beside the mean-colour baseline of the same pixels (see
    :func:`birdnerf.train.quality.block_quality`); blocks skipped as done are not in the result.

    ``manifest`` trains the blocks as another manifest file lists them (an update's staged
    version); ``init_from`` maps block ids to finished models to fine-tune from.

    With ``ray``, the blocks are Ray tasks (see :mod:`birdnerf.train.ray_pool`; ``threads`` is each
    block's CPU request, ``jobs`` is unused), and a block that keeps failing is returned as
    ``{"finished": False, "error": ...}`` while the others finish.
    """
    check_backend(config.backend, config.precision, config.device)
    run_dir = Path(run_dir)
    manifest = Path(manifest) if manifest else RunLayout(run_dir).manifest
    init_from = {k: str(v) for k, v in (init_from or {}).items()}
    plans = plan_blocks(run_dir, block_ids, resume, force, manifest)
    todo = [p for p in plans if p.action in ("train", "resume")]
    jobs = max(1, min(jobs, len(todo) or 1))
    if todo:  # before any block starts: one block's steps, times the blocks trained at once
        partition = read_partition(manifest)
        photos = max(len(partition.block(p.block_id).images) for p in todo)
        check_training_fits(config, photos, jobs)
    if on_plan:
        on_plan(plans)
    notify = on_progress or (lambda *_: None)
    if ray is not None and todo:
        from birdnerf.train.ray_pool import train_on_ray

        return train_on_ray(
            run_dir.resolve(), manifest.resolve(), todo, config, threads, notify, init_from, ray
        )
    cores = os.cpu_count() or 1
    threads = threads or max(1, cores // jobs)
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
    return _train_in_pool(
        run_dir, manifest, todo, config, resume and not force, jobs, threads, notify, init_from
    )


def _train_in_pool(
    run_dir: Path,
    manifest: Path,
    todo: list[BlockPlan],
    config: TrainConfig,
    resume: bool,
    jobs: int,
    threads: int,
    notify: Callable[[str, int, int, dict], None],
    init_from: dict[str, str],
) -> dict[str, dict]:
    """Train ``todo`` in ``jobs`` worker processes. At most ``jobs`` blocks are handed out at once,
    so an interrupt (Ctrl-C) starts no further block; workers exit when the driver dies."""
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    results: dict[str, dict] = {}
    waiting = list(todo)
    with ProcessPoolExecutor(
        max_workers=jobs, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(), events)
    ) as pool:
        running: dict = {}
        try:
            while waiting or running:
                while waiting and len(running) < jobs:
                    plan = waiting.pop(0)
                    args = (str(run_dir), str(manifest), plan.block_id, config.to_dict(), resume, threads)
                    running[pool.submit(_train_in_worker, *args, init_from.get(plan.block_id))] = (
                        plan.block_id
                    )
                try:
                    notify(*events.get(timeout=0.2))
                except queue.Empty:
                    pass
                for fut in [f for f in running if f.done()]:
                    results[running.pop(fut)] = fut.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        while True:  # progress events still in flight
            try:
                notify(*events.get(timeout=0.05))
            except queue.Empty:
                break
    return results


_events = None


def _worker_init(parent_pid: int, events) -> None:
    """Runs in each worker process: keep the event queue, and exit when the driver is gone."""
    global _events
    _events = events
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()


def _exit_with_parent(parent_pid: int, poll_s: float = 0.5) -> None:
    while os.getppid() == parent_pid:
        time.sleep(poll_s)
    os._exit(1)  # the driver died (kill -9): writes are atomic, so stopping anywhere is safe


def _train_in_worker(
    run_dir: str,
    manifest: str,
    block_id: str,
    config: dict,
    resume: bool,
    threads: int,
    init_from: str | None = None,
) -> dict:
    """Pool entry point: :func:`_train_one` reporting to the queue the worker was started with."""
    return _train_one(run_dir, manifest, block_id, config, resume, threads, _events, init_from)
