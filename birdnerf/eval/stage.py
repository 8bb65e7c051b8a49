"""The eval stage: held-out photos rendered from the blocks and scored, per photo and per block.

Besides PSNR/SSIM per photo, pixels are split by where their ray meets the ground: a
*boundary band* within ``band_m`` of an interior block edge (where blocks hand over, so seams
would show) versus block *interiors*. Similar scores in both mean the seams do not show.

Two protocols choose the held-out photos' appearance codes (``appearance``): ``mean`` renders
with the mean of the training photos' codes and scores whole images; ``fit-left`` is
Mega-NeRF's: codes fitted on each photo's left half (:mod:`birdnerf.eval.appearance`), every
figure (photo, block, band, interior) computed on the right half only.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from birdnerf import formats
from birdnerf.composite.cache import BlockCache
from birdnerf.composite.outputs import save_view
from birdnerf.composite.stage import view_stem
from birdnerf.composite.view import ViewRender, render_view
from birdnerf.device import resolve_device
from birdnerf.errors import BirdnerfError
from birdnerf.eval.appearance import AppearanceFit, fit_appearance, left_width
from birdnerf.eval.metrics import (
    lpips_unavailable_reason,
    mean_color_baseline,
    psnr,
    psnr_from_mse,
    ssim,
)
from birdnerf.partition import load_scene, read_partition
from birdnerf.partition.footprint import ground_points
from birdnerf.partition.manifest import Partition
from birdnerf.progress import ProgressFn
from birdnerf.runlayout import RunLayout
from birdnerf.runlock import locks_run
from birdnerf.scene.camera import camera_rays, pixel_centers
from birdnerf.scene.images import load_rgb
from birdnerf.scene.scene import Scene
from birdnerf.torch_globals import keep_torch_globals


@dataclass
class _Pool:
    """Squared errors of the model and of the mean-colour baseline summed over a set of pixels
    (pooled PSNR)."""

    sq: float = 0.0
    base_sq: float = 0.0
    n: int = 0

    def add(self, err: torch.Tensor, base_err: torch.Tensor) -> None:
        self.sq += float(err.sum())
        self.base_sq += float(base_err.sum())
        self.n += int(err.numel())

    def psnr(self) -> float | None:
        return None if self.n == 0 else psnr_from_mse(self.sq / self.n)

    def baseline_psnr(self) -> float | None:
        return None if self.n == 0 else psnr_from_mse(self.base_sq / self.n)

    def figures(self) -> dict:
        """``{"psnr", "baseline_psnr", "margin_db", "pixels"}`` (None where no pixel fell here)."""
        score, base = self.psnr(), self.baseline_psnr()
        margin = None if score is None or base is None else score - base
        return {"psnr": score, "baseline_psnr": base, "margin_db": margin, "pixels": self.n}


def edge_distance(points: torch.Tensor, partition: Partition) -> torch.Tensor:
    """(...,) bird-view distance from ``points`` (..., 2) to the nearest interior block edge."""
    inner_x = torch.tensor(partition.x_edges[1:-1], dtype=points.dtype)
    inner_y = torch.tensor(partition.y_edges[1:-1], dtype=points.dtype)
    far = torch.full(points.shape[:-1], float("inf"), dtype=points.dtype)
    dx = (points[..., 0, None] - inner_x).abs().amin(-1) if len(inner_x) else far
    dy = (points[..., 1, None] - inner_y).abs().amin(-1) if len(inner_y) else far
    return torch.minimum(dx, dy)


APPEARANCE_PROTOCOLS = ("mean", "fit-left")
"""``mean``: mean code, whole image scored. ``fit-left``: codes fitted on the left half, right half scored."""


@locks_run("eval")
@keep_torch_globals()
def evaluate_run(
    run_dir: str | Path,
    *,
    band_m: float | None = None,
    save_renders: bool = True,
    progress: ProgressFn | None = None,
    appearance: str = "mean",
    fit: AppearanceFit | None = None,
    device: str = "auto",
) -> dict:
    """Score every test photo of the run; writes ``RUN/eval.json`` and returns its content.

    ``band_m`` is the half-width of the boundary band (default: the blend band, half the overlap).
    ``appearance`` is the protocol (:data:`APPEARANCE_PROTOCOLS`); ``fit`` sets the ``fit-left``
    optimisation (default :class:`AppearanceFit`); its saved renders use the fitted codes
    (``device``: where the block models run, ``auto`` = CUDA when available). The
    result records both, and ``scored_region`` (``whole-image`` or ``right-half``) says which
    pixels every score (per photo, per block, band, interior) covers.

    Beside every score stands the mean-colour baseline of the same pixels (each photo predicted
    by its own mean colour over its scored pixels; pooled over blocks, band and interior like the
    scores): ``baseline_psnr``, ``baseline_ssim`` and ``margin_db`` (PSNR over the baseline, dB)
    overall and per photo, ``baseline_psnr``/``margin_db`` per block, and
    ``baseline_psnr_boundary``/``baseline_psnr_interior``. A margin below
    :data:`birdnerf.eval.metrics.MIN_MARGIN_DB` means the run learned nothing useful.
    """
    if appearance not in APPEARANCE_PROTOCOLS:
        raise BirdnerfError(f"unknown appearance protocol {appearance!r}; choose mean or fit-left")
    fit = fit or AppearanceFit()
    fitting = appearance == "fit-left"
    run_dir = Path(run_dir)
    partition = read_partition(run_dir)
    scene = load_scene(partition)
    retired = set(partition.retired)  # older photos of an area an update replaced
    tests = [i for i in scene.indices("test") if scene.names[i] not in retired]
    if not tests:
        raise BirdnerfError("the dataset has no test photos to evaluate", partition.dataset)
    if band_m is None:
        b = partition.blocks[0]
        band_m = 0.5 * min(b.core[0] - b.expanded[0], b.core[1] - b.expanded[1]) or 1.0
    cache = BlockCache(run_dir, capacity=max(4, len(partition.blocks)), device=resolve_device(device))
    pools = _Pools(band_m, {b.id: _Pool() for b in partition.blocks})
    per_photo = []
    start = time.perf_counter()
    for k, i in enumerate(tests):
        view, target, first = _render_test_photo(partition, cache, scene, i, fit if fitting else None)
        if save_renders:
            save_view(RunLayout(run_dir).renders("test"), view_stem(scene.names[i]), view)
        per_photo.append(_score_photo(partition, scene, i, view, target, first, pools))
        if progress:
            progress(k + 1, len(tests), {"PSNR": per_photo[-1]["psnr"]})
    result = {
        "n_test_photos": len(tests),
        "appearance": appearance,
        "appearance_fit": asdict(fit) if fitting else None,
        "scored_region": "right-half" if fitting else "whole-image",
        **_summary(per_photo, pools),
        "per_photo": per_photo,
        "seconds": time.perf_counter() - start,
    }
    formats.write_record(RunLayout(run_dir).eval, formats.EVAL, result)
    return result


@dataclass
class _Pools:
    """Pixel pools of a run: the boundary band (within ``band_m`` of an interior block edge), the
    interiors, and each block's own pixels."""

    band_m: float
    per_block: dict[str, _Pool]
    boundary: _Pool = field(default_factory=_Pool)
    interior: _Pool = field(default_factory=_Pool)


def _render_test_photo(
    partition: Partition, cache: BlockCache, scene: Scene, i: int, fit: AppearanceFit | None
) -> tuple[ViewRender, torch.Tensor, int]:
    """Test photo ``i`` rendered with the mean codes, or (``fit``) with codes fitted on its left
    half; returns the view, the photo (H, W, 3) in [0, 1] and the first scored column."""
    cam, c2w = scene.cameras[i], scene.c2w[i]
    view = render_view(partition, cache, cam, c2w)
    target = torch.from_numpy(load_rgb(scene.image_paths[i], cam)).float() / 255.0
    if fit is None:
        return view, target, 0
    codes = fit_appearance(partition, cache, cam, c2w, target, view.weights, fit)
    return render_view(partition, cache, cam, c2w, appearance=codes), target, left_width(cam.width)


def _score_photo(
    partition: Partition,
    scene: Scene,
    i: int,
    view: ViewRender,
    target: torch.Tensor,
    first: int,
    pools: _Pools,
) -> dict:
    """Photo ``i``'s scores on its columns from ``first`` on, beside the mean-colour baseline; its
    pixels' errors are added to ``pools``."""
    cam, c2w = scene.cameras[i], scene.c2w[i]
    pred, truth = view.rgb[:, first:], target[:, first:]
    # The photo's own mean colour over the scored pixels: what a model that learned no
    # geometry converges to, so the score means something only above it.
    base = mean_color_baseline(truth)
    err = ((pred - truth) ** 2).mean(dim=-1)  # (H, scored columns)
    base_err = ((base - truth) ** 2).mean(dim=-1)
    o, d = camera_rays(cam, torch.from_numpy(c2w), pixel_centers(cam, torch.float64)[:, first:])
    near_edge = edge_distance(ground_points(o, d, partition.frame["ground_z"]), partition) <= pools.band_m
    pools.boundary.add(err[near_edge], base_err[near_edge])
    pools.interior.add(err[~near_edge], base_err[~near_edge])
    block_map = view.block_map[:, first:]
    for b, pool in enumerate(pools.per_block.values()):
        pool.add(err[block_map == b], base_err[block_map == b])
    score, base_score = psnr(pred, truth), psnr(base, truth)
    return {
        "name": scene.names[i],
        "psnr": score,
        "ssim": ssim(pred, truth),
        "baseline_psnr": base_score,
        "baseline_ssim": ssim(base, truth),
        "margin_db": score - base_score,
        "blocks": view.blocks,
        "reassigned_pixels": view.reassigned,
    }


def _summary(per_photo: list[dict], pools: _Pools) -> dict:
    """The run's figures: means over photos, then the pooled band, interior and block scores."""
    keys = ("psnr", "ssim", "baseline_psnr", "baseline_ssim")
    overall = {k: float(np.mean([p[k] for p in per_photo])) for k in keys}  # means over photos
    boundary, interior = pools.boundary, pools.interior
    return {
        "psnr": overall["psnr"],
        "ssim": overall["ssim"],
        "baseline_psnr": overall["baseline_psnr"],
        "baseline_ssim": overall["baseline_ssim"],
        "margin_db": overall["psnr"] - overall["baseline_psnr"],
        "lpips": None,
        "lpips_unavailable": lpips_unavailable_reason(),
        "boundary_band_m": pools.band_m,
        "psnr_boundary": boundary.psnr(),
        "psnr_interior": interior.psnr(),
        "baseline_psnr_boundary": boundary.baseline_psnr(),
        "baseline_psnr_interior": interior.baseline_psnr(),
        "boundary_pixels": boundary.n,
        "interior_pixels": interior.n,
        "per_block": {bid: pool.figures() for bid, pool in pools.per_block.items()},
    }


def score_dataset(run_dir: str | Path, data: str | Path, split: str = "test") -> list[float]:
    """PSNR of each ``split`` photo of another dataset in the run's frame (e.g. new photos of a
    changed area), rendered from the run's current blocks with their mean appearance codes."""
    from birdnerf.partition.partition import apply_frame
    from birdnerf.scene.load import load_dataset

    partition = read_partition(run_dir)
    scene = apply_frame(load_dataset(data), partition.frame)
    cache = BlockCache(run_dir, capacity=max(4, len(partition.blocks)))
    scores = []
    for i in scene.indices(split):
        view = render_view(partition, cache, scene.cameras[i], scene.c2w[i])
        target = torch.from_numpy(load_rgb(scene.image_paths[i], scene.cameras[i])).float() / 255.0
        scores.append(psnr(view.rgb, target))
    return scores
