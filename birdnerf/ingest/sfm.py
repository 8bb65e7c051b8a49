"""Structure from motion for raw drone photos, with pycolmap (the ``colmap`` extra).

SIFT features are extracted on the CPU; matching compares only the pairs chosen by
:mod:`birdnerf.ingest.pairs` (neighbours by GPS); incremental mapping registers the photos.
Photos with the same camera, size and EXIF focal length share one SIMPLE_RADIAL camera whose
focal length is fixed at the EXIF value (only the radial term is refined): a nadir survey of
nearly flat ground barely constrains the focal length, and letting it drift is what splits
surveys into several partial models. Cameras without an EXIF focal length start from COLMAP's
default guess; they are refined during mapping only when they are the majority.

Photos with EXIF GPS also get position priors (COLMAP reads them from EXIF; 1 m standard
deviation): the mapper's bundle adjustments then keep the model consistent with GPS, which stops
the "bowl" that a free radial distortion bends nadir surveys into. Once every photo that can be
is registered, :func:`birdnerf.ingest.refine.refine_focal` frees the focal lengths in a final
bundle adjustment, kept only when it makes the model better (a model cannot split at that stage).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from birdnerf.errors import BirdnerfError
from birdnerf.geo.enu import geodetic_to_enu, mean_origin
from birdnerf.geo.exif import PhotoMeta
from birdnerf.ingest.backend import quiet, require_pycolmap, sfm_errors
from birdnerf.ingest.pairs import look_points, select_pairs
from birdnerf.ingest.photos import workers
from birdnerf.ingest.refine import Refinement, refine_focal
from birdnerf.scene.colmap import read_colmap_model
from birdnerf.scene.colmap_model import ColmapModel

log = logging.getLogger("birdnerf")


@dataclass(frozen=True)
class SfmOptions:
    """Settings of the raw-photo reconstruction."""

    neighbors: int = 10
    """Each photo is matched with this many nearest photos (by GPS)."""
    max_features: int = 4096
    """SIFT features kept per photo."""
    max_image_size: int = 1600
    """Photos larger than this (pixels, longer side) are reduced for feature extraction only."""
    seed: int = 0
    """Random seed of the mapper (same photos and seed: same reconstruction)."""
    refine_focal: bool = True
    """After mapping with focal lengths fixed at their EXIF values, refine them in a final
    bundle adjustment (kept only when it improves the fit, see :mod:`birdnerf.ingest.refine`)."""


@dataclass
class SfmResult:
    """The largest model found, and what happened to each photo.

    Attributes:
        model: the sparse model (poses, cameras, points); image names are the given names.
        registered: names of the photos in ``model``.
        other_models: sizes of any further, smaller models (their photos count as unregistered).
        pairs: number of photo pairs matched.
        fixed_focal: True when focal lengths were held fixed during mapping (at least half of
            the photos give one in EXIF).
        focal_px: per camera of ``model`` (by id), its focal length in pixels before and after the
            final refinement: ``{"start": f0, "final": f1}``.
        refinement: the final focal refinement's figures (see
            :class:`birdnerf.ingest.refine.Refinement`), or None when it did not run.
        seconds: wall time per stage ("features", "matching", "mapping", "refinement").
    """

    model: ColmapModel
    registered: list[str]
    other_models: list[int] = field(default_factory=list)
    pairs: int = 0
    fixed_focal: bool = True
    focal_px: dict[int, dict[str, float]] = field(default_factory=dict)
    refinement: dict | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def _camera_groups(metas: Sequence[PhotoMeta]) -> dict[tuple, list[int]]:
    groups: dict[tuple, list[int]] = {}
    for i, meta in enumerate(metas):
        groups.setdefault(meta.camera_key, []).append(i)
    return groups


Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class _Run:
    """One reconstruction's inputs and workspace."""

    pycolmap: ModuleType
    work: Path
    images_dir: Path
    names: Sequence[str]
    metas: Sequence[PhotoMeta]
    options: SfmOptions
    threads: int
    progress: Progress | None

    @property
    def database(self) -> Path:
        return self.work / "database.db"


def _extract(run: _Run) -> bool:
    """SIFT features of every photo, one SINGLE camera per camera key.

    Returns whether mapping holds focal lengths fixed: when at least half of the photos have an
    EXIF focal length (the others keep COLMAP's default guess and may fail to register).
    """
    pycolmap, groups = run.pycolmap, _camera_groups(run.metas)
    known = sum(1 for meta in run.metas if meta.focal_px)
    for done, indices in enumerate(groups.values(), start=1):
        meta = run.metas[indices[0]]
        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = "SIMPLE_RADIAL"
        if meta.focal_px:
            reader.camera_params = f"{meta.focal_px!r},{meta.width / 2!r},{meta.height / 2!r},0"
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.num_threads = run.threads
        extraction.use_gpu = False
        extraction.max_image_size = run.options.max_image_size
        extraction.sift.max_num_features = run.options.max_features
        pycolmap.extract_features(
            run.database,
            run.images_dir,
            image_names=[run.names[i] for i in indices],
            camera_mode=pycolmap.CameraMode.SINGLE,
            reader_options=reader,
            extraction_options=extraction,
            device=pycolmap.Device.cpu,
        )
        if run.progress:
            run.progress("features", done, len(groups))
    return 2 * known >= len(run.metas)


def _match(run: _Run) -> int:
    """Match the GPS-neighbour pairs; returns how many pairs were matched.

    COLMAP's pair list separates names by spaces, so names containing whitespace fall back to
    matching every pair.
    """
    pycolmap, names = run.pycolmap, run.names
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = run.threads
    matching.use_gpu = False
    if any(any(c.isspace() for c in name) for name in names):
        pycolmap.match_exhaustive(run.database, matching_options=matching, device=pycolmap.Device.cpu)
        pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    else:
        pairs = select_pairs(names, look_points(run.metas), run.options.neighbors)
        pair_file = run.work / "pairs.txt"
        pair_file.write_text("".join(f"{names[i]} {names[j]}\n" for i, j in pairs), encoding="utf-8")
        pairing = pycolmap.ImportedPairingOptions()
        pairing.match_list_path = pair_file
        pycolmap.match_image_pairs(
            run.database, matching_options=matching, pairing_options=pairing, device=pycolmap.Device.cpu
        )
    if run.progress:
        run.progress("matching", 1, 1)
    return len(pairs)


def _map(run: _Run, fixed_focal: bool) -> list:
    """Incremental mapping (with GPS position priors); the models found, largest first."""
    mapper = run.pycolmap.IncrementalPipelineOptions()
    mapper.num_threads = run.threads
    mapper.random_seed = run.options.seed
    mapper.min_model_size = 3
    mapper.ba_refine_focal_length = not fixed_focal
    mapper.ba_refine_principal_point = False
    mapper.ba_refine_extra_params = True
    mapper.mapper.abs_pose_refine_focal_length = not fixed_focal
    mapper.use_prior_position = True
    registered = [0]

    def next_image() -> None:
        registered[0] += 1
        if run.progress:
            run.progress("mapping", registered[0], len(run.names))

    (run.work / "sparse").mkdir()
    models = run.pycolmap.incremental_mapping(
        run.database, run.images_dir, run.work / "sparse", options=mapper, next_image_callback=next_image
    )
    return sorted(models.values(), key=lambda rec: rec.num_reg_images(), reverse=True)


def _enu_by_name(names: Sequence[str], metas: Sequence[PhotoMeta]) -> dict[str, np.ndarray]:
    located = [(n, m.gps) for n, m in zip(names, metas, strict=True) if m.gps is not None]
    if not located:
        return {}
    lat = np.array([g.lat for _, g in located])
    lon = np.array([g.lon for _, g in located])
    alt = np.array([g.alt for _, g in located])
    enu = geodetic_to_enu(lat, lon, alt, mean_origin(lat, lon, alt))
    return {n: enu[i] for i, (n, _) in enumerate(located)}


def run_sfm(
    images_dir: Path,
    names: Sequence[str],
    metas: Sequence[PhotoMeta],
    options: SfmOptions = SfmOptions(),
    progress: Progress | None = None,
) -> SfmResult:
    """Reconstruct the photos ``images_dir / name``.

    Args:
        images_dir: folder the names are relative to.
        names: photo names (relative POSIX paths).
        metas: per photo, its metadata *for the image in images_dir* (size, focal in pixels of
            that image, GPS for pair selection and position priors).
        options: see :class:`SfmOptions`.
        progress: optional ``(stage, done, total)`` callback; stages "features", "matching",
            "mapping" (done = photos registered so far).

    Raises:
        BirdnerfError: when pycolmap is missing, or no model of at least 3 photos comes out.
    """
    pycolmap = require_pycolmap()
    if len(names) < 2:
        raise BirdnerfError(f"structure from motion needs at least 2 photos, got {len(names)}", images_dir)
    threads = workers()
    seconds: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory(prefix="birdnerf-sfm-") as work_str,
        quiet(pycolmap),
        sfm_errors(images_dir),
    ):
        run = _Run(pycolmap, Path(work_str), images_dir, names, metas, options, threads, progress)
        with _timed(seconds, "features"):
            fixed_focal = _extract(run)
        with _timed(seconds, "matching"):
            pairs = _match(run)
        with _timed(seconds, "mapping"):
            ranked = _map(run, fixed_focal)
        best = _largest(ranked, len(names), images_dir)
        start_focal = {int(cid): float(cam.params[0]) for cid, cam in best.cameras.items()}
        model_dir, refinement = _write_best(run, best, fixed_focal, seconds)
        model = read_colmap_model(model_dir, "text")
    focal_px = {
        cid: {"start": round(f0, 3), "final": round(float(model.cameras[cid].params[0]), 3)}
        for cid, f0 in start_focal.items()
        if cid in model.cameras
    }
    registered = sorted(image.name for image in model.images)
    log.info("SfM registered %d of %d photos", len(registered), len(names))
    return SfmResult(
        model=model,
        registered=registered,
        other_models=[rec.num_reg_images() for rec in ranked[1:]],
        pairs=pairs,
        fixed_focal=fixed_focal,
        focal_px=focal_px,
        refinement=refinement.as_dict() if refinement else None,
        seconds={k: round(v, 3) for k, v in seconds.items()},
    )


def _largest(ranked: list, n_photos: int, images_dir: Path):
    """The largest model, which must hold 3 photos or more."""
    if not ranked or ranked[0].num_reg_images() < 3:
        raise BirdnerfError(
            f"structure from motion registered no model of 3 or more photos out of {n_photos} "
            "(too little overlap, or photos without texture?)",
            images_dir,
        )
    return ranked[0]


@contextlib.contextmanager
def _timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Record in ``seconds[stage]`` how long the block took (nothing when it raises)."""
    start = time.perf_counter()
    yield
    seconds[stage] = time.perf_counter() - start


def _write_best(
    run: _Run, best, fixed_focal: bool, seconds: dict[str, float]
) -> tuple[Path, Refinement | None]:
    """Write the largest model as text, its focal lengths refined first where they were fixed from
    EXIF (and the refinement is kept); returns its folder and the refinement, if any."""
    model_dir = run.work / "fixed"
    model_dir.mkdir()
    best.write_text(model_dir)
    if not (fixed_focal and run.options.refine_focal):
        return model_dir, None
    with _timed(seconds, "refinement"):
        refinement = refine_focal(run.pycolmap, best, run.threads, _enu_by_name(run.names, run.metas))
    if refinement.kept:
        model_dir = run.work / "refined"
        model_dir.mkdir()
        best.write_text(model_dir)
    return model_dir, refinement
