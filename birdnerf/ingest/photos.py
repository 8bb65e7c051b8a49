"""Finding the photos of an import and reading their headers, one skip reason per bad file."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from birdnerf.errors import BirdnerfError
from birdnerf.geo.exif import PhotoMeta, read_photo_meta
from birdnerf.scene.images import photo_problem

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


def workers() -> int:
    """Threads for per-photo work (decoding and resizing release the GIL)."""
    return max(1, min(8, os.cpu_count() or 1))


def find_photos(folder: str | Path, exclude: Sequence[Path] = ()) -> list[str]:
    """Photos under ``folder`` (recursively) as sorted relative POSIX names.

    Hidden files and folders (names starting with ".") and anything under ``exclude`` (e.g. the
    import's own output folder) are left out; the suffix test ignores case.
    """
    root = Path(folder).resolve()
    excluded = [Path(p).resolve() for p in exclude]
    names = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or path.suffix.lower() not in PHOTO_SUFFIXES:
            continue
        if any(path.is_relative_to(e) for e in excluded) or not path.is_file():
            continue
        names.append(rel.as_posix())
    return sorted(names)


def read_metas(
    root: Path, names: Sequence[str], progress: Callable[[int], None] | None = None
) -> tuple[dict[str, PhotoMeta], dict[str, str]]:
    """EXIF/XMP metadata of each photo ``root / name``, and the reason each bad one is unusable:
    missing, empty, not a readable image (the header check that partitioning makes) or not
    decodable (a JPEG is decoded at 1/8 scale, which reads all of it: truncation shows)."""

    def read(name: str) -> PhotoMeta | str:
        problem = photo_problem(root / name, decode=True)
        if problem is not None:
            return problem
        try:
            return read_photo_meta(root / name)
        except BirdnerfError as err:
            return err.message

    metas: dict[str, PhotoMeta] = {}
    skipped: dict[str, str] = {}
    with ThreadPoolExecutor(workers()) as pool:
        for done, (name, result) in enumerate(zip(names, pool.map(read, names), strict=True), start=1):
            if isinstance(result, str):
                skipped[name] = result
            else:
                metas[name] = result
            if progress:
                progress(done)
    return metas, skipped
