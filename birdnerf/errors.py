"""One exception type for everything a user can get wrong."""

from __future__ import annotations

from pathlib import Path


class BirdnerfError(Exception):
    """A problem with user input or state, reported as one line naming the file.

    The CLI prints ``str(err)`` without a traceback; library callers can catch it.
    """

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self.message = message
        super().__init__(f"{path}: {message}" if path is not None else message)
