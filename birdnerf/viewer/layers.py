"""What the viewer draws from a run: cameras, block boxes, sparse points and the orthophoto.

Each function adds one layer to a viser scene (``server.scene``) under its own folder name, so
that the layer can be shown or hidden as a whole, and returns the handles it made.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from birdnerf.partition.manifest import Partition
from birdnerf.scene.scene import Scene
from birdnerf.viewer.camera import viser_pose
from birdnerf.viewer.ortho import OrthoLayer
from birdnerf.viewer.status import BlockStatus

TRAIN_RGB, TEST_RGB = (31, 119, 180), (255, 127, 14)
"""Frustum colours of training and held-out photos (the partition map's tab:blue / tab:orange)."""

# The 12 edges of a box, as pairs of corner indices (corner bits: x, y, z).
_BOX_EDGES = [(a, a | bit) for bit in (1, 2, 4) for a in range(8) if not a & bit]


def block_colors(n: int) -> np.ndarray:
    """(n, 3) uint8 colours of blocks, in manifest order (the partition map's tab10 palette)."""
    import matplotlib  # only the colour table; no backend is chosen

    palette = matplotlib.colormaps["tab10"]
    return np.array([[round(255 * c) for c in palette(k % 10)[:3]] for k in range(n)], dtype=np.uint8)


def site_extent(partition: Partition) -> float:
    """Diagonal of the blocks' expanded rectangles (world units): the scale of markers."""
    boxes = np.array([b.expanded for b in partition.blocks], dtype=np.float64)
    lo, hi = boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)
    return float(np.linalg.norm(hi - lo)) or 1.0


def _thumbnail(path, width: int) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            im.draft("RGB", (width, width))  # JPEG: decode at a reduced size
            im = im.convert("RGB")
            im.thumbnail((width, width))
            return np.asarray(im)
    except (OSError, ValueError):
        return None  # a thumbnail is a nicety: a photo that cannot be read just has none


def add_cameras(api, scene: Scene, scale: float, thumbnail_px: int = 0) -> list:
    """A frustum per photo (training blue, held-out orange), with a thumbnail when asked."""
    handles = []
    for i, (cam, c2w) in enumerate(zip(scene.cameras, scene.c2w, strict=True)):
        wxyz, position, fov, aspect = viser_pose(cam, c2w)
        image = _thumbnail(scene.image_paths[i], thumbnail_px) if thumbnail_px > 0 else None
        handles.append(
            api.add_camera_frustum(
                f"/cameras/{i:05d}",
                fov=fov,
                aspect=aspect,
                scale=scale,
                thickness=1.5,
                thickness_units="screen",
                color=TEST_RGB if scene.split[i] == "test" else TRAIN_RGB,
                image=image,
                format="jpeg",
                wxyz=wxyz,
                position=position,
            )
        )
    return handles


def box_segments(box: list[float]) -> np.ndarray:
    """(12, 2, 3) edges of an axis-aligned box ``[xmin, ymin, zmin, xmax, ymax, zmax]``."""
    lo, hi = np.asarray(box[:3], dtype=np.float64), np.asarray(box[3:], dtype=np.float64)
    corners = np.array([[(hi if k >> axis & 1 else lo)[axis] for axis in range(3)] for k in range(8)])
    return np.stack([corners[[a, b]] for a, b in _BOX_EDGES])


def add_blocks(api, partition: Partition, statuses: list[BlockStatus]) -> list:
    """Every block's 3-D box, coloured by block, and a label with its id and status."""
    colors = block_colors(len(partition.blocks))
    segments = np.concatenate([box_segments(b.box) for b in partition.blocks])
    per_segment = np.repeat(colors, 12, axis=0)[:, None, :].repeat(2, axis=1)
    handles = [
        api.add_line_segments("/blocks/boxes", segments, per_segment, thickness=2.0, thickness_units="screen")
    ]
    status = {s.id: s.status for s in statuses}
    for b in partition.blocks:
        x0, y0, z0, x1, y1, z1 = b.box
        handles.append(
            api.add_label(
                f"/blocks/{b.id}",
                f"{b.id} ({status.get(b.id, '?')})",
                position=((x0 + x1) / 2, (y0 + y1) / 2, z1),
            )
        )
    return handles


def add_points(api, points: np.ndarray, colors: np.ndarray | None, size: float, max_points: int) -> list:
    """The sparse points (every k-th, at most ``max_points``), in their colours or grey."""
    step = max(1, -(-len(points) // max(1, max_points)))
    xyz = np.asarray(points[::step], dtype=np.float32)
    rgb = np.asarray(colors[::step], dtype=np.uint8) if colors is not None else (150, 150, 150)
    return [api.add_point_cloud("/points", xyz, rgb, point_size=size, point_shape="circle")]


def add_ortho(api, layer: OrthoLayer) -> list:
    """The orthophoto as an image plane on the ground."""
    width, height = layer.size
    return [
        api.add_image(
            "/orthophoto",
            layer.image,
            render_width=width,
            render_height=height,
            format="png" if layer.image.shape[-1] == 4 else "jpeg",
            wxyz=layer.wxyz,
            position=layer.center,
            cast_shadow=False,
            receive_shadow=False,
        )
    ]
