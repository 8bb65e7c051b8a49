"""The last step of raw-photo SfM: free the focal lengths in one global bundle adjustment.

Mapping runs with focal lengths fixed at their EXIF values (see :mod:`birdnerf.ingest.sfm`).
EXIF focal lengths are often a few percent off (more for photos cropped to another aspect
ratio), so once every photo that can be is registered, one bundle adjustment refines them with
the distortion. That bundle adjustment has no GPS priors, and on nadir surveys a free radial
distortion can bend the model into a bowl; the result is therefore kept only when the focal
lengths move by at most :data:`MAX_FOCAL_CHANGE`, the reprojection error does not grow, and --
when GPS is known -- the camera centres do not agree worse with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from birdnerf.geo.align import spread_ratio, umeyama
from birdnerf.ingest.backend import no_stderr

MAX_FOCAL_CHANGE = 0.35
"""Largest relative focal-length change accepted."""
MAX_REPROJECTION_GROWTH = 1.01
MAX_GPS_GROWTH = 1.05


@dataclass(frozen=True)
class Refinement:
    """Outcome of the focal refinement: values before and after, and whether it was kept.

    Attributes:
        kept: the refined model replaces the fixed-focal one.
        focal_change: largest relative change of a focal length.
        reprojection_px: mean reprojection error (pixels) before and after.
        gps_rms_m: RMS distance (metres) between similarity-aligned camera centres and GPS
            before and after, or None without enough GPS.
    """

    kept: bool
    focal_change: float
    reprojection_px: tuple[float, float]
    gps_rms_m: tuple[float, float] | None

    def as_dict(self) -> dict:
        rounded = {
            "kept": self.kept,
            "focal_change": round(self.focal_change, 5),
            "reprojection_px": [round(v, 4) for v in self.reprojection_px],
        }
        if self.gps_rms_m is not None:
            rounded["gps_rms_m"] = [round(v, 4) for v in self.gps_rms_m]
        return rounded


def gps_rms(reconstruction: object, enu_by_name: dict[str, np.ndarray]) -> float | None:
    """RMS residual (metres) of the similarity from registered camera centres to their ENU GPS."""
    centres, targets = [], []
    for image in reconstruction.images.values():  # type: ignore[attr-defined]
        if image.name in enu_by_name and image.has_pose:
            centres.append(np.asarray(image.projection_center(), dtype=np.float64))
            targets.append(enu_by_name[image.name])
    if len(centres) < 3 or spread_ratio(np.array(targets)) < 0.05 or spread_ratio(np.array(centres)) < 0.05:
        return None
    return umeyama(np.array(centres), np.array(targets)).rms


def refine_focal(
    pycolmap: ModuleType, reconstruction: object, threads: int, enu_by_name: dict[str, np.ndarray]
) -> Refinement:
    """Bundle-adjust ``reconstruction`` (in place) with focal lengths and distortion free.

    The caller keeps a copy of the fixed-focal model to fall back on when ``kept`` is False.
    """
    rec = reconstruction
    before = {cid: float(cam.params[0]) for cid, cam in rec.cameras.items()}  # type: ignore[attr-defined]
    error_before = float(rec.compute_mean_reprojection_error())  # type: ignore[attr-defined]
    gps_before = gps_rms(rec, enu_by_name)
    options = pycolmap.BundleAdjustmentOptions()
    options.refine_focal_length = True
    options.refine_principal_point = False
    options.refine_extra_params = True
    options.print_summary = False
    options.ceres.solver_options.num_threads = threads
    with no_stderr():
        pycolmap.bundle_adjustment(rec, options)
    after = {cid: float(cam.params[0]) for cid, cam in rec.cameras.items()}  # type: ignore[attr-defined]
    change = max(abs(after[cid] / before[cid] - 1.0) for cid in before)
    error_after = float(rec.compute_mean_reprojection_error())  # type: ignore[attr-defined]
    gps_after = gps_rms(rec, enu_by_name)
    keep = change <= MAX_FOCAL_CHANGE and error_after <= error_before * MAX_REPROJECTION_GROWTH
    gps = None
    if gps_before is not None and gps_after is not None:
        gps = (gps_before, gps_after)
        keep = keep and gps_after <= gps_before * MAX_GPS_GROWTH
    return Refinement(keep, change, (error_before, error_after), gps)
