"""Volume rendering over packed samples, its regularisers, and dense reference versions.

Packed layout (as produced by :func:`birdnerf.render.march_rays`): S samples in flat tensors,
grouped by ray (``ray_indices`` non-decreasing) and sorted by ``t`` within each ray. For sample
``i`` with interval ``[t_start_i, t_end_i]`` and density ``σ_i`` (1/m):

    δ_i = t_end_i - t_start_i,   α_i = 1 - exp(-σ_i δ_i),
    T_i = Π_{j<i} (1 - α_j) = exp(-Σ_{j<i} σ_j δ_j),   w_i = T_i α_i,

products and sums running over the earlier samples of the same ray. A ray's colour is
``Σ_i w_i c_i``, its opacity ``Σ_i w_i``. Every function is differentiable and follows the
device of its inputs. The ``*_dense`` twins take padded (N, L) tensors and compute the same
quantities the plain way; the tests compare both, values and gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from birdnerf.render.occupancy import OccupancyGrid
from birdnerf.render.sampling import PackedSamples, march_rays

RgbSigmaFn = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


def exclusive_sum_per_ray(values: Tensor, ray_indices: Tensor) -> Tensor:
    """``out_i = Σ_{j<i, same ray} values_j`` for packed samples (S,) -> (S,).

    One global prefix sum minus its value at each ray's first sample. The sum runs in float64
    (except on MPS, which lacks it) so that subtracting large prefixes of long batches keeps
    per-ray precision.
    """
    if values.numel() == 0:
        return values.clone()
    acc = torch.float64 if values.device.type != "mps" else values.dtype
    wide = values.to(acc)
    exclusive = torch.cumsum(wide, dim=0) - wide
    is_first = torch.ones_like(ray_indices, dtype=torch.bool)
    is_first[1:] = ray_indices[1:] != ray_indices[:-1]
    segment = torch.cumsum(is_first.long(), dim=0) - 1
    return (exclusive - exclusive[is_first][segment]).to(values.dtype)


def render_weights(
    sigmas: Tensor, t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor
) -> tuple[Tensor, Tensor]:
    """Compositing weights ``w_i = T_i α_i`` and transmittance ``T_i`` of packed samples.

    Args:
        sigmas: (S,) densities σ, 1/m (any non-negative activation output).
        t_starts: (S,) interval starts along the ray (``t`` units, metres for unit directions).
        t_ends: (S,) interval ends.
        ray_indices: (S,) int64, non-decreasing ray index of each sample.

    Returns:
        ``weights`` (S,) and ``transmittance`` (S,), the light reaching the start of each sample.

    Example:
        >>> w, T = render_weights(sigmas, s.t_starts, s.t_ends, s.ray_indices)
        >>> rgb = accumulate_along_rays(w, rgbs, s.ray_indices, n_rays)  # (n_rays, 3)
    """
    optical = sigmas * (t_ends - t_starts)
    transmittance = torch.exp(-exclusive_sum_per_ray(optical, ray_indices))
    alphas = -torch.expm1(-optical)
    return transmittance * alphas, transmittance


def render_weights_dense(sigmas: Tensor, t_starts: Tensor, t_ends: Tensor) -> tuple[Tensor, Tensor]:
    """Reference twin of :func:`render_weights` for padded rays: (N, L) inputs, (N, L) outputs.

    Uses the product form ``T_i = Π_{j<i} (1 - α_j)``; pad with zero-length intervals.
    """
    alphas = 1.0 - torch.exp(-sigmas * (t_ends - t_starts))
    ones = torch.ones_like(alphas[:, :1])
    transmittance = torch.cumprod(torch.cat([ones, 1.0 - alphas[:, :-1]], dim=1), dim=1)
    return transmittance * alphas, transmittance


def accumulate_along_rays(weights: Tensor, values: Tensor | None, ray_indices: Tensor, n_rays: int) -> Tensor:
    """Per-ray weighted sums ``Σ_i w_i v_i`` of packed samples.

    Args:
        weights: (S,) compositing weights.
        values: (S,) or (S, C) per-sample values (colour, ``t`` for depth, ...); None sums the
            weights alone (the opacity).
        ray_indices: (S,) ray of each sample.
        n_rays: number of rays N.

    Returns:
        (N,) for values (S,) or None, (N, C) for values (S, C); zero for rays without samples.
    """
    if values is None:
        src = weights
    else:
        src = weights * values if values.dim() == 1 else weights[:, None] * values
    out = src.new_zeros((n_rays, *src.shape[1:]))
    return out.index_add(0, ray_indices, src)


def composite_background(rgb: Tensor, opacity: Tensor, background: Tensor | None) -> Tensor:
    """``rgb + (1 - opacity) * background``: rgb (N, 3), opacity (N,), background (3,) or (N, 3)."""
    if background is None:
        return rgb
    return rgb + (1.0 - opacity)[:, None] * background.to(rgb)


class RenderOutput(NamedTuple):
    """Rendered rays. N rays, S samples.

    Attributes:
        rgb: (N, 3) colour, with the background composited when one was given.
        opacity: (N,) accumulated opacity ``Σ w_i`` in [0, 1].
        depth: (N,) expected distance along the ray ``Σ w_i t_mid_i / Σ w_i`` (``t`` units, not
            camera z), 0 for rays without opacity.
        weights: (S,) per-sample weights (None from :func:`render_rays`).
        transmittance: (S,) per-sample transmittance (None from :func:`render_rays`).
        first_hit: (N,) where each ray's opacity first reaches ``first_hit_opacity`` (the start
            of that sample's interval; ``inf`` for rays that never do), when
            :func:`render_rays` was asked for it.
    """

    rgb: Tensor
    opacity: Tensor
    depth: Tensor
    weights: Tensor | None = None
    transmittance: Tensor | None = None
    first_hit: Tensor | None = None


def volume_render(
    sigmas: Tensor,
    rgbs: Tensor,
    t_starts: Tensor,
    t_ends: Tensor,
    ray_indices: Tensor,
    n_rays: int,
    background: Tensor | None = None,
) -> RenderOutput:
    """Render packed samples: sigmas (S,), rgbs (S, 3) -> :class:`RenderOutput` of N = n_rays."""
    weights, transmittance = render_weights(sigmas, t_starts, t_ends, ray_indices)
    opacity = accumulate_along_rays(weights, None, ray_indices, n_rays)
    rgb = accumulate_along_rays(weights, rgbs, ray_indices, n_rays)
    depth_sum = accumulate_along_rays(weights, 0.5 * (t_starts + t_ends), ray_indices, n_rays)
    depth = depth_sum / opacity.clamp_min(1e-10)
    rgb = composite_background(rgb, opacity, background)
    return RenderOutput(rgb, opacity, depth, weights, transmittance)


def distortion_loss(
    weights: Tensor, t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor, n_rays: int
) -> Tensor:
    """Mip-NeRF 360 distortion loss per ray, in O(S) with prefix sums.

    ``L = Σ_{i,j} w_i w_j |m_i - m_j| + (1/3) Σ_i w_i² δ_i`` with midpoints ``m_i`` and lengths
    ``δ_i``. For samples sorted by ``t`` the pair term is ``2 Σ_i w_i (m_i W_{<i} - (wm)_{<i})``,
    where ``W_{<i} = Σ_{j<i} w_j`` and ``(wm)_{<i} = Σ_{j<i} w_j m_j`` within the ray.

    The loss has the units of ``t``; pass ``t`` divided by a scene scale (e.g. the box diagonal)
    for a weight that does not depend on the block's size.

    Returns:
        (n_rays,) loss of each ray; zero for rays without samples. Take ``.mean()`` for a scalar.
    """
    mid = 0.5 * (t_starts + t_ends)
    w_before = exclusive_sum_per_ray(weights, ray_indices)
    wm_before = exclusive_sum_per_ray(weights * mid, ray_indices)
    per_sample = 2.0 * weights * (mid * w_before - wm_before) + weights**2 * (t_ends - t_starts) / 3.0
    return per_sample.new_zeros(n_rays).index_add(0, ray_indices, per_sample)


def distortion_loss_dense(weights: Tensor, t_starts: Tensor, t_ends: Tensor) -> Tensor:
    """Reference twin of :func:`distortion_loss`: (N, L) padded inputs (zero weights), (N,) loss."""
    mid = 0.5 * (t_starts + t_ends)
    pairs = weights[:, :, None] * weights[:, None, :] * (mid[:, :, None] - mid[:, None, :]).abs()
    return pairs.sum(dim=(1, 2)) + (weights**2 * (t_ends - t_starts)).sum(dim=1) / 3.0


def opacity_entropy_loss(opacity: Tensor, eps: float = 1e-6) -> Tensor:
    """Mean binary entropy ``-(o log o + (1 - o) log(1 - o))`` of ray opacities (N,): pushes each
    ray to be fully opaque or fully empty (aerial views see ground everywhere: mostly opaque)."""
    o = opacity.clamp(eps, 1.0 - eps)
    return -(o * torch.log(o) + (1.0 - o) * torch.log1p(-o)).mean()


def sparsity_loss(sigmas: Tensor, scale: float = 0.5) -> Tensor:
    """Cauchy sparsity penalty ``mean(log(1 + σ² / scale))`` on sample densities (S,) (SNeRG):
    discourages floaters in free space; apply to samples drawn at random points of the box."""
    return torch.log1p(sigmas**2 / scale).mean()


def termination_mask(transmittance: Tensor, early_stop_eps: float = 1e-4) -> Tensor:
    """(S,) bool: samples still reached by at least ``early_stop_eps`` of the light.

    Kept samples form a prefix of each ray, so their weights are unchanged by dropping the rest.
    Two-pass use: evaluate σ only, :func:`render_weights`, then evaluate colour on the masked
    samples only and accumulate ``weights[mask]``. :func:`render_rays` saves the σ evaluations too.
    """
    return transmittance >= early_stop_eps


@torch.no_grad()
def render_rays(
    origins: Tensor,
    dirs: Tensor,
    t_near: Tensor,
    t_far: Tensor,
    rgb_sigma_fn: RgbSigmaFn,
    step_size: float,
    grid: OccupancyGrid | None = None,
    *,
    cone_angle: float = 0.0,
    max_step_size: float = math.inf,
    samples_per_round: int = 64,
    early_stop_eps: float = 1e-4,
    background: Tensor | None = None,
    first_hit_opacity: float | None = None,
    window_steps: int | None = None,
) -> RenderOutput:
    """Evaluation rendering with early ray termination (no gradients).

    Marches every live ray ``samples_per_round`` occupied samples at a time (deterministic
    samples, as ``march_rays(..., stratified=False)``), renders them on top of what the ray has
    gathered so far (``w_i = exp(-τ) T_i α_i`` with ``τ`` the optical depth of earlier rounds), and
    continues only rays that have not reached ``t_far`` and still transmit ``exp(-τ) >=
    early_stop_eps``. Up to the dropped light (< ``early_stop_eps`` a ray), the result equals
    :func:`volume_render` of the full march; the field is not evaluated behind opaque surfaces.

    Args:
        origins, dirs, t_near, t_far, step_size, grid, cone_angle, max_step_size: as for
            :func:`birdnerf.render.march_rays`.
        rgb_sigma_fn: ``(t_starts (S,), t_ends (S,), ray_indices (S,)) -> (rgbs (S, 3), sigmas (S,))``,
            with ``ray_indices`` indexing the rows of ``origins``/``dirs`` given here.
        samples_per_round: samples per ray and round; larger rounds mean fewer, bigger field calls.
        early_stop_eps: transmittance below which a ray stops.
        background: (3,) or (N, 3) colour behind the rays, or None.
        first_hit_opacity: if given, also find where each ray's opacity first reaches it
            (``RenderOutput.first_hit``): where a surface, or the first thing before it, begins.
        window_steps: march at most this many steps of each ray per round (uniform steps only).
            The samples are the same (rounds resume on the step grid), but a round no longer
            walks every step to ``t_far`` when the ray will stop long before it.

    Returns:
        :class:`RenderOutput` with ``weights`` and ``transmittance`` None.
    """

    def march_round(active: Tensor, t_cur: Tensor) -> Round:
        t_end = t_far[active]
        if window_steps is not None and cone_angle == 0.0:
            t_end = torch.minimum(t_end, t_cur + window_steps * step_size)
        marched = march_rays(
            origins[active],
            dirs[active],
            t_cur,
            t_end,
            step_size,
            grid,
            cone_angle=cone_angle,
            max_step_size=max_step_size,
            max_samples_per_ray=samples_per_round,
        )
        rays = active[marched.ray_indices]
        if rays.numel() == 0:
            return Round(marched, rays, None, None)
        return Round(marched, rays, *rgb_sigma_fn(marched.t_starts, marched.t_ends, rays))

    return render_in_rounds(march_round, t_near, t_far, early_stop_eps, background, first_hit_opacity)


class Round(NamedTuple):
    """One round of :func:`render_in_rounds`: the samples of the live rays and their field values."""

    marched: PackedSamples
    """Samples of the live rays; ``ray_indices`` index the live rays, ``t_resume`` one per live ray."""
    rays: Tensor
    """(S,) ray of each sample among all rays."""
    rgbs: Tensor | None
    """(S, 3) colours (None when there are no samples)."""
    sigmas: Tensor | None
    """(S,) or (S, 1) densities."""


def render_in_rounds(
    march_round: Callable[[Tensor, Tensor], Round],
    t_near: Tensor,
    t_far: Tensor,
    early_stop_eps: float,
    background: Tensor | None,
    first_hit_opacity: float | None,
    gather: type[Gathered] | None = None,
) -> RenderOutput:
    """The rounds of :func:`render_rays`: ``march_round(live rays (M,), their t (M,))`` marches and
    evaluates a round; rays stop at ``t_far`` or once their transmittance is under
    ``early_stop_eps``. ``gather``: what renders each round behind the earlier ones
    (:class:`Gathered`, or a subclass with a faster ``add``)."""
    gathered = (gather or Gathered).empty(t_near, first_hit_opacity is not None)
    t_cur = t_near.clone()
    active = torch.nonzero(t_far > t_near).squeeze(1)
    while active.numel() > 0:
        step = march_round(active, t_cur[active])
        if step.rays.numel() > 0:
            sigmas = step.sigmas.reshape(-1).to(t_near.dtype)
            gathered.add(step.marched, step.rays, step.rgbs, sigmas, first_hit_opacity)
        t_cur[active] = step.marched.t_resume
        alive = (step.marched.t_resume < t_far[active]) & (
            torch.exp(-gathered.optical[active]) >= early_stop_eps
        )
        active = active[alive]
    rgb, opacity = gathered.rgb, gathered.opacity
    depth = gathered.depth_sum / opacity.clamp_min(1e-10)
    return RenderOutput(
        composite_background(rgb, opacity, background), opacity, depth, first_hit=gathered.first_hit
    )


class Gathered(NamedTuple):
    """What the rounds of :func:`render_rays` have gathered per ray (N rays), added to in place."""

    rgb: Tensor
    """(N, 3) weighted colour."""
    opacity: Tensor
    """(N,) sum of weights."""
    depth_sum: Tensor
    """(N,) weighted distance of the samples' midpoints."""
    optical: Tensor
    """(N,) optical depth ``τ`` marched so far."""
    first_hit: Tensor | None
    """(N,) where opacity first reached ``first_hit_opacity`` (inf: not yet), when asked for."""

    @classmethod
    def empty(cls, t_near: Tensor, first_hit: bool) -> Gathered:
        n_rays = t_near.shape[0]
        return cls(
            t_near.new_zeros(n_rays, 3),
            t_near.new_zeros(n_rays),
            t_near.new_zeros(n_rays),
            t_near.new_zeros(n_rays),
            t_near.new_full((n_rays,), math.inf) if first_hit else None,
        )

    def add(
        self,
        marched: PackedSamples,
        rays: Tensor,
        rgbs: Tensor,
        sigmas: Tensor,
        first_hit_opacity: float | None,
    ) -> None:
        """Render one round's samples (of rays ``rays``, (S,)) behind what the rays gathered before."""
        weights, _ = render_weights(sigmas, marched.t_starts, marched.t_ends, marched.ray_indices)
        weights = weights * torch.exp(-self.optical[rays])
        self.opacity.index_add_(0, rays, weights)
        self.rgb.index_add_(0, rays, weights[:, None] * rgbs.to(self.rgb.dtype))
        self.depth_sum.index_add_(0, rays, weights * 0.5 * (marched.t_starts + marched.t_ends))
        if self.first_hit is not None and first_hit_opacity is not None:
            # Optical depth at each sample's end: earlier rounds + this round up to it.
            step = sigmas * (marched.t_ends - marched.t_starts)
            after = self.optical[rays] + exclusive_sum_per_ray(step, marched.ray_indices) + step
            reached = after >= -math.log1p(-first_hit_opacity)
            self.first_hit.scatter_reduce_(0, rays[reached], marched.t_starts[reached], reduce="amin")
        self.optical.index_add_(0, rays, sigmas * (marched.t_ends - marched.t_starts))
