"""The exact orthophoto and DSM of a generated sample site, for scoring the rendered ones.

Vertical rays are cast through the generator's own world model (terrain, boxes, spheroids) and
the hits shaded by its own shading (:func:`birdnerf.synthetic.texture.shade`, the sunlit colour
the photos were rendered with, before any per-photo exposure).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from birdnerf.composite.rays import OrthoRays
from birdnerf.synthetic.raycast import intersect_object
from birdnerf.synthetic.site import GROUND, Site
from birdnerf.synthetic.texture import shade


@dataclass
class TrueOrtho:
    """The site seen straight down over a raster.

    Attributes:
        height: (H, W) world z of the first surface, metres.
        ground: (H, W) world z of the terrain under each cell, metres.
        hit: (H, W) int64 object index of the surface, or ``GROUND``.
        rgb: (H, W, 3) float colour in [0, 1].
    """

    height: np.ndarray
    ground: np.ndarray
    hit: np.ndarray
    rgb: np.ndarray


def true_ortho(site: Site, rays: OrthoRays, world_to_site: np.ndarray | None = None) -> TrueOrtho:
    """Cast ``rays``' vertical rays through ``site``.

    Args:
        site: the generator's world model (:func:`birdnerf.synthetic.truth.load_site`).
        rays: the raster (its ``z_top`` must be above every object).
        world_to_site: (4, 4) from the run's world frame to the site's frame, a translation along
            z at most (the generated datasets are in the site's frame: identity).
    """
    shift = np.zeros(3) if world_to_site is None else np.asarray(world_to_site)[:3, 3]
    if world_to_site is not None and not np.allclose(np.asarray(world_to_site)[:3, :3], np.eye(3)):
        raise ValueError("the run's frame is rotated from the site's: vertical rays would not stay vertical")
    xy = rays.cell_centers(0, rays.height).numpy() + shift[:2]
    h, w = rays.height, rays.width
    x, y = xy[:, 0].reshape(h, w), xy[:, 1].reshape(h, w)
    ground = site.ground_height(x, y)
    height, hit = ground.copy(), np.full((h, w), GROUND, dtype=np.int64)
    z_top = max(rays.z_top + shift[2], site.max_height + 1.0)
    lower, upper = site.objects.bounds() if len(site.objects) else (np.zeros((0, 3)), np.zeros((0, 3)))
    for k in site.index.query(float(x.min()), float(y.min()), float(x.max()), float(y.max())):
        c0 = max(0, int(np.floor((lower[k, 0] - x[0, 0]) / rays.gsd)))
        c1 = min(w, int(np.ceil((upper[k, 0] - x[0, 0]) / rays.gsd)) + 1)
        r0 = max(0, int(np.floor((y[0, 0] - upper[k, 1]) / rays.gsd)))
        r1 = min(h, int(np.ceil((y[0, 0] - lower[k, 1]) / rays.gsd)) + 1)
        if c1 <= c0 or r1 <= r0:
            continue
        win = (slice(r0, r1), slice(c0, c1))
        o = np.stack([x[win], y[win], np.full(x[win].shape, z_top)])
        d = np.zeros_like(o)
        d[2] = -1.0
        z = z_top - intersect_object(site.objects, int(k), o, d)
        higher = z > height[win]
        height[win] = np.where(higher, z, height[win])
        hit[win] = np.where(higher, k, hit[win])
    # shade() reads only the hit points origin + dirs * t: pass the points themselves as "dirs".
    points = np.stack([x, y, height])
    rgb = shade(site, np.zeros(3), points, np.ones((h, w)), hit)
    return TrueOrtho(height - shift[2], ground - shift[2], hit, np.clip(rgb, 0.0, 1.0))
