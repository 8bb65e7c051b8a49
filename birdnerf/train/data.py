"""The training rays of one block: pixels whose ray meets the ground inside the block.

A pixel belongs to a block when its ray, cut by the ground plane, lands in the block's expanded
rectangle (bird view). The compositing renderer decides ownership the same way, so a block is
trained on exactly the pixels it may be asked to render.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from birdnerf.partition.footprint import ground_points, in_rect
from birdnerf.partition.manifest import Block
from birdnerf.scene.camera import camera_rays, pixel_centers
from birdnerf.scene.images import load_rgb
from birdnerf.scene.scene import Scene


@dataclass
class BlockRays:
    """Rays of a block's pixels, flattened over its photos (float32, world frame).

    Attributes:
        origins, dirs: (R, 3) ray origins and unit directions.
        rgb: (R, 3) target colours in [0, 1].
        image_ids: (R,) index of the photo in ``names`` (its appearance code).
        pixels: (R, 2) integer pixel (column, row) in its photo.
        names: dataset-relative names of the photos, in appearance-code order.
    """

    origins: Tensor
    dirs: Tensor
    rgb: Tensor
    image_ids: Tensor
    pixels: Tensor
    names: list[str]

    def __len__(self) -> int:
        return self.origins.shape[0]


def photo_rays(scene: Scene, index: int, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """(H, W, 3) origins and directions of every pixel of photo ``index``."""
    cam = scene.cameras[index]
    return camera_rays(cam, torch.from_numpy(scene.c2w[index]), pixel_centers(cam, dtype))


def block_rays(scene: Scene, block: Block, names: list[str]) -> BlockRays:
    """Collect the rays of ``names`` (photos of ``scene``) that belong to ``block``."""
    lookup = {n: i for i, n in enumerate(scene.names)}
    ground_z = float(scene.ground_z or 0.0)
    parts: dict[str, list[Tensor]] = {k: [] for k in ("origins", "dirs", "rgb", "ids", "pixels")}
    for local, name in enumerate(names):
        i = lookup[name]
        origins, dirs = photo_rays(scene, i)
        mask = in_rect(ground_points(origins, dirs, ground_z), block.expanded)
        if not mask.any():
            continue
        rgb = torch.from_numpy(load_rgb(scene.image_paths[i], scene.cameras[i]))
        rows, cols = torch.nonzero(mask, as_tuple=True)
        parts["origins"].append(origins[mask].float())
        parts["dirs"].append(dirs[mask].float())
        parts["rgb"].append(rgb[mask].float() / 255.0)
        parts["ids"].append(torch.full((len(rows),), local, dtype=torch.long))
        parts["pixels"].append(torch.stack([cols, rows], dim=-1))
    if not parts["origins"]:
        empty = torch.empty(0, 3)
        return BlockRays(empty, empty, empty, torch.empty(0, dtype=torch.long), torch.empty(0, 2), names)
    return BlockRays(
        origins=torch.cat(parts["origins"]),
        dirs=torch.cat(parts["dirs"]),
        rgb=torch.cat(parts["rgb"]),
        image_ids=torch.cat(parts["ids"]),
        pixels=torch.cat(parts["pixels"]),
        names=names,
    )
