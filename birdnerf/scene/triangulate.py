"""Surface points measured from posed photos: a small plane-sweep stereo matcher.

Datasets with poses but neither sparse points nor depth maps (most nerfstudio ``transforms.json``
surveys) still hold the geometry in their photos. With the poses known, depth along each pixel
of a reference photo is a one-dimensional search: sweep fronto-parallel planes through the
reference camera, warp a neighbouring photo onto each plane, and score the match with windowed
normalised cross-correlation (NCC). The depth range is scale-free: it is derived from the
baseline, so that the disparity in the nearest neighbour runs from about one pixel to 80 % of
the image width (the ground of a survey with 70 % forward overlap already sits at 30 % of the
width, taller objects further; what stands higher than the sweep's reach is not measured).
Planes are evenly spaced in inverse depth, one pixel of disparity apart.

A pixel's depth is kept only where the match is trustworthy: a textured patch, a high NCC peak
(averaged over two neighbours), a clear margin over the best other, non-adjacent, local peak,
the two neighbours each finding the same plane on their own (a second-neighbour check), a
disparity of a few pixels at least (smaller shifts barely change a smooth patch), and enough
kept neighbouring pixels at a similar depth (a speckle filter). The peak is refined by a
parabola through its neighbours. Everything runs vectorised on the CPU
with torch on photos downscaled to ~192 px width: a few seconds for ~30 photos.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from birdnerf.scene.camera import Camera, distort, pixel_centers, pixel_directions
from birdnerf.scene.images import load_rgb
from birdnerf.scene.scene import Scene


@dataclass(frozen=True)
class TriangulateConfig:
    """Settings of the plane-sweep matcher (pixels are those of the downscaled photos)."""

    max_photos: int = 28
    """Reference photos, spread over the survey (farthest-point order on the camera centres)."""
    width: int = 192
    """Photos wider than this are downscaled to this width (px)."""
    window: int = 7
    """Side of the square NCC window (px, odd)."""
    max_disparity: float = 0.8
    """Largest disparity swept in the nearest neighbour, as a fraction of the image width: with
    70 % overlap the ground sits near 0.3, and 0.8 reaches surfaces ~60 % of the way up to the
    cameras (what lies higher shifts too far between neighbours to be matched)."""
    min_disparity: float = 4.0
    """Peaks at a smaller disparity (px, nearest neighbour) are refused: a depth this far beyond
    a survey's ground (~15x for 70 % overlap) is a patch matching its own shifted copy."""
    min_ncc: float = 0.75
    """Lowest accepted NCC peak (mean over the two neighbours)."""
    min_margin: float = 0.1
    """Least NCC by which the peak must beat the best other, non-adjacent, local peak."""
    min_texture: float = 0.015
    """Least standard deviation of grey values (0..1) in the window: flat patches match anywhere."""
    max_plane_gap: int = 1
    """The two neighbours' own best planes may differ by at most this many planes."""
    min_support: int = 12
    """A kept pixel needs this many kept pixels within 2 px (of 24) at a nearby depth (within
    ``max_plane_gap`` planes): surfaces are smooth, isolated false matches are not."""
    max_view_angle_deg: float = 30.0
    """Neighbours must look within this angle of the reference photo's viewing direction."""
    min_baseline: float = 0.5
    """Neighbours closer than this fraction of the median nearest-camera spacing are skipped."""
    max_points_per_photo: int = 3000


@dataclass(frozen=True)
class Triangulation:
    """Measured surface points, in the scene's frame.

    Attributes:
        points: (M, 3) float64 positions, scene units.
        colors: (M, 3) uint8 RGB of the reference pixel.
        confidence: (M,) float32 NCC peak in [0, 1] (mean over the two neighbours).
        photos: how many reference photos were matched (with two usable neighbours).
        reach_z: height (scene z) above which the matcher was blind: the nearest depth it swept
            seen from the lowest reference photo. Surfaces above it (a tower roof close to the
            cameras) shift too far between neighbours to be matched, so the points say nothing
            there. ``inf`` when no photo was matched.
    """

    points: np.ndarray
    colors: np.ndarray
    confidence: np.ndarray
    photos: int
    reach_z: float = float("inf")

    def __len__(self) -> int:
        return len(self.points)


def _load_small(scene: Scene, i: int, width: int) -> tuple[np.ndarray, Camera]:
    """(H, W, 3) uint8 photo ``i`` downscaled to at most ``width`` px, and its scaled camera."""
    cam = scene.cameras[i]
    rgb = load_rgb(scene.image_paths[i], cam)
    if cam.width <= width:
        return rgb, cam
    small = cam.scaled(width / cam.width)
    with Image.fromarray(rgb) as im:
        # Area averaging: pixel-corner coordinates scale exactly with the factor (see Camera.scaled).
        rgb = np.asarray(im.resize((small.width, small.height), Image.Resampling.BOX))
    return rgb, small


def _grey(rgb: np.ndarray) -> Tensor:
    return torch.from_numpy(rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255.0)


def spread_subset(centers: np.ndarray, count: int) -> list[int]:
    """Indices of ``count`` camera centres (N, 3) spread over the survey (farthest-point order)."""
    if len(centers) <= count:
        return list(range(len(centers)))
    chosen = [int(np.argmin(np.linalg.norm(centers - np.median(centers, axis=0), axis=1)))]
    dist = np.linalg.norm(centers - centers[chosen[0]], axis=1)
    while len(chosen) < count:
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(centers - centers[nxt], axis=1))
    return sorted(chosen)


def pick_neighbours(scene: Scene, ref: int, pool: list[int], config: TriangulateConfig) -> list[int]:
    """The two nearest photos of ``pool`` that look the same way as ``ref`` with enough baseline."""
    centers, axes = scene.centers, scene.c2w[:, :3, 2]
    pool_arr = np.asarray(pool)
    dist = np.linalg.norm(centers[pool_arr][:, None] - centers[pool_arr][None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    spacing = float(np.median(dist.min(axis=1))) if len(pool) > 1 else 0.0
    d = np.linalg.norm(centers[pool_arr] - centers[ref], axis=1)
    cos = axes[pool_arr] @ axes[ref]
    ok = (
        (d > config.min_baseline * spacing) & (d > 0) & (cos >= np.cos(np.radians(config.max_view_angle_deg)))
    )
    order = np.argsort(np.where(ok, d, np.inf), kind="stable")
    return [int(pool_arr[k]) for k in order[:2] if ok[k]]


def _box(x: Tensor, window: int) -> Tensor:
    """Mean over a ``window`` x ``window`` square of (K, H, W), edge windows averaged where they lie."""
    return _box_1d(_box_1d(x, window // 2, 2), window // 2, 1)


def _box_1d(x: Tensor, r: int, dim: int) -> Tensor:
    """Mean over ``[i - r, i + r]`` along ``dim``, from a running sum (a few operations per
    element whatever the window; torch's pooling is several times slower here)."""
    n = x.shape[dim]
    c = torch.cumsum(x, dim)
    head = torch.zeros_like(c.narrow(dim, 0, 1)).expand(*[r + 1 if d == dim else -1 for d in range(x.dim())])
    tail = c.narrow(dim, n - 1, 1).expand(*[r if d == dim else -1 for d in range(x.dim())])
    # Padded so that entry i + 2r + 1 is the sum up to min(i + r, n - 1) and entry i the sum up
    # to i - r - 1 (zero before the start): their difference is the window's sum.
    c = torch.cat([head, c, tail], dim)
    sums = c.narrow(dim, 2 * r + 1, n) - c.narrow(dim, 0, n)
    i = torch.arange(n)
    count = ((i + r).clamp(max=n - 1) - (i - r).clamp(min=0) + 1).to(x.dtype)
    return sums / count.reshape([-1 if d == dim else 1 for d in range(x.dim())])


def _ncc_volume(
    ref_grey: Tensor,
    ref_stats: tuple[Tensor, Tensor],
    rays: Tensor,
    ref_c2w: np.ndarray,
    src_grey: Tensor,
    src_cam: Camera,
    src_c2w: np.ndarray,
    inv_depth: Tensor,
    window: int,
) -> Tensor:
    """(K, H, W) NCC of the reference windows with the source photo warped by each depth plane.

    ``rays`` (H, W, 3) are reference ray directions in world axes scaled to unit camera z, so a
    plane at z-depth d holds the points ``centre + d * rays``. Windows that see outside the source
    photo (or behind it) score -1.
    """
    h, w = ref_grey.shape
    r_src = torch.from_numpy(src_c2w[:3, :3]).float()
    offset = torch.from_numpy(ref_c2w[:3, 3] - src_c2w[:3, 3]).float() @ r_src  # source camera axes
    dirs = rays.reshape(-1, 3) @ r_src  # (P, 3)
    p = offset[None, None] + (1.0 / inv_depth)[:, None, None] * dirs[None]  # (K, P, 3)
    z = p[..., 2]
    xy = p[..., :2] / z.clamp_min(1e-6)[..., None]
    if src_cam.has_distortion:
        xy = distort(src_cam, xy)
    u = xy[..., 0] * src_cam.fx + src_cam.cx
    v = xy[..., 1] * src_cam.fy + src_cam.cy
    sh, sw = src_grey.shape
    grid = torch.stack([2.0 * u / sw - 1.0, 2.0 * v / sh - 1.0], dim=-1).reshape(1, -1, w, 2)
    # The window around a pixel must lie in the source photo: its centre at least half a window
    # inside (exact for a pure shift, close enough for the small rotations between neighbours).
    m = window / 2
    seen = ((z > 0) & (u >= m) & (u <= sw - m) & (v >= m) & (v <= sh - m)).reshape(-1, h, w)
    warped = F.grid_sample(src_grey[None, None], grid, mode="bilinear", align_corners=False)
    s = warped.reshape(-1, h, w)
    k = len(s)
    mu_r, sd_r = ref_stats
    sums = _box(torch.cat([s, s * s, s * ref_grey[None]]), window)
    mu_s, mu_ss, mu_rs = sums[:k], sums[k : 2 * k], sums[2 * k :]
    var_s = (mu_ss - mu_s * mu_s).clamp_min(0.0)
    ncc = (mu_rs - mu_s * mu_r[None]) / (sd_r[None] * var_s.sqrt() + 1e-6)
    return torch.where(seen, ncc.clamp(-1.0, 1.0), torch.full_like(ncc, -1.0))


def _refine(score: Tensor, best: Tensor) -> Tensor:
    """Sub-plane position of the peak: a parabola through the best plane and its two neighbours."""
    k = score.shape[0]
    lo = (best - 1).clamp(0, k - 1)
    hi = (best + 1).clamp(0, k - 1)
    s0 = score.gather(0, lo[None])[0]
    s1 = score.gather(0, best[None])[0]
    s2 = score.gather(0, hi[None])[0]
    denom = s0 - 2.0 * s1 + s2
    step = torch.where(denom < -1e-6, 0.5 * (s0 - s2) / denom, torch.zeros_like(denom))
    inner = (best > 0) & (best < k - 1)
    return best.float() + torch.where(inner, step.clamp(-0.5, 0.5), torch.zeros_like(step))


def _supported(keep: Tensor, pos: Tensor, gap: float, need: int) -> Tensor:
    """(H, W) mask of the pixels with at least ``need`` kept pixels in their 5 x 5 neighbourhood
    whose plane position ``pos`` lies within ``gap`` of their own (a speckle filter)."""
    h, w = keep.shape
    kp = F.pad(keep[None, None].float(), (2, 2, 2, 2))[0, 0]
    pp = F.pad(pos[None, None], (2, 2, 2, 2))[0, 0]
    count = torch.zeros(h, w)
    for dy in range(5):
        for dx in range(5):
            if dy == 2 and dx == 2:
                continue
            near = (pp[dy : dy + h, dx : dx + w] - pos).abs() <= gap
            count += kp[dy : dy + h, dx : dx + w] * near
    return count >= need


@torch.no_grad()
def match_photo(
    scene: Scene, ref: int, neighbours: list[int], config: TriangulateConfig, cache: dict
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Points (M, 3), colours (M, 3) uint8 and confidences (M,) measured in photo ``ref``, and
    the height (scene z) of the nearest depth swept along its optical axis (its reach)."""
    photos = {i: cache.setdefault(i, _load_small(scene, i, config.width)) for i in [ref, *neighbours]}
    rgb, cam = photos[ref]
    grey = _grey(rgb)
    h, w = grey.shape
    c2w = scene.c2w[ref]
    rot = torch.from_numpy(c2w[:3, :3]).float()
    cam_dirs = pixel_directions(cam, pixel_centers(cam))  # (H, W, 3), undistorted, unit length
    rays = (cam_dirs / cam_dirs[..., 2:3]) @ rot.T  # unit camera z, world axes
    # Inverse-depth planes one pixel of disparity apart in the nearest neighbour, whose baseline
    # (its component across the viewing direction) sets the scale.
    base = scene.centers[neighbours[0]] - scene.centers[ref]
    axis = c2w[:3, 2]
    b_perp = float(np.linalg.norm(base - (base @ axis) * axis))
    disparities = torch.arange(1.0, config.max_disparity * w + 1e-6, 1.0)
    inv_depth = disparities / (cam.fx * b_perp)
    mu_r = _box(grey[None], config.window)[0]
    sd_r = (_box(grey[None] ** 2, config.window)[0] - mu_r**2).clamp_min(0.0).sqrt()
    volumes = [
        _ncc_volume(
            grey,
            (mu_r, sd_r),
            rays,
            c2w,
            _grey(photos[j][0]),
            photos[j][1],
            scene.c2w[j],
            inv_depth,
            config.window,
        )
        for j in neighbours
    ]
    score = torch.stack(volumes).mean(dim=0)  # (K, H, W)
    peak, best = score.max(dim=0)
    # Margin over the best other local peak, away from the chosen one and its neighbours.
    padded = F.pad(score[None, None], (0, 0, 0, 0, 1, 1), value=-2.0)[0, 0]
    local = (score >= padded[:-2]) & (score >= padded[2:])
    planes = torch.arange(score.shape[0])[:, None, None]
    others = torch.where(local & ((planes - best[None]).abs() > 1), score, torch.full_like(score, -1.0))
    margin = peak - others.max(dim=0).values
    own = [v.argmax(dim=0) for v in volumes]
    agree = (own[0] - own[1]).abs() <= config.max_plane_gap
    r = config.window // 2
    inner = torch.zeros(h, w, dtype=torch.bool)
    inner[r : h - r, r : w - r] = True
    keep = (
        inner
        & agree
        & (peak >= config.min_ncc)
        & (margin >= config.min_margin)
        & (sd_r >= config.min_texture)
        # A shift of a few pixels barely changes a smooth patch: the first planes match any
        # pixel whose true match is hidden, so peaks there are not trusted.
        & (disparities[best] >= config.min_disparity)
        & (best < score.shape[0] - 1)  # a peak at the end of the sweep may lie beyond it
    )
    pos = _refine(score, best)
    keep &= _supported(keep, pos, config.max_plane_gap, config.min_support)
    q = torch.from_numpy(np.interp(pos.numpy().ravel(), np.arange(len(inv_depth)), inv_depth.numpy()))
    depth = 1.0 / q.reshape(h, w).double()
    idx = torch.nonzero(keep.ravel()).ravel().numpy()
    if len(idx) > config.max_points_per_photo:  # evenly spread over the photo, deterministically
        idx = idx[np.linspace(0, len(idx) - 1, config.max_points_per_photo).round().astype(int)]
    rays64 = rays.reshape(-1, 3).double().numpy()[idx]
    pts = c2w[:3, 3] + depth.ravel().numpy()[idx, None] * rays64
    # The last plane is never accepted (a peak there may lie beyond the sweep).
    reach = float(c2w[2, 3] + axis[2] / float(inv_depth[-2 if len(inv_depth) > 1 else -1]))
    return pts, rgb.reshape(-1, 3)[idx], peak.ravel().numpy()[idx].astype(np.float32), reach


def triangulate_scene(scene: Scene, config: TriangulateConfig | None = None) -> Triangulation:
    """Measure surface points from the training photos of a posed ``scene`` (any frame, any scale).

    Up to ``config.max_photos`` training photos spread over the survey are each matched against
    their two nearest neighbours (see :func:`pick_neighbours`); photos without two usable
    neighbours are skipped. Deterministic. Raises BirdnerfError for an unreadable photo.
    """
    config = config or TriangulateConfig()
    train = scene.indices("train")
    refs = [train[k] for k in spread_subset(scene.centers[train], config.max_photos)]
    cache: dict = {}
    pts, cols, conf, used, reach = [], [], [], 0, float("inf")
    threads = torch.get_num_threads()
    # The tensors are small (~1M elements): one thread is faster than several fighting for busy
    # cores, and keeps every reduction in one order (deterministic results).
    torch.set_num_threads(1)
    try:
        for ref in refs:
            neighbours = pick_neighbours(scene, ref, train, config)
            if len(neighbours) < 2:
                continue
            p, c, s, r = match_photo(scene, ref, neighbours, config, cache)
            used += 1
            reach = min(reach, r)
            pts.append(p)
            cols.append(c)
            conf.append(s)
    finally:
        torch.set_num_threads(threads)
    if not pts:
        return Triangulation(np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0, np.float32), used)
    return Triangulation(
        np.concatenate(pts), np.concatenate(cols).astype(np.uint8), np.concatenate(conf), used, reach
    )
