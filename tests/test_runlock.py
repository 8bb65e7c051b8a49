"""One writer per run (the run lock), workers that die with their driver, torn JSON-lines logs."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from birdnerf.block.checkpoint import read_jsonl, truncate_metrics
from birdnerf.errors import BirdnerfError
from birdnerf.partition import PartitionConfig, partition_dataset
from birdnerf.runlayout import LOCK as LOCK_FILE
from birdnerf.runlock import run_lock
from birdnerf_cli.main import app

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["--backend", "torch", "--rays", "256", "--threads", "1"]


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "birdnerf_cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def _wait_for(condition, timeout: float = 90.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _holder(run: Path) -> dict:
    text = (run / LOCK_FILE).read_text() if (run / LOCK_FILE).exists() else ""
    return json.loads(text) if text.strip() else {}


def _parents() -> dict[int, int]:
    """pid -> parent pid of every live (not zombie) process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] != "Z":
                table[int(entry.name)] = int(fields[1])
    return table


def _descendants(pid: int) -> set[int]:
    table, found, frontier = _parents(), set(), {pid}
    while frontier:
        frontier = {child for child, parent in table.items() if parent in frontier} - found
        found |= frontier
    return found


@pytest.fixture
def four_blocks(mini_dataset, tmp_path) -> Path:
    run = tmp_path / "run"
    partition_dataset(mini_dataset, run, PartitionConfig(blocks=(2, 2)))
    return run


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom birdnerf.runlock import run_lock\n"
            "with run_lock(sys.argv[1], 'train'):\n    print('held', flush=True)\n    time.sleep(60)",
            str(run),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BirdnerfError, match=rf"in use by `birdnerf train` \(pid {holder.pid} on "):
            with run_lock(run, "eval"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(run, "eval"):  # released by the holder's death, no message needed
        assert _holder(run)["command"] == "eval" and _holder(run)["pid"] == os.getpid()
        with run_lock(run, "train"):  # re-entrant within a process
            pass
        assert _holder(run)["command"] == "eval"
    assert _holder(run) == {}


def test_a_stale_record_is_taken_over_and_temp_files_of_killed_writes_are_removed(tmp_path, caplog):
    run = tmp_path / "run"
    (run / "blocks" / "r0c0").mkdir(parents=True)
    dead = {"command": "train", "pid": 2**22 + 17, "host": "elsewhere", "since": "2026-01-01 00:00:00"}
    (run / LOCK_FILE).write_text(json.dumps(dead))
    torn = run / "blocks" / "r0c0" / ".checkpoint.pt.k2j3.tmp.pt"
    torn.write_bytes(b"half")
    partial = run / ".renders.x1.partial"
    (partial / "a").mkdir(parents=True)
    kept = run / "blocks" / "r0c0" / "checkpoint.pt"
    kept.write_bytes(b"whole")
    with caplog.at_level(logging.WARNING, logger="birdnerf"), run_lock(run, "train"):
        assert not torn.exists() and not partial.exists() and kept.exists()
    assert "took over the lock left by `birdnerf train` (pid 4194321 on elsewhere" in caplog.text
    assert "removed 2 temp file(s)" in caplog.text


def test_two_train_commands_on_one_run_leave_one_refused_and_the_run_intact(mini_dataset, tmp_path):
    run = tmp_path / "run"
    partition_dataset(mini_dataset, run, PartitionConfig(blocks=(1, 2)))
    first = _cli("train", str(run), "--steps", "30", "--checkpoint-every", "10", *TRAIN)
    try:
        _wait_for(lambda: _holder(run).get("pid") == first.pid, what="the first train to take the lock")
        second = CliRunner().invoke(app, ["train", str(run), "--steps", "30", *TRAIN])
        assert first.poll() is None, "the first train ended before the second was tried"
    finally:
        output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output
    assert second.exit_code == 1
    lines = [line for line in second.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), second.output
    assert f"in use by `birdnerf train` (pid {first.pid}" in lines[0] and "Traceback" not in second.output
    for block in (run / "blocks").iterdir():
        steps = [row["step"] for row in read_jsonl(block / "metrics.jsonl")]
        assert steps == sorted(set(steps)) and steps[-1] == 30
        assert (block / "done.json").exists()


@pytest.mark.slow
def test_a_killed_jobs_driver_leaves_no_worker_running(four_blocks):
    run = four_blocks
    driver = _cli("train", str(run), "--steps", "100000", "--jobs", "2", *TRAIN)
    try:
        _wait_for(
            lambda: len(list((run / "blocks").glob("*/config.json"))) >= 2,
            what="both workers to start a block",
        )
        workers = _descendants(driver.pid)
        assert len(workers) >= 2
    finally:
        driver.kill()
        driver.communicate()
    _wait_for(lambda: not (workers & set(_parents())), timeout=10.0, what="the workers to exit")
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    time.sleep(1.0)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


@pytest.mark.slow
def test_ctrl_c_starts_no_further_block(four_blocks):
    run = four_blocks
    driver = _cli("train", str(run), "--steps", "100000", "--jobs", "2", *TRAIN, start_new_session=True)
    try:
        _wait_for(
            lambda: len(list((run / "blocks").glob("*/config.json"))) >= 2,
            what="both workers to start a block",
        )
        os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C sends: every process of the group
        output, _ = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode != 0
    started = [b.name for b in (run / "blocks").iterdir() if any(b.iterdir())]
    assert len(started) == 2, (started, output)
    assert _holder(run) == {}


def test_a_torn_last_line_is_skipped_and_a_torn_middle_line_is_an_error(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 25, "loss": 0.1}\n{"step": 50, "loss": 0.05}\n{"step": 75, "lo')
    with caplog.at_level(logging.WARNING, logger="birdnerf"):
        assert [row["step"] for row in read_jsonl(path)] == [25, 50]
    assert "torn last line 3" in caplog.text
    truncate_metrics(path, 25)  # resuming rewrites the log without the torn line
    assert path.read_text() == '{"step": 25, "loss": 0.1}\n'
    path.write_text('{"step": 25}\n{"st\n{"step": 75}\n')
    with pytest.raises(BirdnerfError, match="line 2 is not a JSON object"):
        read_jsonl(path)
