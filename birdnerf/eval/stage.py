"""The eval stage: held-out photos rendered from the blocks and scored, per photo and per block.

Besides whole-image PSNR/SSIM, pixels are split by where their ray meets the ground: a
*boundary band* within ``band_m`` of an interior block edge (where blocks hand over, so seams
would show) versus block *interiors*. Similar scores in both mean the seams do not show.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from birdnerf import atomic
from birdnerf.composite.cache import BlockCache
from birdnerf.composite.outputs import save_view
from birdnerf.composite.stage import view_stem
from birdnerf.composite.view import render_view
from birdnerf.errors import BirdnerfError
from birdnerf.eval.metrics import lpips_available, psnr, ssim
from birdnerf.partition import load_scene, read_partition
from birdnerf.partition.manifest import Partition
from birdnerf.progress import ProgressFn
from birdnerf.scene.camera import camera_rays, pixel_centers
from birdnerf.scene.images import load_rgb
from birdnerf.train.data import ground_points


@dataclass
class _Pool:
    """Squared error summed over a set of pixels (pooled PSNR)."""

    sq: float = 0.0
    n: int = 0

    def add(self, err: torch.Tensor) -> None:
        self.sq += float(err.sum())
        self.n += int(err.numel())

    def psnr(self) -> float | None:
        return None if self.n == 0 else -10.0 * float(np.log10(max(self.sq / self.n, 1e-10)))


def edge_distance(points: torch.Tensor, partition: Partition) -> torch.Tensor:
    """(...,) bird-view distance from ``points`` (..., 2) to the nearest interior block edge."""
    inner_x = torch.tensor(partition.x_edges[1:-1], dtype=points.dtype)
    inner_y = torch.tensor(partition.y_edges[1:-1], dtype=points.dtype)
    far = torch.full(points.shape[:-1], float("inf"), dtype=points.dtype)
    dx = (points[..., 0, None] - inner_x).abs().amin(-1) if len(inner_x) else far
    dy = (points[..., 1, None] - inner_y).abs().amin(-1) if len(inner_y) else far
    return torch.minimum(dx, dy)


def evaluate_run(
    run_dir: str | Path,
    *,
    band_m: float | None = None,
    save_renders: bool = True,
    progress: ProgressFn | None = None,
) -> dict:
    """Score every test photo of the run; writes ``RUN/eval.json`` and returns its content.

    ``band_m`` is the half-width of the boundary band (default: the blend band, half the overlap).
    """
    run_dir = Path(run_dir)
    partition = read_partition(run_dir)
    scene = load_scene(partition)
    tests = scene.indices("test")
    if not tests:
        raise BirdnerfError("the dataset has no test photos to evaluate", partition.dataset)
    if band_m is None:
        b = partition.blocks[0]
        band_m = 0.5 * min(b.core[0] - b.expanded[0], b.core[1] - b.expanded[1]) or 1.0
    cache = BlockCache(run_dir, capacity=max(4, len(partition.blocks)))
    per_photo, boundary, interior = [], _Pool(), _Pool()
    per_block = {b.id: _Pool() for b in partition.blocks}
    start = time.perf_counter()
    for k, i in enumerate(tests):
        cam, c2w, name = scene.cameras[i], scene.c2w[i], scene.names[i]
        view = render_view(partition, cache, cam, c2w)
        if save_renders:
            save_view(run_dir / "renders" / "test", view_stem(name), view)
        target = torch.from_numpy(load_rgb(scene.image_paths[i], cam)).float() / 255.0
        err = ((view.rgb - target) ** 2).mean(dim=-1)  # (H, W)
        o, d = camera_rays(cam, torch.from_numpy(c2w), pixel_centers(cam, torch.float64))
        near_edge = edge_distance(ground_points(o, d, partition.frame["ground_z"]), partition) <= band_m
        boundary.add(err[near_edge])
        interior.add(err[~near_edge])
        for b, pool in enumerate(per_block.values()):
            pool.add(err[view.block_map == b])
        per_photo.append(
            {
                "name": name,
                "psnr": psnr(view.rgb, target),
                "ssim": ssim(view.rgb, target),
                "blocks": view.blocks,
                "reassigned_pixels": view.reassigned,
            }
        )
        if progress:
            progress(k + 1, len(tests), {"PSNR": per_photo[-1]["psnr"]})
    result = {
        "n_test_photos": len(tests),
        "psnr": float(np.mean([p["psnr"] for p in per_photo])),
        "ssim": float(np.mean([p["ssim"] for p in per_photo])),
        "lpips": None,
        "lpips_unavailable": lpips_available(),
        "boundary_band_m": band_m,
        "psnr_boundary": boundary.psnr(),
        "psnr_interior": interior.psnr(),
        "boundary_pixels": boundary.n,
        "interior_pixels": interior.n,
        "per_block": {bid: {"psnr": pool.psnr(), "pixels": pool.n} for bid, pool in per_block.items()},
        "per_photo": per_photo,
        "seconds": time.perf_counter() - start,
    }
    atomic.write_json(run_dir / "eval.json", result)
    return result
