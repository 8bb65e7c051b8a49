"""The three kinds of import source, each turned into posed photos copied into the new dataset.

Every reader returns a :class:`Posed`: a scene in the source's own frame whose photos are the
copies in ``<new dataset>/images`` (intrinsics scaled to match), the GPS position of each photo
when known, and the skip reasons recorded in the report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from birdnerf.errors import BirdnerfError
from birdnerf.geo.enu import GeoPoint
from birdnerf.geo.exif import PhotoMeta
from birdnerf.ingest.cache import ImageCache, StagedImage, photo_scale
from birdnerf.ingest.photos import PHOTO_SUFFIXES, find_photos, read_metas
from birdnerf.ingest.report import ImportReport
from birdnerf.ingest.sfm import SfmOptions, run_sfm
from birdnerf.scene.camera import Camera
from birdnerf.scene.colmap import detect_model_format, read_colmap_model
from birdnerf.scene.colmap_model import ColmapModel, c2w_from_colmap, camera_from_colmap
from birdnerf.scene.images import unusable_photos
from birdnerf.scene.load import IMAGES_FOLDER, MODEL_SUBFOLDERS
from birdnerf.scene.mill19 import is_mill19, read_mill19
from birdnerf.scene.scene import Scene, holdout_split

SOURCE_KINDS = ("colmap", "images", "mill19")
Step = Callable[[str, int, int], None]


@dataclass
class ImportContext:
    """What every reader needs: source, new dataset root, settings, cache, report, progress."""

    src: Path
    root: Path
    exclude: list[Path]
    max_width: int | None
    downscale: float | None
    sfm: SfmOptions
    cache: ImageCache
    report: ImportReport
    step: Step
    skip_bad_photos: bool = False
    """Leave bad photos out (listed as skipped in the report) instead of refusing the import."""


@dataclass
class Posed:
    """Posed photos in the source's frame; ``gps[i]`` is photo i's WGS84 position or None."""

    scene: Scene
    gps: list[GeoPoint | None]
    staged: list[StagedImage]


def colmap_layout(src: Path) -> tuple[Path, Path] | None:
    """``(model_dir, images_dir)`` of a COLMAP dataset folder or model folder, or None."""
    if (src / IMAGES_FOLDER).is_dir():
        for sub in MODEL_SUBFOLDERS:
            if (src / sub).is_dir() and detect_model_format(src / sub):
                return src / sub, src / IMAGES_FOLDER
    for model_dir in (src, src / "0"):
        if detect_model_format(model_dir):
            for images_dir in (model_dir / IMAGES_FOLDER, model_dir.parent / IMAGES_FOLDER):
                if images_dir.is_dir():
                    return model_dir, images_dir
            images_dir = model_dir.parent.parent / IMAGES_FOLDER
            return model_dir, images_dir
    return None


def detect_source(src: Path) -> str:
    """The kind of source the folder ``src`` is: "mill19", "colmap" or "images".

    Raises:
        BirdnerfError: when it is none of them.
    """
    if is_mill19(src):
        return "mill19"
    if colmap_layout(src) is not None:
        return "colmap"
    if find_photos(src):
        return "images"
    suffixes = ", ".join(PHOTO_SUFFIXES)
    raise BirdnerfError(
        f"nothing to import: no photos ({suffixes}), no COLMAP model (sparse/0 + images/) and no "
        "Mega-NeRF coordinates.pt here",
        src,
    )


def require_photos(src: Path, exclude: Sequence[Path] = ()) -> list[str]:
    """The photos under ``src`` (see :func:`find_photos`); a BirdnerfError when there are none."""
    names = find_photos(src, exclude)
    if not names:
        raise BirdnerfError(f"no photos found (looked for {', '.join(PHOTO_SUFFIXES)})", src)
    return names


def bad_photos(ctx: ImportContext, bad: dict[str, str], total: int, source: Path) -> None:
    """Refuse the import, listing the ``bad`` photos (name -> reason) of ``total``; or, when the
    user asked to skip them, record them as skipped."""
    if bad and not ctx.skip_bad_photos:
        hint = "fix or remove them, or import without them (--skip-bad-photos)"
        raise unusable_photos(sorted(bad.items()), total, source, hint)
    for name, reason in bad.items():
        ctx.report.skip(name, reason)


def _stage(
    ctx: ImportContext, jobs: Sequence[tuple[str, Path, int, int]], source: Path
) -> dict[str, StagedImage]:
    """Copy (and downscale) ``(name, source, width, height)`` photos; one that cannot be decoded
    is a bad photo (see :func:`bad_photos`)."""
    work = [(path, name, w, h, photo_scale(w, ctx.max_width, ctx.downscale)) for name, path, w, h in jobs]
    staged, failed = ctx.cache.stage_all(work, ctx.root, lambda done: ctx.step("images", done, len(work)))
    bad_photos(ctx, failed, len(jobs), source)
    return {s.name: s for s in staged if s is not None}


def _model_scene(
    ctx: ImportContext,
    model: ColmapModel,
    staged: dict[str, StagedImage],
    factor: dict[str, float],
    source: Path,
) -> tuple[Scene, list[str]]:
    """Scene of the model's images that were staged, each camera scaled by ``factor[name]`` (or 1)."""
    images = sorted((im for im in model.images if im.name in staged), key=lambda im: im.name)
    cameras: list[Camera] = []
    for image in images:
        if image.camera_id not in model.cameras:
            raise BirdnerfError(
                f"image {image.name!r} uses camera {image.camera_id}, which is missing", source
            )
        camera = camera_from_colmap(model.cameras[image.camera_id])
        scale = factor.get(image.name, 1.0)
        cameras.append(camera if scale == 1.0 else camera.scaled(scale))
    names = [im.name for im in images]
    has_points = len(model.points) > 0
    scene = Scene(
        root=ctx.root,
        image_paths=[staged[n].path for n in names],
        cameras=cameras,
        c2w=np.stack([c2w_from_colmap(im, source) for im in images]),
        split=holdout_split(names),
        points=model.points if has_points else None,
        point_colors=model.point_colors if has_points else None,
        source="colmap",
    )
    return scene, names


def from_colmap(ctx: ImportContext) -> Posed:
    """Photos and poses of a COLMAP model; distortion stays in the cameras (images are not undistorted).

    Model images missing from the image folder are skipped (an error if none is there), and so
    are photos in the folder that the model did not register.
    """
    layout = colmap_layout(ctx.src)
    if layout is None:
        raise BirdnerfError(
            "no COLMAP model here (looked for sparse/0, sparse or the folder itself)", ctx.src
        )
    model_dir, images_dir = layout
    model = read_colmap_model(model_dir)
    images_file = model.sources["images"]
    if not model.images:
        raise BirdnerfError("the model has no registered images", images_file)
    if not images_dir.is_dir():
        raise BirdnerfError(f"image folder {images_dir} not found for this model", images_file)
    names = [im.name for im in model.images]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise BirdnerfError(f"image {twice!r} appears twice", images_file)
    present = [n for n in names if (images_dir / n).is_file()]
    missing = sorted(set(names) - set(present))
    if not present:
        raise BirdnerfError(
            f"none of the model's {len(names)} image names is in {images_dir} (e.g. {missing[0]!r})",
            images_file,
        )
    folder = find_photos(images_dir, ctx.exclude)
    ctx.report.photos_total = len(set(folder) | set(names))
    for name in missing:
        ctx.report.skip(name, f"in the COLMAP model but not in {images_dir}")
    for name in sorted(set(folder) - set(names)):
        ctx.report.skip(name, "not registered in the COLMAP model")
    metas, bad = read_metas(images_dir, present, lambda d: ctx.step("metadata", d, len(present)))
    by_name = {im.name: im for im in model.images}
    jobs, ratio = [], {}
    for name in sorted(metas):
        meta, image = metas[name], by_name[name]
        camera = model.cameras.get(image.camera_id)
        if camera is not None and (meta.width, meta.height) != (camera.width, camera.height):
            ratio[name] = meta.width / camera.width
            if abs(camera.height * ratio[name] - meta.height) > 1.0:
                bad[name] = f"is {meta.width}x{meta.height}, its camera says {camera.width}x{camera.height}"
                continue
        jobs.append((name, images_dir / name, meta.width, meta.height))
    bad_photos(ctx, bad, len(present), images_dir)  # every header read, before any photo is copied
    staged = _stage(ctx, jobs, images_dir)
    if not staged:
        raise BirdnerfError("no photo of the model could be read", images_dir)
    factor = {n: ratio.get(n, 1.0) * s.scale for n, s in staged.items()}
    scene, order = _model_scene(ctx, model, staged, factor, images_file)
    return Posed(scene, [metas[n].gps for n in order], [staged[n] for n in order])


def from_mill19(ctx: ImportContext) -> Posed:
    """Photos and poses of a Mega-NeRF / Mill19 folder (val photos become the test split)."""
    skipped: list[tuple[str, str]] = []
    scene = read_mill19(ctx.src, skipped)
    ctx.report.photos_total = len(scene) + len(skipped)
    bad_photos(ctx, dict(skipped), ctx.report.photos_total, ctx.src)
    names = [f"{p.parent.parent.name}/{p.name}" for p in scene.image_paths]
    jobs = [
        (n, p, c.width, c.height) for n, p, c in zip(names, scene.image_paths, scene.cameras, strict=True)
    ]
    staged = _stage(ctx, jobs, ctx.src)
    keep = [i for i, n in enumerate(names) if n in staged]
    if not keep:
        raise BirdnerfError("no photo of the dataset could be read", ctx.src)
    scene = scene.subset(keep)
    scene.root = ctx.root
    scene.image_paths = [staged[names[i]].path for i in keep]
    scene.cameras = [c.scaled(staged[names[i]].scale) for c, i in zip(scene.cameras, keep, strict=True)]
    return Posed(scene, [None] * len(keep), [staged[names[i]] for i in keep])


def from_images(ctx: ImportContext) -> Posed:
    """Raw photos: copy them, then structure from motion (pycolmap) on the copies.

    Photos that SfM does not register (or that land in a smaller, separate model) are skipped
    and their copies removed.
    """
    names = require_photos(ctx.src, ctx.exclude)
    ctx.report.photos_total = len(names)
    metas, bad = read_metas(ctx.src, names, lambda d: ctx.step("metadata", d, len(names)))
    bad_photos(ctx, bad, len(names), ctx.src)
    jobs = [(n, ctx.src / n, metas[n].width, metas[n].height) for n in names if n in metas]
    staged = _stage(ctx, jobs, ctx.src)
    if len(staged) < 2:
        raise BirdnerfError(
            f"only {len(staged)} readable photo(s): structure from motion needs at least 2", ctx.src
        )
    order = sorted(staged)
    out_names = [staged[n].path.relative_to(ctx.root / IMAGES_FOLDER).as_posix() for n in order]
    sfm_metas: list[PhotoMeta] = [
        replace(metas[n], path=staged[n].path, width=staged[n].width, height=staged[n].height) for n in order
    ]
    result = run_sfm(ctx.root / IMAGES_FOLDER, out_names, sfm_metas, ctx.sfm, ctx.step)
    ctx.report.sfm = {
        "pairs_matched": result.pairs,
        "focal_fixed_from_exif": result.fixed_focal,
        "focal_px": {str(k): v for k, v in result.focal_px.items()},
        "focal_refinement": result.refinement,
        "other_models": result.other_models,
        "seconds": result.seconds,
        "neighbors": ctx.sfm.neighbors,
        "max_features": ctx.sfm.max_features,
    }
    registered = set(result.registered)
    by_out = dict(zip(out_names, order, strict=True))
    for out_name, name in by_out.items():
        if out_name not in registered:
            reason = "not registered by structure from motion"
            if result.other_models:
                reason += f" (or only in a smaller separate model; sizes {result.other_models})"
            ctx.report.skip(name, reason)
            staged[name].path.unlink(missing_ok=True)
    staged_by_out = {o: staged[n] for o, n in by_out.items() if o in registered}
    scene, scene_names = _model_scene(ctx, result.model, staged_by_out, {}, ctx.root / IMAGES_FOLDER)
    scene.source = "sfm"
    return Posed(scene, [metas[by_out[n]].gps for n in scene_names], [staged_by_out[n] for n in scene_names])


READERS: dict[str, Callable[[ImportContext], Posed]] = {
    "colmap": from_colmap,
    "images": from_images,
    "mill19": from_mill19,
}
