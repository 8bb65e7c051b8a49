"""``import_dataset``: turn a COLMAP model, a folder of drone photos or a Mill19 folder into a dataset.

The dataset folder holds ``transforms.json`` (nerfstudio, with birdnerf's frame record),
``images/``, ``points.npz`` (``xyz`` in world metres when georeferenced, ``rgb`` uint8) when the
source has sparse points, ``import_report.json`` and ``image_cache.json``. It is built in a
temporary folder beside the output and renamed into place only when complete, so an import that
fails leaves the output folder as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from birdnerf import atomic
from birdnerf.errors import BirdnerfError
from birdnerf.geo.georef import apply_gps_fit, fit_gps
from birdnerf.ingest.backend import require_pycolmap
from birdnerf.ingest.cache import ImageCache, photo_scale, write_manifest
from birdnerf.ingest.report import REPORT_FILE, ImportReport
from birdnerf.ingest.sfm import SfmOptions
from birdnerf.ingest.sources import READERS, SOURCE_KINDS, ImportContext, Posed, detect_source, require_photos
from birdnerf.progress import ProgressFn
from birdnerf.scene.frame import estimate_up, to_world_frame
from birdnerf.scene.nerfstudio import read_transforms, write_transforms
from birdnerf.scene.scene import Scene

POINTS_FILE = "points.npz"
MILL19_MAX_TILT_DEG = 15.0
"""A Mill19 "down" axis within this angle of the camera-plane normal is trusted as vertical."""


@dataclass(frozen=True)
class ImportConfig:
    """Settings of ``birdnerf import``."""

    source: str = "auto"
    """"auto", "colmap", "images" (raw photos, structure from motion) or "mill19"."""
    max_width: int | None = None
    """Downscale photos wider than this many pixels (aspect ratio kept)."""
    downscale: float | None = None
    """Divide every photo's width and height by this factor (>= 1); exclusive with max_width."""
    geo: bool = True
    """Georeference with EXIF GPS when enough photos have it."""
    sfm: SfmOptions = field(default_factory=SfmOptions)
    """Structure-from-motion settings (raw photos only)."""
    skip_bad_photos: bool = False
    """Import without the photos that are missing, empty, unreadable or not their camera's size
    (listed as skipped in the report); by default the import is refused, naming them."""


def check_import(src: str | Path, out: str | Path, config: ImportConfig) -> str:
    """Check the settings, the source and the output before any work; returns the source kind.

    Refuses outputs that would destroy the source or unrelated files: ``out`` must be missing,
    empty, or an earlier import (it has an ``import_report.json``).

    Raises:
        BirdnerfError: naming the problem (and the path).
    """
    if config.max_width is not None and config.downscale is not None:
        raise BirdnerfError("give either a maximum width or a downscale factor, not both")
    if config.source not in ("auto", *SOURCE_KINDS):
        raise BirdnerfError(f"unknown source kind {config.source!r} (choose auto, {', '.join(SOURCE_KINDS)})")
    photo_scale(1, config.max_width, config.downscale)  # validates the values
    src, out = Path(src).resolve(), Path(out).absolute()
    if not src.exists():
        raise BirdnerfError("no such folder", src)
    if not src.is_dir():
        raise BirdnerfError("the source must be a folder", src)
    if out.resolve() == src or src.is_relative_to(out.resolve()):
        raise BirdnerfError("the output folder must not be the source or contain it", out)
    if out.exists() and not out.is_dir():
        raise BirdnerfError("the output exists and is not a folder", out)
    if out.is_dir() and any(out.iterdir()) and not (out / REPORT_FILE).is_file():
        raise BirdnerfError("the output folder is not empty and holds no earlier import; choose another", out)
    kind = detect_source(src) if config.source == "auto" else config.source
    if kind == "images":  # fail before copying any photo
        require_photos(src, [out])
        require_pycolmap()
    return kind


def _world_frame(posed: Posed, kind: str, geo: bool, report: ImportReport) -> Scene:
    """Move the posed scene into the world frame: ENU from GPS if possible, else estimated."""
    scene = posed.scene
    names = [s.name for s in posed.staged]
    with_gps = sum(g is not None for g in posed.gps)
    report.gps = {"photos_with_gps": with_gps}
    reason = "georeferencing turned off" if not geo else "no photo has a GPS position"
    if geo and with_gps:
        fit = fit_gps(scene, posed.gps)
        if fit.origin is not None:
            report.gps["origin"] = fit.origin.as_dict()
        if fit.ok:
            world, ground_source = apply_gps_fit(scene, fit)
            worst = int(np.argmax(fit.residuals_m))
            horizontal, vertical = fit.rms_split_m(scene)
            report.gps.update(
                used=len(fit.used),
                rms_m=round(float(fit.rms_m), 4),
                rms_horizontal_m=round(horizontal, 4),
                rms_vertical_m=round(vertical, 4),
                max_m=round(float(fit.residuals_m[worst]), 4),
                worst_photo=names[fit.used[worst]],
                scale_m_per_unit=round(fit.similarity.scale, 6),
            )
            report.frame = {"source": "gps", "up": "enu", "ground": ground_source}
            return world
        reason = fit.reason
    report.gps["reason"] = reason
    frame_source = "estimated"
    if kind == "mill19":
        up, _ = estimate_up(scene)
        tilt = float(np.degrees(np.arccos(np.clip(up[2], -1.0, 1.0))))
        if tilt <= MILL19_MAX_TILT_DEG:
            scene.is_world_frame, frame_source = True, "mill19_axes"
        else:
            report.warnings.append(
                f"the dataset's down axis is {tilt:.1f} degrees off the camera plane's normal"
            )
    world, estimate = to_world_frame(scene)
    report.frame = {"source": frame_source, "up": estimate.up_source, "ground": estimate.ground_source}
    report.frame["reason"] = reason
    return world


def _write(world: Scene, posed: Posed, root: Path, report: ImportReport) -> None:
    points_file = None
    if world.points is not None and len(world.points):
        colors = world.point_colors if world.point_colors is not None else np.full_like(world.points, 128)
        with open(root / POINTS_FILE, "wb") as f:
            np.savez(f, xyz=world.points.astype(np.float64), rgb=np.asarray(colors, dtype=np.uint8))
        points_file = POINTS_FILE
    else:
        report.warnings.append("the source has no sparse points; the ground height is a guess")
    write_transforms(world, root / "transforms.json", points_file=points_file)
    write_manifest(root, posed.staged)
    report.write(root)
    read_transforms(root / "transforms.json")  # the dataset must load as written


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``, replacing an earlier import there only once ``tmp`` is complete."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.replace(out, old / "dataset")
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old / "dataset", out)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def import_dataset(
    src: str | Path,
    out: str | Path,
    config: ImportConfig = ImportConfig(),
    progress: ProgressFn | None = None,
) -> ImportReport:
    """Import the photos and poses in ``src`` as a birdnerf dataset in ``out``.

    Args:
        src: a COLMAP dataset (``images/`` + ``sparse/0``) or model folder, a folder of photos
            (JPEG/PNG/TIFF, with EXIF GPS for georeferencing), or a Mega-NeRF / Mill19 folder.
        out: dataset folder to create; it may hold an earlier import (replaced, and its unchanged
            image copies reused) but no other files.
        config: see :class:`ImportConfig`.
        progress: optional ``(done, total, info)`` callback; ``info["step"]`` names the stage.

    Returns:
        The :class:`ImportReport`, also written to ``out/import_report.json``.

    Raises:
        BirdnerfError: for an unusable source or output (missing, empty, unreadable model,
            nothing registered ...); ``out`` is then left as it was.
    """
    src, out = Path(src).resolve(), Path(out).absolute()
    kind = check_import(src, out, config)
    previous = out if (out / REPORT_FILE).is_file() else None
    tmp = atomic.partial_dir(out)
    try:
        report = ImportReport(dataset=str(out), source=str(src), source_kind=kind)

        def step(name: str, done: int, total: int) -> None:
            if progress:
                progress(done, total, {"step": name})

        ctx = ImportContext(
            src=src,
            root=tmp,
            exclude=[out, tmp],
            max_width=config.max_width,
            downscale=config.downscale,
            sfm=config.sfm,
            cache=ImageCache(previous),
            report=report,
            step=step,
            skip_bad_photos=config.skip_bad_photos,
        )
        posed = READERS[kind](ctx)
        report.photos_registered = len(posed.scene)
        reused = sum(s.reused for s in posed.staged)
        report.images = {
            "written": len(posed.staged) - reused,
            "reused": reused,
            "max_width": config.max_width,
            "downscale": config.downscale,
        }
        world = _world_frame(posed, kind, config.geo, report)
        _write(world, posed, tmp, report)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report
