"""One exception type for everything a user can get wrong."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path


class BirdnerfError(Exception):
    """A problem with user input or state, reported as one line naming the file.

    The CLI prints ``str(err)`` without a traceback; library callers can catch it.
    """

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self.message = message
        super().__init__(f"{path}: {message}" if path is not None else message)


_PLAIN = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of this path is a file, not a folder",
    errno.EISDIR: "this is a folder, not a file",
    errno.EEXIST: "already exists",
    errno.ENOENT: "no such file or folder",
}


def free_space(path: str | Path) -> int | None:
    """Bytes free on the file system of ``path`` (or of its nearest existing parent)."""
    path = Path(path).absolute()
    for folder in (path, *path.parents):
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            continue
    return None


def file_system_error(err: OSError, path: str | Path, doing: str = "writing") -> BirdnerfError:
    """One line for a file-system error met while ``doing`` ``path``: what went wrong in plain
    words, and for a full disk how much space is left there."""
    what = _PLAIN.get(err.errno or -1, err.strerror or str(err))
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
        free = free_space(path)
        left = "" if free is None else f" ({free / 2**20:.1f} MB free there)"
        what += f"{left}; free some space and run the command again: the file there was kept"
    return BirdnerfError(f"{what} while {doing} it", path)
