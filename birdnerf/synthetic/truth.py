"""Ground truth of a generated dataset: its site, and where its depth maps see more than ground."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np

from birdnerf.errors import BirdnerfError
from birdnerf.scene.camera import Camera
from birdnerf.synthetic.layout import build_site
from birdnerf.synthetic.site import Site, SiteConfig


def load_site(dataset_dir: str | Path) -> Site:
    """Rebuild the site a dataset was rendered from, using its ``sample.json``.

    The site config (options it does not record take their defaults), the seed and the variant
    ("changed" adds the new buildings) give back the same world model, bit for bit.
    """
    path = Path(dataset_dir) / "sample.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        recorded = meta["site"]
        seed, variant = int(meta["seed"]), meta.get("variant", "base")
    except FileNotFoundError:
        raise BirdnerfError("no sample.json: not a generated sample dataset", path.parent) from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise BirdnerfError(f"malformed sample record ({err})", path) from None
    known = {f.name for f in fields(SiteConfig)}
    unknown = sorted(set(recorded) - known)
    if unknown:
        raise BirdnerfError(f"unknown site options {', '.join(unknown)}", path)
    # JSON has no tuples; the config's pairs (e.g. road spacing) come back as lists.
    config = SiteConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items()})
    return build_site(config, seed, changed=variant == "changed")


def world_points(cam: Camera, c2w: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """(H, W, 3) world points (metres) of a z-depth map's pixel centres (``inf`` where sky).

    Args:
        cam: pinhole intrinsics of the photo.
        c2w: (4, 4) camera-to-world, OpenCV axes.
        depth: (H, W) z-depth along the camera's +z axis, metres.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    xn = (np.arange(cam.width) + 0.5 - cam.cx) / cam.fx
    yn = (np.arange(cam.height) + 0.5 - cam.cy) / cam.fy
    rays = np.stack(np.broadcast_arrays(xn[None, :], yn[:, None], 1.0), axis=-1)
    with np.errstate(invalid="ignore"):
        return c2w[:3, 3] + (rays * np.asarray(depth, dtype=np.float64)[..., None]) @ c2w[:3, :3].T


def above_ground_mask(
    site: Site, cam: Camera, c2w: np.ndarray, depth: np.ndarray, min_height_m: float = 0.5
) -> np.ndarray:
    """(H, W) bool: pixels whose surface point is more than ``min_height_m`` above the ground.

    Buildings and trees are True, the terrain (and the sky) False, so depth errors can be
    scored where the surface is not ground.

    Args:
        site: the site the photo was rendered from (see :func:`load_site`).
        cam, c2w: the photo's intrinsics and (4, 4) camera-to-world pose (OpenCV axes).
        depth: (H, W) ground-truth z-depth, metres (``inf``: sky).
        min_height_m: height above the terrain below which a surface counts as ground, metres.
    """
    p = world_points(cam, c2w, depth)
    finite = np.isfinite(np.asarray(depth))
    # Sky pixels have no point; they are looked up at the origin and then dropped.
    x, y = (np.where(finite, p[..., i], 0.0) for i in (0, 1))
    height = np.where(finite, p[..., 2] - site.ground_height(x, y), 0.0)
    return finite & (height > min_height_m)
