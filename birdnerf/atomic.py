"""Atomic writes: a temp file in the same directory, then ``os.replace``.

Nothing half-written is ever left under the final name, even if the process is killed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from birdnerf.errors import file_system_error


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` if the block succeeds.

    A file-system error (full disk, read-only folder, a file where a folder belongs) while making,
    writing or renaming the temp file is one :class:`BirdnerfError` naming ``path``; the file
    already there is left as it was and the temp file is removed.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # what mkdir says when a file stands where a folder belongs
            raise OSError(errno.ENOTDIR, "not a directory", str(path.parent)) from None
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file normal permissions
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as err:
        raise file_system_error(err, path) from err
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


def partial_dir(out: str | Path) -> Path:
    """A new private folder beside ``out`` to build it in, named after this process
    (``.<out>.<pid>.<random>.partial``); folders that dead processes left for ``out`` are removed first."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for old in out.parent.glob(f".{out.name}.*.partial"):
        pid = old.name[len(out.name) + 2 :].split(".")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".partial", dir=out.parent))
    tmp.chmod(0o777 & ~_UMASK)  # mkdtemp makes it private; the result is an ordinary folder
    return tmp


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: object) -> None:
    """Write JSON deterministically (sorted keys are not forced; insertion order is kept)."""
    write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
