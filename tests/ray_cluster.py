"""A real Ray cluster on the loopback interface for tests: a head and worker nodes, each started by
its own ``ray start --block`` process in its own process group, stopped (killed if need be)
when the ``with`` block ends, however it ends."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

NODE_ARGS = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--object-store-memory", str(80 << 20)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> list[str]:
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray is None:
        pytest.skip("Ray is not installed (pip install 'birdnerf[distributed]')")
    return [ray]


@contextlib.contextmanager
def ray_cluster(
    workers: int = 1, private_worker_dir: Path | None = None, private_run: str = "run"
) -> Iterator[str]:
    """Start a head and ``workers`` worker nodes (one CPU each); yields the head's address.

    With ``private_worker_dir``, one more worker node runs in its own mount namespace with an
    empty tmpfs over that folder, holding only an empty ``private_run`` folder: a worker that sees
    a run folder at the same path, but what it writes there nobody else sees. Skips where that
    cannot be done (it needs root)."""
    pytest.importorskip("ray")
    # Token authentication, as a secured cluster has it: every node and every driver (this process
    # and the commands it runs, which inherit the environment) shares one token.
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}
    saved = {k: os.environ.get(k) for k in auth}
    os.environ.update(auth)
    env = dict(os.environ)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    cli = _ray_cli()
    procs: list[subprocess.Popen] = []
    logs = Path(tempfile.mkdtemp(prefix="birdnerf-ray-"))

    def start(args: list[str], prefix: list[str] = ()) -> None:
        command = [*prefix, *cli, "start", *args, *NODE_ARGS, "--block"]
        with open(logs / f"node{len(procs)}.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    command, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
                )
            )
        _wait_until_started(logs / f"node{len(procs) - 1}.log", procs[-1])

    try:
        start(["--head", "--port", str(port), "--include-dashboard", "false"])
        for _ in range(workers):
            start(["--address", address])
        if private_worker_dir is not None:
            if os.geteuid() != 0 or shutil.which("unshare") is None:
                pytest.skip("a private mount for a worker needs root and unshare")
            inside = private_worker_dir / private_run
            private = f'mount -t tmpfs none {private_worker_dir} && mkdir -p {inside} && exec "$@"'
            start(
                ["--address", address],
                ["unshare", "-m", "--propagation", "private", "sh", "-c", private, "sh"],
            )
        yield address
    finally:
        _stop(procs)
        shutil.rmtree(logs, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _wait_until_started(log: Path, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    """Wait until ``ray start`` says its node runs (it has joined the cluster)."""
    deadline = time.monotonic() + timeout_s
    while b"Ray runtime started" not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_bytes().decode(errors="replace")[-2000:]
            raise RuntimeError(f"a Ray node did not start ({proc.args}):\n{tail}")
        time.sleep(0.2)


def _stop(procs: list[subprocess.Popen], grace_s: float = 5.0) -> None:
    """SIGTERM every node's process group, then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.2)
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(5)


def ray_processes(name: str) -> list[int]:
    """PIDs of processes whose title starts with ``ray::<name>`` (a Ray worker running that task)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
                if title.startswith(f"ray::{name}"):
                    pids.append(int(entry.name))
    return pids
