"""Exact ray casting of the synthetic site: ray/ground, ray/box and ray/spheroid intersections.

Rays are written ``x = o + t d`` with ``d`` in the world frame. Camera rays use the direction
whose camera-frame z component is 1 (``d = R [x_n, y_n, 1]``), so the ray parameter ``t`` of a
hit *is* its z-depth (metres along the camera's +z axis, OpenCV axes). Each photo only tests
the objects whose bounding boxes meet its ground footprint (a spatial-index query) and, for
each of those, only the rays inside the object's projected bounding rectangle; the cost of a
photo therefore depends on what it sees, not on the size of the site. The ground is a plane
or a smooth height field (:meth:`birdnerf.synthetic.terrain.Terrain.intersect`).
"""

from __future__ import annotations

import numpy as np

from birdnerf.scene.camera import Camera
from birdnerf.synthetic.site import CANOPY, GROUND, SKY, Objects, ShadowMap, Site
from birdnerf.synthetic.terrain import Terrain
from birdnerf.synthetic.texture import shade


def intersect_box(
    o: np.ndarray, d: np.ndarray, center: np.ndarray, half: np.ndarray, yaw: float
) -> np.ndarray:
    """First hit of rays with a box rotated by ``yaw`` about +z (slab method).

    Args:
        o: (3, ...) or (3,) ray origins, metres.
        d: (3, ...) ray directions (any non-zero length).
        center: (3,) box centre; half: (3,) half extents along the box's local axes.
        yaw: rotation of the box's local x axis from world +x, radians.

    Returns:
        (...) ray parameter of the hit in front of the origin (the exit point if the origin is
        inside the box), ``inf`` where the ray misses.
    """
    c, s = np.cos(yaw), np.sin(yaw)
    ox, oy, oz = (o[0] - center[0], o[1] - center[1], o[2] - center[2])
    local_o = (c * ox + s * oy, -s * ox + c * oy, oz)
    local_d = (c * d[0] + s * d[1], -s * d[0] + c * d[1], d[2])
    t_near, t_far = -np.inf, np.inf
    for lo, ld, h in zip(local_o, local_d, half, strict=True):
        inv = 1.0 / np.where(np.abs(ld) < 1e-12, 1e-12, ld)
        t1, t2 = (-h - lo) * inv, (h - lo) * inv
        t_near = np.maximum(t_near, np.minimum(t1, t2))
        t_far = np.minimum(t_far, np.maximum(t1, t2))
    hit = (t_far >= t_near) & (t_far > 0)
    return np.where(hit, np.where(t_near > 0, t_near, t_far), np.inf)


def intersect_spheroid(o: np.ndarray, d: np.ndarray, center: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """First hit of rays with the axis-aligned ellipsoid ``sum(((x - center) / radii)^2) = 1``.

    Shapes and return value as in :func:`intersect_box`.
    """
    ox, oy, oz = ((o[i] - center[i]) / radii[i] for i in range(3))
    dx, dy, dz = (d[i] / radii[i] for i in range(3))
    a = dx * dx + dy * dy + dz * dz
    b = ox * dx + oy * dy + oz * dz
    disc = b * b - a * (ox * ox + oy * oy + oz * oz - 1.0)
    root = np.sqrt(np.maximum(disc, 0.0))
    t0, t1 = (-b - root) / a, (-b + root) / a
    t = np.where(t0 > 0, t0, t1)
    return np.where((disc >= 0) & (t > 0), t, np.inf)


def intersect_object(objects: Objects, k: int, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Ray parameter of the first hit with object ``k`` (``inf`` where missed)."""
    if objects.kind[k] == CANOPY:
        return intersect_spheroid(o, d, objects.center[k], objects.half[k])
    return intersect_box(o, d, objects.center[k], objects.half[k], float(objects.yaw[k]))


def ray_grid(cam: Camera, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre (3,) and (3, H, W) world directions through every pixel centre.

    Directions have camera-frame z component 1, so ``t`` along them is z-depth. Pinhole only.
    """
    if cam.has_distortion:
        raise ValueError("the synthetic renderer only supports pinhole cameras")
    rot = np.asarray(c2w, dtype=np.float64)[:3, :3]
    xn = (np.arange(cam.width) + 0.5 - cam.cx) / cam.fx
    yn = (np.arange(cam.height) + 0.5 - cam.cy) / cam.fy
    dirs = (
        rot[:, 0, None, None] * xn[None, None, :]
        + rot[:, 1, None, None] * yn[None, :, None]
        + rot[:, 2, None, None] * np.ones((1, cam.height, cam.width))
    )
    return np.asarray(c2w, dtype=np.float64)[:3, 3].copy(), dirs


def ground_rectangle(site: Site, cam: Camera, c2w: np.ndarray) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) of the view's frustum between the lowest ground and the tallest object.

    Falls back to the whole site when a border ray does not descend to the ground.
    """
    origin = np.asarray(c2w, dtype=np.float64)[:3, 3]
    rot = np.asarray(c2w, dtype=np.float64)[:3, :3]
    corners = np.array([[0, 0], [cam.width, 0], [0, cam.height], [cam.width, cam.height]], dtype=np.float64)
    d = (
        np.stack([(corners[:, 0] - cam.cx) / cam.fx, (corners[:, 1] - cam.cy) / cam.fy, np.ones(4)], 1)
        @ rot.T
    )
    top = site.max_height
    if np.any(d[:, 2] >= -1e-9) or origin[2] <= top:
        return site.bounds
    points = [origin[:2] + d[:, :2] * ((z - origin[2]) / d[:, 2:3]) for z in (site.terrain.z_min, top)]
    xy = np.concatenate(points)
    return float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max())


def visible_objects(site: Site, cam: Camera, c2w: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """Objects that may appear in the view, with their inclusive pixel rectangles.

    Returns ``(k, v0, v1, u0, u1)`` tuples: object index and the rows/columns of the pixels
    whose centres lie in (or next to) the projection of the object's bounding box.
    """
    candidates = site.index.query(*ground_rectangle(site, cam, c2w))
    if len(candidates) == 0:
        return []
    lower, upper = site.objects.select(candidates).bounds()
    pick = np.array([[(i >> a) & 1 for a in range(3)] for i in range(8)], dtype=bool)
    corners = np.where(pick[None], upper[:, None, :], lower[:, None, :])
    c2w = np.asarray(c2w, dtype=np.float64)
    p = (corners - c2w[:3, 3]) @ c2w[:3, :3]
    z = p[..., 2]
    behind = np.any(z <= 1e-6, axis=1)
    z = np.where(z > 1e-6, z, 1.0)
    u = cam.fx * p[..., 0] / z + cam.cx
    v = cam.fy * p[..., 1] / z + cam.cy
    u0 = np.where(behind, 0, np.maximum(np.ceil(u.min(1) - 0.5) - 1, 0))
    u1 = np.where(behind, cam.width - 1, np.minimum(np.floor(u.max(1) - 0.5) + 1, cam.width - 1))
    v0 = np.where(behind, 0, np.maximum(np.ceil(v.min(1) - 0.5) - 1, 0))
    v1 = np.where(behind, cam.height - 1, np.minimum(np.floor(v.max(1) - 0.5) + 1, cam.height - 1))
    inside = (u0 <= u1) & (v0 <= v1)
    return [
        (int(candidates[i]), int(v0[i]), int(v1[i]), int(u0[i]), int(u1[i])) for i in np.flatnonzero(inside)
    ]


def cast(site: Site, cam: Camera, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit of every pixel-centre ray of a view.

    Returns:
        origin (3,), dirs (3, H, W) as in :func:`ray_grid`, z-depth ``t`` (H, W) in metres
        (``inf`` for sky) and ``hit`` (H, W): object index, ``GROUND`` or ``SKY``.
    """
    origin, dirs = ray_grid(cam, c2w)
    t = site.terrain.intersect(origin, dirs)
    hit = np.where(np.isfinite(t), GROUND, SKY).astype(np.int64)
    for k, v0, v1, u0, u1 in visible_objects(site, cam, c2w):
        window = (slice(v0, v1 + 1), slice(u0, u1 + 1))
        t_obj = intersect_object(site.objects, k, origin, dirs[(slice(None), *window)])
        closer = t_obj < t[window]
        t[window] = np.where(closer, t_obj, t[window])
        hit[window] = np.where(closer, k, hit[window])
    return origin, dirs, t, hit


def bake_shadows(
    objects: Objects, sun: np.ndarray, cell_m: float = 0.25, terrain: Terrain | None = None
) -> ShadowMap:
    """Sunlit fraction of the ground, by casting a ray to the sun from every grid node.

    Args:
        objects: the site's solid objects.
        sun: (3,) unit vector towards the sun (positive z).
        cell_m: grid spacing, metres.
        terrain: the ground the rays start from (default: flat at z = 0). The hills are too
            gentle to shade each other under the site's sun, so only objects cast shadows.
    """
    terrain = Terrain.flat() if terrain is None else terrain
    if len(objects) == 0:
        return ShadowMap(origin=np.zeros(2), cell=cell_m, lit=np.ones((2, 2), dtype=np.float32))
    lower, upper = objects.bounds()
    reach = -sun[:2] / sun[2]
    # An object's shadow lies between its footprint and the footprint pushed away from the sun
    # by its height above the lowest ground.
    rise = upper[:, 2:3] - terrain.z_min
    lo = np.minimum(lower[:, :2], lower[:, :2] + reach * rise)
    hi = np.maximum(upper[:, :2], upper[:, :2] + reach * rise)
    origin = np.floor(lo.min(0) / cell_m) * cell_m - cell_m
    shape = tuple(int(n) for n in np.ceil((hi.max(0) - origin) / cell_m) + 2)
    lit = np.ones(shape, dtype=np.float32)
    first = np.floor((lo - origin) / cell_m).astype(np.int64)
    last = np.ceil((hi - origin) / cell_m).astype(np.int64)
    for k in range(len(objects)):
        (i0, j0), (i1, j1) = first[k], last[k]
        gx = origin[0] + cell_m * np.arange(i0, i1 + 1)[:, None]
        gy = origin[1] + cell_m * np.arange(j0, j1 + 1)[None, :]
        gx, gy = np.broadcast_arrays(gx, gy)
        gz = np.full_like(gx, terrain.base_z) if terrain.is_flat else terrain.height(gx, gy)
        o = np.stack([gx, gy, gz])
        blocked = np.isfinite(intersect_object(objects, k, o, sun))
        lit[i0 : i1 + 1, j0 : j1 + 1][blocked] = 0.0
    return ShadowMap(origin=origin, cell=cell_m, lit=lit)


def render_photo(
    site: Site, cam: Camera, c2w: np.ndarray, supersample: int = 2, gain: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Render one photo of the site.

    Args:
        site: the world model.
        cam: pinhole intrinsics of the stored image.
        c2w: (4, 4) camera-to-world, OpenCV axes, metres.
        supersample: samples per pixel along each axis, averaged (anti-aliasing).
        gain: optional (3,) per-channel multiplier of the linear colour (the photo's exposure
            and white balance), applied before clipping and quantisation.

    Returns:
        rgb (H, W, 3) uint8 and z-depth (H, W) float32 in metres at pixel centres (``inf`` for sky).
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    fine = cam.scaled(supersample) if supersample > 1 else cam
    origin, dirs, t, hit = cast(site, fine, c2w)
    color = shade(site, origin, dirs, t, hit)
    if supersample > 1:
        color = color.reshape(cam.height, supersample, cam.width, supersample, 3).mean(axis=(1, 3))
        _, _, t, _ = cast(site, cam, c2w)
    if gain is not None:
        color = color * np.asarray(gain, dtype=np.float64)
    rgb = np.round(np.clip(color, 0.0, 1.0) * 255.0).astype(np.uint8)
    return rgb, t.astype(np.float32)
