"""Training blocks as Ray tasks, on a cluster or on a local Ray instance.

Each block is one task that asks for ``threads`` CPUs (and one GPU where the cluster has GPUs
and the device allows it) and trains the block exactly as the local runner does. A task whose
worker dies (killed, out of memory, its node lost) is retried up to ``retries`` times and
resumes from the block's last checkpoint; a block that keeps failing is reported with its error
while the others finish. Progress reaches the driver through a small actor that the driver
drains. The driver holds the run's lock; tasks write only their own block folders, atomically.

Ray is imported only here, and only when a run asks for it (the ``distributed`` extra).
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from birdnerf.block import checkpoint as ckpt
from birdnerf.errors import BirdnerfError
from birdnerf.partition import read_partition
from birdnerf.runlayout import RunLayout
from birdnerf.train.shared_storage import check_probes, write_probe

RAY_HELP = (
    "Train the blocks as tasks on a Ray cluster: the one at --ray-address (or $RAY_ADDRESS), else a "
    "Ray instance started on this machine. The run and its dataset must be on a folder every node "
    "sees at the same path."
)
ADDRESS_HELP = "With --ray: the cluster's address, host:port of its head node (or 'auto'). Implies --ray."
RETRIES_HELP = (
    "With --ray: times a block's task is retried when its worker dies (killed, out of memory, node "
    "lost); each retry resumes from the block's last checkpoint."
)
PROBE_TIMEOUT_S = 120.0


@dataclass
class RayOptions:
    """Where and how blocks run on Ray."""

    address: str | None = None
    """The cluster's address (``host:port`` of its head, or ``auto``); None: ``$RAY_ADDRESS`` if set,
    else a Ray instance started on this machine for the run."""
    retries: int = 3
    """Retries of a block whose worker dies; each resumes from the block's last checkpoint."""


class _Events:
    """A tiny actor that collects progress events from the tasks until the driver drains them."""

    def __init__(self) -> None:
        self.items: list = []

    def put(self, item) -> None:
        self.items.append(item)

    def drain(self) -> list:
        items, self.items = self.items, []
        return items


class _ToActor:
    """The queue a task reports to: each event is sent to the driver's actor without waiting."""

    def __init__(self, actor) -> None:
        self.actor = actor

    def put(self, item) -> None:
        self.actor.put.remote(item)


def _block_task(run_dir, manifest, block_id, config, threads, init_from, events) -> dict:
    """A block's task: resume from its checkpoint if one exists (a retry), else start."""
    from birdnerf.train.runner import _train_one

    return _train_one(run_dir, manifest, block_id, config, True, threads, _ToActor(events), init_from)


def _ray():
    try:
        import ray
    except ImportError:
        raise BirdnerfError("--ray needs Ray: pip install 'birdnerf[distributed]'") from None
    return ray


def connect(address: str | None) -> bool:
    """Connect to the cluster at ``address`` (see :class:`RayOptions`); True if this call connected
    (so the caller shuts down), False if the process already was."""
    ray = _ray()
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    # "local": a new instance for this run, never a cluster some earlier `ray start` left running.
    local = {} if address else {"num_cpus": os.cpu_count() or 1, "include_dashboard": False}
    try:
        ray.init(address=address or "local", **local, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"reach the Ray cluster at {address}" if address else "start Ray on this machine"
        raise BirdnerfError(f"cannot {where}: {err}") from None
    return True


def _nodes() -> list[dict]:
    """Alive nodes that can run work (with CPUs)."""
    return [n for n in _ray().nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]


def check_shared_storage(run_dir: Path, datasets: list[str]) -> None:
    """Each node writes a probe into ``run_dir``; the driver must read every one back."""
    ray = _ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    probe_dir = RunLayout(run_dir).probe(token)
    probe = ray.remote(num_cpus=0, max_retries=0)(write_probe)
    refs = [
        probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
            name=f"birdnerf probe {n['NodeID'][:8]}",
        ).remote(str(probe_dir), n["NodeID"], token, datasets)
        for n in _nodes()
    ]
    try:
        ready, waiting = ray.wait(refs, num_returns=len(refs), timeout=PROBE_TIMEOUT_S)
        if waiting:
            raise BirdnerfError(
                f"{len(waiting)} Ray node(s) did not answer the storage check in {PROBE_TIMEOUT_S:.0f} s",
                run_dir,
            )
        check_probes(run_dir, probe_dir, token, datasets, ray.get(refs))
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)


def default_threads(n_blocks: int) -> int:
    """CPUs per block: the cluster's CPUs shared by the blocks, at most one node's worth."""
    cpus = [int(n["Resources"]["CPU"]) for n in _nodes()]
    return max(1, min(max(cpus, default=1), sum(cpus) // max(1, n_blocks)))


def train_on_ray(
    run_dir: Path,
    manifest: Path,
    todo: list,
    config,
    threads: int | None,
    notify: Callable[[str, int, int, dict], None],
    init_from: dict[str, str],
    options: RayOptions,
) -> dict[str, dict]:
    """Train the planned blocks ``todo`` as Ray tasks; returns each block's figures, or for a block
    that failed ``{"finished": False, "error": ...}``. Interrupting the driver cancels every task
    (each block keeps its last checkpoint, so the next run resumes it, with Ray or without)."""
    ray = _ray()
    started = connect(options.address)
    try:
        partition = read_partition(manifest)
        datasets = [str(partition.dataset)] + [str(s["path"]) for s in partition.sources]
        check_shared_storage(run_dir, datasets)
        threads = threads or default_threads(len(todo))
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 and config.device != "cpu" else 0
        events = ray.remote(num_cpus=0)(_Events).remote()
        task = ray.remote(_block_task)
        refs = {}
        for plan in todo:
            if plan.action == "train":  # a fresh start: a retry must not resume an older checkpoint
                revision = partition.block(plan.block_id).revision
                (ckpt.block_dir(run_dir, plan.block_id, revision) / "checkpoint.pt").unlink(missing_ok=True)
            ref = task.options(
                num_cpus=threads,
                num_gpus=gpus,
                max_retries=options.retries,
                retry_exceptions=False,
                name=f"train {plan.block_id}",
            ).remote(
                str(run_dir),
                str(manifest),
                plan.block_id,
                config.to_dict(),
                threads,
                init_from.get(plan.block_id),
                events,
            )
            refs[ref] = plan.block_id
        return _collect(ray, refs, events, notify, options.retries)
    finally:
        if started:
            ray.shutdown()


def _collect(ray, refs: dict, events, notify, retries: int) -> dict[str, dict]:
    results: dict[str, dict] = {}
    pending = dict(refs)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.25)
            for item in ray.get(events.drain.remote()):
                notify(*item)
            for ref in ready:
                block_id = pending.pop(ref)
                try:
                    results[block_id] = ray.get(ref)
                except ray.exceptions.RayError as err:
                    results[block_id] = {"finished": False, "error": describe_failure(ray, err, retries)}
        for item in ray.get(events.drain.remote()):
            notify(*item)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    return {block_id: results[block_id] for block_id in refs.values()}


def describe_failure(ray, err: Exception, retries: int) -> str:
    """One line for a block's failed task."""
    exc = ray.exceptions
    if isinstance(err, exc.RayTaskError):
        cause = getattr(err, "cause", None)
        return str(cause) if cause is not None else str(err).strip().splitlines()[-1]
    if isinstance(err, exc.OutOfMemoryError):
        return f"its worker ran out of memory {retries + 1} times; train it with fewer --threads or --rays"
    if isinstance(err, (exc.WorkerCrashedError, exc.NodeDiedError)):
        return f"its worker died {retries + 1} times (retries exhausted; raise --retries)"
    return str(err).strip().splitlines()[0]
