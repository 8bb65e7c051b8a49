"""The dataset's image copies: downscaled where asked, reused from the previous import when unchanged.

Each imported dataset keeps ``image_cache.json``: for every file in ``images/``, the source photo
(absolute path, size in bytes, modification time in ns), the scale it was made at, and the copy's
own size and modification time. A re-import into the same folder hard-links (or copies) a
previous copy when all of these still match, so unchanged photos are neither decoded nor
rewritten; a changed source, a different scale or a copy edited by hand rebuilds it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from birdnerf import atomic
from birdnerf.errors import BirdnerfError
from birdnerf.ingest.photos import workers
from birdnerf.scene.images import photo_problem

MANIFEST_FILE = "image_cache.json"
MANIFEST_VERSION = 1
IMAGES_FOLDER = "images"
JPEG_QUALITY = 95
KEEPS_FORMAT = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}


def photo_scale(width: int, max_width: int | None = None, downscale: float | None = None) -> float:
    """Resize factor of a photo ``width`` pixels wide: ``1 / downscale``, or to fit ``max_width``.

    Never enlarges; 1.0 when neither option is given.
    """
    if downscale is not None:
        if downscale < 1.0:
            raise BirdnerfError(
                f"the downscale factor must be at least 1 (it divides the size), got {downscale}"
            )
        return 1.0 / downscale
    if max_width is not None:
        if max_width < 1:
            raise BirdnerfError(f"the maximum width must be a positive number of pixels, got {max_width}")
        return min(1.0, max_width / width)
    return 1.0


@dataclass(frozen=True)
class StagedImage:
    """One photo of the new dataset: where it came from and the copy made of it."""

    name: str
    """Name in the source (relative POSIX path); the copy keeps it, except a resized format
    other than JPEG/PNG, which becomes PNG."""
    source: Path
    path: Path
    width: int
    height: int
    scale: float
    reused: bool


def _source_key(source: Path, scale: float) -> dict:
    stat = source.stat()
    return {
        "source": str(source.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "scale": scale,
    }


def _open_error(source: Path, err: Exception) -> BirdnerfError:
    if isinstance(err, FileNotFoundError):
        return BirdnerfError("photo not found", source)
    return BirdnerfError(f"corrupt or unreadable image ({err})", source)


def _verify(source: Path) -> None:
    """Decode ``source`` fully enough to find truncation; raise a BirdnerfError if it is corrupt."""
    problem = photo_problem(source, decode=True)
    if problem is not None:
        raise BirdnerfError("photo not found" if problem == "not found" else problem, source)


def _resized(source: Path, size: tuple[int, int]) -> Image.Image:
    """``source`` decoded and resized to ``size`` (Lanczos), keeping its EXIF and colour profile."""
    try:
        with Image.open(source) as im:
            info = {k: im.info[k] for k in ("exif", "icc_profile") if im.info.get(k)}
            im.draft("RGB", (2 * size[0], 2 * size[1]))  # JPEG: decode at the smallest useful scale
            resized = im.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise _open_error(source, err) from None
    resized.info.update(info)
    return resized


class ImageCache:
    """Copies photos into a new dataset, reusing the copies of a previous import of the same folder."""

    def __init__(self, previous_root: Path | None = None):
        self.previous_root = previous_root
        self.entries: dict[str, dict] = {}
        manifest = previous_root / MANIFEST_FILE if previous_root else None
        if manifest is not None and manifest.is_file():
            try:
                data = json.loads(manifest.read_text(encoding="utf-8"))
                if data.get("version") == MANIFEST_VERSION and isinstance(data.get("images"), dict):
                    self.entries = data["images"]
            except (OSError, ValueError, AttributeError):
                self.entries = {}  # an unreadable manifest only costs a rebuild

    def _reusable(self, out_name: str, key: dict) -> Path | None:
        entry = self.entries.get(out_name)
        if self.previous_root is None or not isinstance(entry, dict):
            return None
        if any(entry.get(k) != v for k, v in key.items()):
            return None
        previous = self.previous_root / IMAGES_FOLDER / out_name
        try:
            stat = previous.stat()
        except OSError:
            return None
        if (stat.st_size, stat.st_mtime_ns) != (entry.get("output_size"), entry.get("output_mtime_ns")):
            return None
        return previous

    def stage(
        self, source: Path, name: str, root: Path, width: int, height: int, scale: float
    ) -> StagedImage:
        """Put the copy of ``source`` (``width`` x ``height`` px) at ``scale`` into ``root/images``.

        Raises:
            BirdnerfError: naming ``source`` when it is missing, corrupt or truncated.
        """
        size = (int(round(width * scale)), int(round(height * scale)))
        resize = size != (width, height)
        suffix = Path(name).suffix.lower()
        out_name = name if not resize or suffix in KEEPS_FORMAT else str(Path(name).with_suffix(".png"))
        out = root / IMAGES_FOLDER / out_name
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            key = _source_key(source, scale)
        except OSError as err:
            raise _open_error(source, err) from None
        previous = self._reusable(out_name, key)
        if previous is not None:
            try:
                os.link(previous, out)
            except OSError:
                shutil.copy2(previous, out)  # keeps the modification time the manifest records
            return StagedImage(name, source, out, size[0], size[1], scale, reused=True)
        if not resize:
            _verify(source)
            shutil.copyfile(source, out)
        else:
            image = _resized(source, size)
            fmt = KEEPS_FORMAT.get(suffix, "PNG")
            options = {"quality": JPEG_QUALITY} if fmt == "JPEG" else {}
            extra = {k: image.info[k] for k in ("exif", "icc_profile") if image.info.get(k)}
            image.save(out, format=fmt, **options, **extra)
        return StagedImage(name, source, out, size[0], size[1], scale, reused=False)

    def stage_all(
        self,
        jobs: Sequence[tuple[Path, str, int, int, float]],
        root: Path,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[list[StagedImage | None], dict[str, str]]:
        """Stage ``(source, name, width, height, scale)`` jobs in parallel.

        Returns the staged images in job order (None for failures) and a reason per failed name.
        """

        def run(job: tuple[Path, str, int, int, float]) -> StagedImage | str:
            try:
                return self.stage(job[0], job[1], root, job[2], job[3], job[4])
            except BirdnerfError as err:
                return err.message

        staged: list[StagedImage | None] = []
        failed: dict[str, str] = {}
        with ThreadPoolExecutor(workers()) as pool:
            for done, (job, result) in enumerate(zip(jobs, pool.map(run, jobs), strict=True), start=1):
                if isinstance(result, str):
                    failed[job[1]] = result
                    staged.append(None)
                else:
                    staged.append(result)
                if progress:
                    progress(done)
        return staged, failed


def write_manifest(root: Path, staged: Sequence[StagedImage]) -> Path:
    """Write ``root/image_cache.json`` describing the copies in ``root/images``."""
    images = {}
    for image in staged:
        out_name = image.path.relative_to(root / IMAGES_FOLDER).as_posix()
        stat = image.path.stat()
        entry = _source_key(image.source, image.scale)
        entry.update(output_size=stat.st_size, output_mtime_ns=stat.st_mtime_ns)
        entry.update(width=image.width, height=image.height)
        images[out_name] = entry
    path = root / MANIFEST_FILE
    atomic.write_json(path, {"version": MANIFEST_VERSION, "images": images})
    return path
