"""Rendering rays of one block at inference: no autograd, the block's own field backend (compiled
on CPU), occupancy skipping and marching in one C++ pass (:mod:`birdnerf.render.fast`), early ray
termination, and marching that starts near a known surface.

:meth:`birdnerf.block.model.BlockModel.render_eval` is the reference twin of :func:`render_block`
with ``t_start`` None: same samples, same field calls.
"""

from __future__ import annotations

import torch
from torch import Tensor

from birdnerf.block.model import BlockModel
from birdnerf.render import ray_aabb
from birdnerf.render.fast import render_rays_fast
from birdnerf.render.volume import RenderOutput

FIRST_HIT_OPACITY = 1e-3
"""Opacity at which a ray is said to reach the first thing it sees (see :func:`render_block`)."""


@torch.no_grad()
def render_block(
    model: BlockModel,
    origins: Tensor,
    dirs: Tensor,
    *,
    appearance: Tensor | None = None,
    t_start: Tensor | None = None,
    margin_steps: float = 32.0,
    first_hit: bool = False,
    hit_opacity: float = FIRST_HIT_OPACITY,
    chunk: int = 1 << 13,
    samples_per_round: int = 64,
) -> RenderOutput:
    """Render rays (N, 3) of ``model`` (world frame, unit directions); depth is the distance.

    Args:
        appearance: (A,) code of every ray; None: the mean of the block's photo codes.
        t_start: (N,) distance where the first thing along each ray is expected (``inf`` where
            nothing is known); marching starts ``margin_steps`` marching steps before it, so the
            empty or barely visible space in front is never sampled.
        first_hit: also return where each ray's opacity first reaches ``hit_opacity`` (default
            :data:`FIRST_HIT_OPACITY`: the first thing the ray sees; 0.5: its median depth).
        chunk: rays per field round trip (bounds the memory of a call).
        samples_per_round: see :func:`birdnerf.render.render_rays`.
    """
    parts: list[RenderOutput] = []
    margin = margin_steps * model.step_size
    for lo in range(0, origins.shape[0], chunk):
        o, d = origins[lo : lo + chunk], dirs[lo : lo + chunk]
        t_near, t_far, _ = ray_aabb(o, d, model.box)
        if t_start is not None:
            # Start on the reference's step grid (anchored at the box entry), so the samples kept
            # are exactly the reference's: shifting them by a fraction of a step would change
            # the quadrature of semi-transparent surfaces by more than the parity allows.
            skip = ((t_start[lo : lo + chunk] - margin - t_near) / model.step_size).floor().clamp_min(0)
            skip = torch.where(torch.isfinite(skip), skip, torch.zeros_like(skip))
            t_near = torch.minimum(t_near + skip * model.step_size, t_far)

        def field(points: Tensor, sample_dirs: Tensor) -> tuple[Tensor, Tensor]:
            return model.query(points, sample_dirs, None, appearance)

        parts.append(
            render_rays_fast(
                o,
                d,
                t_near,
                t_far,
                field,
                model.step_size,
                model.grid,
                samples_per_round=samples_per_round,
                early_stop_eps=model.render_config.early_stop_eps,
                first_hit_opacity=hit_opacity if first_hit else None,
            )
        )
    if not parts:
        empty = origins.new_zeros(0)
        return RenderOutput(origins.new_zeros(0, 3), empty, empty, first_hit=empty if first_hit else None)
    return RenderOutput(
        torch.cat([p.rgb for p in parts]),
        torch.cat([p.opacity for p in parts]),
        torch.cat([p.depth for p in parts]),
        first_hit=torch.cat([p.first_hit for p in parts]) if first_hit else None,
    )
