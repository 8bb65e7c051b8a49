"""A block's files under ``RUN/blocks/<id>/``, written atomically and read without pickles.

- ``config.json``   model and training configuration (plain JSON)
- ``checkpoint.pt`` model + optimiser + random state at a step (tensors and plain values only)
- ``model.pt``      the final model's tensors, what the renderer loads
- ``metrics.jsonl`` one JSON object per logged step
- ``pixels.npz``, ``pixels.rgb``  the training pixels' index and colours while the block trains
  (see :mod:`birdnerf.train.pixels`; deleted once it is done)
- ``done.json``     written last: the block is finished (final figures; ``quality``: held-out
  PSNR against the mean-colour baseline, see :mod:`birdnerf.train.quality`)
"""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import torch

from birdnerf import atomic, formats
from birdnerf.errors import BirdnerfError, file_system_error
from birdnerf.runlayout import RunLayout

logger = logging.getLogger("birdnerf")


def block_dir(run_dir: str | Path, block_id: str, revision: int = 1) -> Path:
    """Folder of a block's files (see :func:`birdnerf.runlayout.block_folder`)."""
    return RunLayout(run_dir).block(block_id, revision)


def save_tensors(path: Path, data: dict) -> None:
    """``torch.save`` of a dict of tensors and plain values (stamped with its format), via a temp
    file and rename. Written through a file object, so the archive's inner folder has torch's
    fixed name rather than the temp file's: equal tensors give byte-identical files."""
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as stream:
        try:
            torch.save(formats.stamp(data, formats.BLOCK_WEIGHTS), stream)
        except RuntimeError as err:  # torch's writer reports a failed write (a full disk) this way
            if "StreamWriter" not in str(err) and "write" not in str(err):
                raise
            raise file_system_error(OSError(errno.EIO, f"the write failed ({err})"), path) from err


def load_tensors(path: Path) -> dict:
    """Load a file written by :func:`save_tensors`; never unpickles arbitrary objects."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BirdnerfError("file not found", path) from None
    except Exception as err:  # torch raises many types for corrupt or foreign files
        raise BirdnerfError(f"unreadable checkpoint ({type(err).__name__}: {err})", path) from None
    return formats.check(data, formats.BLOCK_WEIGHTS, path)


def read_config(folder: Path) -> dict:
    """The block's ``config.json`` record (model, training settings, photos)."""
    return formats.read_record(folder / "config.json", formats.BLOCK_CONFIG)


def write_config(folder: Path, record: dict) -> None:
    formats.write_record(folder / "config.json", formats.BLOCK_CONFIG, record)


def read_done(folder: Path) -> dict:
    """A finished block's ``done.json`` figures."""
    return formats.read_record(folder / "done.json", formats.BLOCK_DONE)


def write_done(folder: Path, result: dict) -> None:
    formats.write_record(folder / "done.json", formats.BLOCK_DONE, result)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BirdnerfError("file not found", path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BirdnerfError(f"malformed JSON ({err})", path) from None


def append_metrics(path: Path, rows: list[dict]) -> None:
    """Append rows to a JSON-lines file (rewritten atomically, so it is never half a line)."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    atomic.write_text(path, old + "".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file. A torn last line (a writer killed mid-line, by a tool that
    appends in place) is skipped with a warning; a bad line before the last is an error."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise BirdnerfError("file not found", path) from None
    except UnicodeDecodeError as err:
        raise BirdnerfError(f"not UTF-8 text ({err.reason})", path) from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except ValueError as err:
            if number == len(lines):
                logger.warning("%s: skipped its torn last line %d (%s)", path, number, err)
                break
            raise BirdnerfError(f"line {number} is not a JSON object ({err})", path) from None
        rows.append(row)
    return rows


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop logged rows after ``last_step`` (used when resuming from an earlier checkpoint)."""
    if not path.exists():
        return
    keep = [row for row in read_jsonl(path) if row.get("step", 0) <= last_step]
    atomic.write_text(path, "".join(json.dumps(row) + "\n" for row in keep))
