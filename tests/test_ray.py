"""Blocks as Ray tasks on a real local cluster (a head and a worker node, each its own process)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray_cluster import ray_cluster, ray_processes

pytest.importorskip("ray")

TESTS = Path(__file__).parent
ROOT = TESTS.parent
CHECKPOINT_EVERY = 20

# A driver in its own process that trains with the test suite's small field (the CLI trains the
# default field, which is slow for many steps); the same library call `birdnerf train --ray` makes.
DRIVER = """
import dataclasses, json, sys
sys.path.insert(0, {tests!r})
from conftest import mini_train_config
from birdnerf.train import RayOptions, train_run
config = dataclasses.replace(
    mini_train_config(), steps=int(sys.argv[2]), checkpoint_every={every}, log_every={every}
)
ray = RayOptions(sys.argv[3], retries=2) if len(sys.argv) > 3 else None
results = train_run(sys.argv[1], config, threads=1, ray=ray)
print(json.dumps({{b: r.get("step") for b, r in results.items()}}))
"""


def _driver(run: Path, steps: int, address: str | None) -> subprocess.Popen:
    code = DRIVER.format(tests=str(TESTS), every=CHECKPOINT_EVERY)
    args = [sys.executable, "-c", code, str(run), str(steps), *([address] if address else [])]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "birdnerf_cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _partitioned(mini_dataset: Path, out: Path) -> Path:
    from birdnerf.partition import PartitionConfig, partition_dataset

    partition_dataset(mini_dataset, out, PartitionConfig(blocks=(1, 2)))
    return out


def _checkpointed_step(block: Path) -> int:
    """The step of the block's last checkpoint: the driver logs a row at each one (and only then)."""
    from birdnerf.block.checkpoint import read_jsonl

    rows = read_jsonl(block / "metrics.jsonl") if (block / "metrics.jsonl").exists() else []
    return max((r["step"] for r in rows), default=0)


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture(scope="module")
def cluster():
    with ray_cluster(workers=1) as address:
        yield address


def test_ray_training_matches_the_local_runner_byte_for_byte(cluster, mini_dataset, tmp_path):
    """`birdnerf train --ray-address` on a head and a worker node writes the same model files as
    the local runner with the same seed and threads."""
    local = _partitioned(mini_dataset, tmp_path / "local")
    on_ray = _partitioned(mini_dataset, tmp_path / "ray")
    common = ["--steps", "6", "--rays", "128", "--backend", "torch", "--threads", "1"]
    done = _cli("train", str(local), *common)
    assert done.returncode == 0, done.stderr
    done = _cli("train", str(on_ray), *common, "--ray-address", cluster)
    assert done.returncode == 0, done.stderr
    assert "trained 2 block(s)" in done.stderr
    assert "baseline" in done.stderr  # the local runner's table of blocks against the mean colour
    for block in ("r00c00", "r00c01"):
        a, b = local / "blocks" / block, on_ray / "blocks" / block
        assert (a / "model.pt").read_bytes() == (b / "model.pt").read_bytes(), block
        assert (a / "config.json").read_bytes() == (b / "config.json").read_bytes(), block
        psnr = [
            [r["psnr"] for r in map(json.loads, (f / "metrics.jsonl").read_text().splitlines())]
            for f in (a, b)
        ]
        assert psnr[0] == psnr[1]
    assert not list(on_ray.glob(".probe*")), "the storage probe is cleaned up"


def test_a_killed_worker_is_retried_and_resumes_from_its_checkpoint(cluster, mini_dataset, tmp_path):
    """kill -9 of the worker training a block: Ray retries the task, which resumes from the block's
    last checkpoint, so at most one checkpoint interval of steps is lost, and the block finishes."""
    run = _partitioned(mini_dataset, tmp_path / "run")
    steps = 160
    driver = _driver(run, steps, cluster)
    block = run / "blocks" / "r00c00"
    deadline = time.monotonic() + 300
    while _checkpointed_step(block) < 2 * CHECKPOINT_EVERY:
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
        time.sleep(0.05)
    seen = _checkpointed_step(block)
    victims = ray_processes("train r00c00")
    assert len(victims) == 1
    os.kill(victims[0], signal.SIGKILL)
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"r00c00": steps, "r00c01": steps}
    record = json.loads((block / "config.json").read_text())
    resumed = [r["step"] for r in record["resumed"]]
    assert len(resumed) == 1, record["resumed"]  # one retry, resumed once
    # When killed, the worker was at a step in [seen, seen + EVERY) after the checkpoint at `seen`,
    # or exactly at `seen` while writing that checkpoint (a block logs its rows, then checkpoints):
    # either way it lost at most one checkpoint interval of steps.
    assert resumed[0] % CHECKPOINT_EVERY == 0 and resumed[0] >= seen - CHECKPOINT_EVERY > 0
    assert json.loads((block / "done.json").read_text())["step"] == steps
    assert json.loads((run / "blocks" / "r00c01" / "config.json").read_text())["resumed"] == []


def test_an_interrupted_ray_driver_leaves_blocks_resumable_without_ray(cluster, mini_dataset, tmp_path):
    """Ctrl-C of the driver cancels every task (no worker keeps training), and the next run,
    without Ray, resumes each block from its checkpoint."""
    run = _partitioned(mini_dataset, tmp_path / "run")
    steps = 160
    driver = _driver(run, steps, cluster)
    blocks = [run / "blocks" / b for b in ("r00c00", "r00c01")]
    deadline = time.monotonic() + 300
    while min(_checkpointed_step(b) for b in blocks) < CHECKPOINT_EVERY:
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
        time.sleep(0.05)
    driver.send_signal(signal.SIGINT)
    driver.communicate(timeout=120)
    assert driver.returncode != 0
    deadline = time.monotonic() + 30
    while ray_processes("train") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not ray_processes("train"), "a cancelled block kept training"
    stopped = {b.name: _checkpointed_step(b) for b in blocks}
    resumed = _driver(run, steps, None)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    for b in blocks:
        record = json.loads((b / "config.json").read_text())
        assert [r["step"] for r in record["resumed"]] == [stopped[b.name]]
        assert json.loads((b / "done.json").read_text())["step"] == steps


def test_a_node_that_does_not_share_the_run_folder_is_refused(mini_dataset, tmp_path):
    """A worker whose run folder is its own (a private mount at the same path) writes its probe
    where the driver cannot read it: one error line naming the node, nothing trained."""
    run = _partitioned(mini_dataset, tmp_path / "run")
    before = _digest(run)
    with ray_cluster(workers=0, private_worker_dir=tmp_path, private_run="run") as address:
        done = _cli(
            "train", str(run), "--steps", "2", "--backend", "torch", "--ray-address", address, timeout=300
        )
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not shared" in errors[0] and "Ray node" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert _digest(run) == before
    assert not list(run.glob(".probe*"))
    shutil.rmtree(run)


def test_a_block_that_keeps_failing_is_reported_and_the_others_finish(mini_dataset, tmp_path):
    """`--ray` with no address starts a Ray instance on this machine. A block whose task fails (its
    checkpoint is unreadable) is one error line naming it; the other block finishes."""
    run = _partitioned(mini_dataset, tmp_path / "run")
    broken = run / "blocks" / "r00c00"
    broken.mkdir(parents=True)
    (broken / "checkpoint.pt").write_bytes(b"not a checkpoint")
    done = _cli("train", str(run), "--steps", "4", "--rays", "128", "--backend", "torch", "--ray")
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "block r00c00 failed" in errors[0] and "checkpoint" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads((run / "blocks" / "r00c01" / "done.json").read_text())["step"] == 4
    assert not (broken / "done.json").exists()
