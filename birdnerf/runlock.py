"""One writer per run: an exclusive lock on ``RUN/.lock`` held while a command writes the run.

The lock is an OS file lock (``flock``), so it is released when its holder exits, however it
exits; the file also records the holder (command, PID, host, start time) for the message a
second writer gets. A record left by a process that died without releasing names a stale
holder: the next writer takes the lock over and says so. Re-entrant within one process, so
a stage that calls another (the demo, an update that trains) takes it once.

While the lock is held nobody else writes the run, so temp files of writes that were killed
half-way (``.NAME.*.tmp*``, ``.NAME.*.partial``) are removed when it is taken.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from birdnerf.atomic import pid_alive
from birdnerf.errors import BirdnerfError
from birdnerf.runlayout import LOCK, RunLayout

logger = logging.getLogger("birdnerf")
_held: dict[Path, int] = {}  # resolved run folder -> nesting depth in this process
F = TypeVar("F", bound=Callable)

try:
    import fcntl
except ImportError:  # Windows: no flock; the record alone then guards the run
    fcntl = None


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        holder = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


def describe(holder: dict) -> str:
    """``birdnerf train (pid 123 on host, since 2026-01-01 10:00:00)``."""
    if not holder:
        return "another process"
    return (
        f"`birdnerf {holder.get('command', '?')}` (pid {holder.get('pid', '?')} on "
        f"{holder.get('host', '?')}, since {holder.get('since', '?')})"
    )


def remove_leftovers(run_dir: Path) -> int:
    """Delete temp files and folders of killed writes under ``run_dir``; returns how many."""
    removed = 0
    for path in sorted(run_dir.rglob(".*"), reverse=True):  # children before their folders
        name = path.name
        if path.is_file() and ".tmp" in name and name != LOCK:
            path.unlink(missing_ok=True)
            removed += 1
        elif path.is_dir() and name.endswith(".partial"):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


@contextlib.contextmanager
def run_lock(run_dir: str | Path, command: str) -> Iterator[None]:
    """Hold the exclusive write lock of ``run_dir`` (created if missing) for ``birdnerf command``.

    Raises :class:`BirdnerfError` at once, naming the holder, when another process holds it.
    """
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BirdnerfError(f"cannot create the run folder ({err.strerror})", run_dir) from None
    key = run_dir.resolve()
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    path = RunLayout(run_dir).lock
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise BirdnerfError(f"cannot open the run's lock file ({err.strerror})", path) from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                raise BirdnerfError(
                    f"run is in use by {describe(holder)}; wait for it to finish, then run "
                    f"`birdnerf {command}` again",
                    run_dir,
                ) from None
        old = _read_holder(fd)
        if old:
            here = old.get("host") == socket.gethostname()
            if fcntl is None and here and pid_alive(int(old.get("pid", -1))):
                raise BirdnerfError(f"run is in use by {describe(old)}", run_dir)
            logger.warning(
                "%s: took over the lock left by %s, which is no longer running", run_dir, describe(old)
            )
        record = {
            "command": command,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
        os.fsync(fd)
        removed = remove_leftovers(run_dir)
        if removed:
            logger.warning("%s: removed %d temp file(s) left by an interrupted write", run_dir, removed)
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
            os.ftruncate(fd, 0)  # an empty record: released cleanly
    finally:
        os.close(fd)  # also releases the flock


def locks_run(command: str, when: Callable[..., bool] | None = None) -> Callable[[F], F]:
    """Decorator: hold ``run_lock`` on the function's first argument (a run folder) during the
    call; with ``when``, only for calls where ``when(run_dir, *args, **kwargs)`` is true."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(run_dir, *args, **kwargs):
            if when is not None and not when(run_dir, *args, **kwargs):
                return fn(run_dir, *args, **kwargs)
            with run_lock(run_dir, command):
                return fn(run_dir, *args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap


def writes_inside(run_dir: str | Path, *_, out_dir: str | Path | None = None, **__) -> bool:
    """Whether a call writes into ``run_dir``: its ``out_dir`` is unset (the run's default) or in it."""
    return out_dir is None or Path(out_dir).resolve().is_relative_to(Path(run_dir).resolve())
