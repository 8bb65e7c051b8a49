"""Versioned files of a run: each kind carries its name and version, and one reader checks them.

A JSON record is written as ``{"format": KIND, "format_version": N, ...fields}``; a tensor file
(``torch.save`` of a dict) holds the same two keys. Reading:

- a file of another kind, or of a version newer than this code knows, is one
  :class:`~birdnerf.errors.BirdnerfError` naming the file and both versions;
- a file without the keys was written before files carried them: it is version 0, read as is
  (its fields are a subset of version 1's, and missing fields take their defaults);
- fields this version does not know are refused with their names (:func:`build`), never dropped.

``docs/formats.md`` lists every file of a run with its fields and units.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from birdnerf import atomic
from birdnerf.errors import BirdnerfError

T = TypeVar("T")


@dataclass(frozen=True)
class Format:
    """A kind of file: its name as written into the file, and the version this code writes."""

    kind: str
    version: int


BLOCK_CONFIG = Format("birdnerf.block.config", 1)
"""``blocks/<id>/config.json``: the block's model, training settings and photos."""
BLOCK_DONE = Format("birdnerf.block.done", 1)
"""``blocks/<id>/done.json``: a finished block's figures, written last."""
BLOCK_WEIGHTS = Format("birdnerf.block.weights", 1)
"""``blocks/<id>/model.pt`` and ``checkpoint.pt``: tensors (and plain values) only."""
EVAL = Format("birdnerf.eval", 1)
"""``eval.json``: held-out scores beside their baselines."""

KEYS = ("format", "format_version")


def stamp(data: dict, fmt: Format) -> dict:
    """``data`` with ``fmt``'s kind and version first."""
    return {
        "format": fmt.kind,
        "format_version": fmt.version,
        **{k: v for k, v in data.items() if k not in KEYS},
    }


def check(data: object, fmt: Format, path: Path) -> dict:
    """The fields of a record read from ``path`` (without the format keys), after checking that it
    is a ``fmt`` file of a version this code reads."""
    if not isinstance(data, dict):
        raise BirdnerfError(f"not a {fmt.kind} file (no record at the top level)", path)
    kind, version = data.get("format", fmt.kind), data.get("format_version", 0)
    if kind != fmt.kind:
        raise BirdnerfError(f"a {kind} file where a {fmt.kind} file belongs", path)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise BirdnerfError(f"bad format_version {version!r}", path)
    if version > fmt.version:
        raise BirdnerfError(
            f"{fmt.kind} version {version} was written by a newer birdnerf; this one reads up to "
            f"version {fmt.version}: upgrade birdnerf",
            path,
        )
    return {k: v for k, v in data.items() if k not in KEYS}


def write_record(path: str | Path, fmt: Format, data: dict) -> None:
    """Write ``data`` as a ``fmt`` JSON record, atomically."""
    atomic.write_json(path, stamp(data, fmt))


def read_record(path: str | Path, fmt: Format) -> dict:
    """Read and check a ``fmt`` JSON record (see the module's docstring)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BirdnerfError("file not found", path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BirdnerfError(f"malformed JSON ({err})", path) from None
    return check(data, fmt, path)


def build(make: Callable[[dict], T], data: object, path: Path, what: str) -> T:
    """``make(data)``, with any error from bad, missing or unknown fields as one line naming the
    file and ``what`` was being read (e.g. "training settings")."""
    try:
        if not isinstance(data, dict):
            raise TypeError(f"expected a record, found {type(data).__name__}")
        return make(data)
    except (KeyError, TypeError, ValueError) as err:
        detail = f"missing field {err}" if isinstance(err, KeyError) else str(err)
        raise BirdnerfError(f"unreadable {what}: {detail}", path) from None
