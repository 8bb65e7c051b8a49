"""Projection-guided rendering of a novel view from the blocks that own its pixels.

Each pixel's ray is cut by the ground plane; the bird-view point gives blend weights over at
most 2 x 2 blocks, read from a grid index (:class:`birdnerf.composite.blend.BlendIndex`), so the
cost is set by the view, never by the size of the site. Depth-guided assignment is per pixel: the
surface point ``o + depth * d`` of a pixel that hits something is projected to bird view, and that
pixel's weights are the weights there. A pixel's owner therefore changes only where its surface
point crosses a core edge, whatever its neighbours do: seams are stable along a camera path.

Blending is alpha-aware: a block counts in proportion to its blend weight times its own opacity
along the ray, renormalised, so a block that sees nothing along a ray (the ray leaves its box,
or crosses only its empty space) never darkens or flattens the pixel.

Two paths render the same composite:

- **fast** (default): no autograd, the blocks' compiled fields, occupancy skipping and early
  termination, blend weights trimmed by :data:`FAST_MIN_WEIGHT` (continuously, see
  :func:`trimmed_weights`), and the first pass's surface reused: a block
  that gains a pixel in the depth-guided pass starts marching a margin before the depth the
  pixel's first blocks rendered (:func:`birdnerf.composite.infer.render_block`).
- **reference**: the same two passes with the blocks' own
  :meth:`~birdnerf.block.model.BlockModel.render_eval`: every pixel renders from the blocks under
  its ground point; the blended depth re-assigns pixels, and blocks render the pixels they gained
  marching from their box's entry.

Frames are rendered in bands of rows of at most ``tile_pixels`` pixels, so memory is bounded
whatever the frame size. Where a band's rays come from is pluggable
(:mod:`birdnerf.composite.rays`): :func:`render_view` renders a photo-like camera,
:func:`render_rays_view` any ray source, e.g. the vertical rays of an orthophoto.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from birdnerf.composite.blend import SLOTS, BlendIndex, SparseWeights
from birdnerf.composite.cache import BlockCache
from birdnerf.composite.infer import render_block
from birdnerf.composite.rays import PinholeRays, RaySource
from birdnerf.partition.footprint import ground_points
from birdnerf.partition.manifest import Partition
from birdnerf.scene.camera import Camera, camera_rays, pixel_centers
from birdnerf.torch_globals import keep_torch_globals

MIN_WEIGHT = 1e-6
FAST_MIN_WEIGHT = 0.05
"""The fast path's blend weights are each less this, clipped and renormalised: a block stops
rendering a pixel where its weight falls to 5 %, which saves its field pass over the outer 14 % of
the blend band on either side. Weights stay continuous (no seam). Chosen on the hills scene of
seeds 0 and 1 (held-out PSNR 0.011 and 0.012 dB lower than with 0.1 %, fly-over about 15 %
faster, fast against reference parity >= 46 dB; 0.1 gained a few per cent more for about twice
the PSNR loss) and checked on the test suite's mini survey (parity >= 60 dB)."""
HIT_OPACITY = 0.5
"""A ray whose opacity reaches this has a surface point (its depth) to assign it by."""
ALPHA_EPS = 1e-6


@dataclass
class ViewRender:
    """A rendered view.

    Attributes:
        rgb: (H, W, 3) colours in [0, 1].
        depth: (H, W) z-depth along the camera's optical axis, metres.
        opacity: (H, W) accumulated opacity.
        block_map: (H, W) index into ``partition.blocks`` of the block with the largest blend
            weight at the pixel's surface point (its ground point where the ray hits nothing).
        blocks: ids of the blocks that rendered any pixel.
        reassigned: pixels whose owning block differs from the one under their ground point.
        weights: weight (H, W) of each block in ``blocks``: ``rgb`` is the sum over blocks of
            weight x the block's (opacity-premultiplied) colour. The weights follow from blend
            weights and opacities, which appearance codes do not change, so they hold for any
            codes (see :mod:`birdnerf.eval.appearance`).
    """

    rgb: Tensor
    depth: Tensor
    opacity: Tensor
    block_map: Tensor
    blocks: list[str]
    reassigned: int
    weights: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class _Slots:
    """Per pixel of a band and per blend slot: what that slot's block rendered there."""

    weights: SparseWeights
    rgb: Tensor  # (N, SLOTS, 3), opacity-premultiplied
    dist: Tensor  # (N, SLOTS) distance along the ray
    opacity: Tensor  # (N, SLOTS)
    first_hit: Tensor  # (N, SLOTS), inf where the ray meets nothing
    done: Tensor | None = None  # (N, SLOTS) slots already rendered, when some were reused

    @classmethod
    def empty(cls, weights: SparseWeights) -> _Slots:
        n, like = weights.index.shape[0], weights.weight
        return cls(
            weights,
            like.new_zeros(n, SLOTS, 3),
            like.new_zeros(n, SLOTS),
            like.new_zeros(n, SLOTS),
            like.new_full((n, SLOTS), math.inf),
        )


@dataclass
class _Blend:
    """Blended outputs of a band's pixels (N), and each slot's effective weight (N, SLOTS)."""

    rgb: Tensor
    dist: Tensor
    opacity: Tensor
    effective: Tensor


def blend_slots(slots: _Slots) -> _Blend:
    """Alpha-aware blend: slot weights ``w_b o_b / sum(w o)``; plain ``w_b`` where nothing is opaque.

    The colour is the opacity-weighted mean of the blocks' own colours, times the blended
    opacity; depth is the opacity-weighted mean distance.
    """
    w = slots.weights.weight
    wo = w * slots.opacity
    total = wo.sum(dim=1, keepdim=True)
    seen = total > ALPHA_EPS
    share = torch.where(seen, wo / total.clamp_min(ALPHA_EPS), w)  # weight of each block's surface
    opacity = (share * slots.opacity).sum(dim=1)
    # rgb = sum_b share_b * (rgb_b / o_b) * opacity = sum_b w_b rgb_b * opacity / total
    effective = torch.where(seen, w * (opacity[:, None] / total.clamp_min(ALPHA_EPS)), w)
    rgb = (effective[:, :, None] * slots.rgb).sum(dim=1)
    dist = (share * slots.dist).sum(dim=1)
    return _Blend(rgb, dist, opacity, effective)


@dataclass
class _Band:
    """One band of rows: its rays, and (fast path) where the first thing along them was met."""

    origins: Tensor
    dirs: Tensor
    t_start: Tensor | None = None


class _Frame:
    """Render context of one view: partition, index, cache, codes, device, options."""

    def __init__(self, partition, index, cache, appearance, device, min_weight):
        self.partition, self.index, self.cache = partition, index, cache
        self.codes = appearance or {}
        self.device = device
        self.min_weight = min_weight
        self.used: set[int] = set()

    def fill(self, slots: _Slots, band: _Band, *, fast: bool, first_hit: bool = False, todo=None) -> None:
        """Render, for every block, the band's pixels where it has a weight (and ``todo`` is set)."""
        w = slots.weights
        for b in w.blocks():
            hit = (w.index == b) & (w.weight > 0)
            if todo is not None:
                hit &= todo
            rows, slot = torch.nonzero(hit, as_tuple=True)
            if rows.numel() == 0:
                continue
            block = self.partition.blocks[b]
            model = self.cache.get(block)
            code = self.codes.get(block.id)
            o, d = band.origins[rows], band.dirs[rows]
            if fast:
                t0 = None if band.t_start is None else band.t_start[rows]
                out = render_block(model, o, d, appearance=code, t_start=t0, first_hit=first_hit)
            else:
                out = model.render_eval(o, d, appearance=code)
            slots.rgb[rows, slot] = out.rgb.to(slots.rgb.dtype)
            slots.dist[rows, slot] = out.depth.to(slots.dist.dtype)
            slots.opacity[rows, slot] = out.opacity.to(slots.opacity.dtype)
            if out.first_hit is not None:
                slots.first_hit[rows, slot] = out.first_hit.to(slots.first_hit.dtype)
            self.used.add(b)

    def weights_at(self, points: Tensor) -> SparseWeights:
        return trimmed_weights(self.index, points, self.min_weight)


def trimmed_weights(index: BlendIndex, points: Tensor, min_weight: float) -> SparseWeights:
    """Blend weights at bird-view ``points`` (N, 2), each less ``min_weight``, clipped at zero and
    renormalised: a block's weight reaches zero where it falls to ``min_weight``, so slivers are
    dropped and the weights stay continuous (no seam where a block stops rendering). They remain
    a partition of unity for ``min_weight`` below ``1 / SLOTS``."""
    w = index.weights(points)
    weight = (w.weight - min_weight).clamp_min(0.0)
    weight = weight / weight.sum(dim=1, keepdim=True)
    return SparseWeights(torch.where(weight > 0, w.index, torch.full_like(w.index, -1)), weight)


def _surface_points(band: _Band, dist: Tensor, opacity: Tensor, ground_z: float) -> Tensor:
    """Bird-view surface point of each ray: ``o + dist d`` where it hits, else its ground point."""
    ground = ground_points(band.origins, band.dirs, ground_z)
    surface = band.origins[:, :2] + band.dirs[:, :2] * dist[:, None]
    return torch.where((opacity > HIT_OPACITY)[:, None], surface, ground.to(surface.dtype))


def render_view(
    partition: Partition,
    cache: BlockCache,
    cam: Camera,
    c2w: np.ndarray,
    *,
    depth_guided: bool = True,
    blend_fraction: float = 0.5,
    appearance: dict[str, Tensor] | None = None,
    fast: bool = True,
    tile_pixels: int = 1 << 16,
    index: BlendIndex | None = None,
) -> ViewRender:
    """Render camera (``cam``, ``c2w`` OpenCV camera-to-world in the run's frame) from the blocks.

    Args:
        depth_guided: assign pixels by their surface point (else by their ground point).
        blend_fraction: blend half-width as a fraction of the overlap.
        appearance: block id -> appearance code (A,) for that block's rays (e.g. codes fitted to
            a held-out photo); blocks not in it use the mean of their photos' codes. The cached
            models are not changed.
        fast: the fast inference path (see the module's docstring); False: the reference path.
        tile_pixels: pixels rendered at once (whole rows; at least one row).
        index: the partition's :class:`BlendIndex` (built here when None).
    """
    return render_rays_view(
        partition,
        cache,
        PinholeRays(cam, np.asarray(c2w)),
        depth_guided=depth_guided,
        blend_fraction=blend_fraction,
        appearance=appearance,
        fast=fast,
        tile_pixels=tile_pixels,
        index=index,
    )


@torch.no_grad()
@keep_torch_globals()
def render_rays_view(
    partition: Partition,
    cache: BlockCache,
    source: RaySource,
    *,
    depth_guided: bool = True,
    blend_fraction: float = 0.5,
    appearance: dict[str, Tensor] | None = None,
    fast: bool = True,
    tile_pixels: int = 1 << 16,
    index: BlendIndex | None = None,
) -> ViewRender:
    """Render the rays of ``source`` (a photo-like camera, an orthographic raster ...) from the
    blocks; ``depth`` is measured along ``source.depth_axis()``. Options as in :func:`render_view`.
    """
    device = cache.device
    index = index or BlendIndex(partition, blend_fraction)
    frame = _Frame(partition, index, cache, appearance, device, FAST_MIN_WEIGHT if fast else MIN_WEIGHT)
    ground_z = float(partition.frame["ground_z"])
    h, w = source.height, source.width
    rgb, dist = torch.zeros(h * w, 3, device=device), torch.zeros(h * w, device=device)  # dist: z-depth
    opacity = torch.zeros(h * w, device=device)
    owner = torch.zeros(h * w, dtype=torch.long, device=device)
    effective: dict[int, Tensor] = {}
    reassigned = 0
    forward = source.depth_axis().float().to(device)
    band_rows = max(1, tile_pixels // w)
    for r0 in range(0, h, band_rows):
        n_rows = min(band_rows, h - r0)
        band = _Band(*source.band(r0, n_rows, device))
        ground_w = frame.weights_at(ground_points(band.origins, band.dirs, ground_z))
        slots = _Slots.empty(ground_w)
        frame.fill(slots, band, fast=fast)
        if depth_guided:
            first = blend_slots(slots)
            surface = _surface_points(band, first.dist, first.opacity, ground_z)
            guided = _Slots.empty(frame.weights_at(surface))
            _reuse(slots, guided)
            # Blocks new to a pixel start marching just before the surface its first blocks saw
            # (the first pass's depth less its spread: a few steps before the first hit).
            band.t_start = first.dist if fast else None
            frame.fill(guided, band, fast=fast, todo=~guided.done)
            slots = guided
        blend = blend_slots(slots)
        lo, hi = r0 * w, (r0 + n_rows) * w
        rgb[lo:hi], dist[lo:hi], opacity[lo:hi] = blend.rgb, blend.dist * (band.dirs @ forward), blend.opacity
        owner[lo:hi] = slots.weights.owner()
        reassigned += int((owner[lo:hi] != ground_w.owner()).sum())
        for s in range(SLOTS):
            idx = slots.weights.index[:, s]
            for b in idx[idx >= 0].unique().tolist():
                dense = effective.setdefault(b, torch.zeros(h * w, device=device))
                dense[lo:hi] += torch.where(idx == b, blend.effective[:, s], 0.0)
    used = sorted(frame.used)
    # The images come back on the CPU whatever device the blocks ran on.
    return ViewRender(
        rgb=rgb.clamp(0, 1).reshape(h, w, 3).cpu(),
        depth=dist.reshape(h, w).cpu(),
        opacity=opacity.reshape(h, w).cpu(),
        block_map=owner.reshape(h, w).cpu(),
        blocks=[partition.blocks[b].id for b in used],
        reassigned=reassigned,
        weights={partition.blocks[b].id: effective[b].reshape(h, w).cpu() for b in used if b in effective},
    )


def _reuse(first: _Slots, guided: _Slots) -> None:
    """Copy into ``guided`` what ``first`` already rendered for the same (pixel, block)."""
    guided.done = torch.zeros_like(guided.weights.index, dtype=torch.bool)
    for s in range(SLOTS):
        for t in range(SLOTS):
            block = guided.weights.index[:, s]
            same = (block == first.weights.index[:, t]) & (block >= 0) & (first.weights.weight[:, t] > 0)
            if same.any():
                guided.rgb[same, s] = first.rgb[same, t]
                guided.dist[same, s] = first.dist[same, t]
                guided.opacity[same, s] = first.opacity[same, t]
                guided.done[same, s] = True


def visible_blocks(partition: Partition, cam: Camera, c2w: np.ndarray, fraction: float = 0.5) -> list[str]:
    """Ids of the blocks that have a non-zero weight at some pixel's ground point (every 4th)."""
    o, d = camera_rays(cam, torch.from_numpy(c2w), pixel_centers(cam, torch.float64)[::4, ::4])
    ground = ground_points(o, d, partition.frame["ground_z"]).reshape(-1, 2)
    w = BlendIndex(partition, fraction).weights(ground)
    return [partition.blocks[b].id for b in w.blocks()]
