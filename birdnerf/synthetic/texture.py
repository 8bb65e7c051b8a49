"""Colours of the synthetic site: ground, roads, facades, roofs and canopies, lit by the sun.

Every colour is a function of the world position of the surface point (and of the object it
belongs to), never of the viewing ray, and the lighting is Lambertian (ambient + a directional
sun, with ground shadows baked once per site): two photos that see the same point see the same
colour. Colours are RGB in [0, 1].
"""

from __future__ import annotations

import numpy as np

from birdnerf.synthetic.site import BUILDING, BUILT, CANOPY, FIELD, GROUND, MEADOW, SKY, TRUNK, WOODS, Site

AMBIENT, DIFFUSE = 0.45, 0.72
"""Light = AMBIENT + DIFFUSE * max(0, n . sun); about 1 on flat ground under a 50 degree sun."""

SKY_COLOR = np.array([0.70, 0.80, 0.92])
ASPHALT = np.array([0.34, 0.34, 0.36])
MARKING = np.array([0.92, 0.92, 0.90])
GRAVEL = np.array([0.62, 0.58, 0.50])
PATH = np.array([0.56, 0.50, 0.40])
PAVING = np.array([0.63, 0.61, 0.57])
BARK = np.array([0.36, 0.28, 0.21])
GLASS = np.array([0.16, 0.20, 0.27])
ROOF_UNIT = np.array([0.47, 0.48, 0.50])
PANEL = np.array([0.10, 0.13, 0.24])
MOSS_PATCH = np.array([0.55, 0.42, 0.30])

TILES, FLAT, SOLAR, GREEN = 0, 1, 2, 3
ROOF_STYLES = ("tiles", "flat", "solar", "green")

# Wheat, young crop, beet, ploughed soil, rapeseed, stubble.
CROPS = np.array([[0.80, 0.70, 0.42], [0.45, 0.58, 0.28], [0.28, 0.42, 0.20]])
CROPS = np.concatenate([CROPS, [[0.50, 0.38, 0.27], [0.88, 0.80, 0.30], [0.74, 0.66, 0.50]]])
LAND = {MEADOW: [0.42, 0.55, 0.30], BUILT: [0.46, 0.58, 0.34], WOODS: [0.25, 0.30, 0.18]}
# White, beige, grey, brick, pale yellow.
WALLS = np.array([[0.86, 0.84, 0.80], [0.82, 0.74, 0.60], [0.62, 0.62, 0.62], [0.62, 0.36, 0.28]])
WALLS = np.concatenate([WALLS, [[0.85, 0.80, 0.55]]])
ROOFS = {
    TILES: np.array([[0.68, 0.32, 0.22], [0.55, 0.26, 0.20], [0.45, 0.30, 0.24]]),
    FLAT: np.array([[0.58, 0.58, 0.56], [0.66, 0.65, 0.62], [0.48, 0.48, 0.50]]),
    SOLAR: np.array([[0.30, 0.32, 0.36], [0.36, 0.34, 0.34]]),
    GREEN: np.array([[0.42, 0.50, 0.28], [0.48, 0.52, 0.30]]),
}
# Four greens and an autumn tree.
FOLIAGE = np.array([[0.22, 0.38, 0.16], [0.30, 0.45, 0.20], [0.18, 0.30, 0.15], [0.35, 0.46, 0.22]])
FOLIAGE = np.concatenate([FOLIAGE, [[0.52, 0.46, 0.20]]])


def lambert(site: Site, nx: np.ndarray, ny: np.ndarray, nz: np.ndarray) -> np.ndarray:
    """Light reaching a surface with unit normal (nx, ny, nz): ambient + diffuse sun."""
    s = site.sun
    return AMBIENT + DIFFUSE * np.maximum(0.0, nx * s[0] + ny * s[1] + nz * s[2])


def _mix(base: np.ndarray, color: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask[:, None], color, base)


def ground_albedo(site: Site, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N, 3) colour of the ground at world points (x, y): parcels, paths and roads."""
    parcels, noise = site.parcels, site.noise
    idx, border = parcels.lookup(x, y)
    use = parcels.use.ravel()[idx]
    base = parcels.color.reshape(-1, 3)[idx]
    angle = parcels.angle.ravel()[idx].astype(x.dtype)
    period = parcels.period.ravel()[idx].astype(x.dtype)
    broad = noise.fbm(x, y, 30.0, 2)
    mid = noise.fbm(x + 311.0, y - 203.0, 4.0, 2)
    fine = noise(x / 0.55 + 91.7, y / 0.55 - 13.1)
    across = x * np.cos(angle) + y * np.sin(angle)
    crop_rows = 0.88 + 0.2 * (0.5 + 0.5 * np.sin(2 * np.pi * across / period))
    tram_spacing = 7.0 * period
    tram = np.abs(across / tram_spacing - np.round(across / tram_spacing)) * tram_spacing < 0.3
    crop_rows = np.where(tram, 0.78 * crop_rows, crop_rows)
    mowing = 0.95 + 0.1 * (np.sin(2 * np.pi * across / 3.0) > 0)
    uses = [use == FIELD, use == MEADOW, use == WOODS, use == BUILT]
    factor = np.select(uses, [crop_rows, 0.9 + 0.2 * mid, 0.75 + 0.5 * mid, mowing], 1.0)
    factor = factor * (0.84 + 0.32 * broad) * (0.93 + 0.14 * fine)
    color = base * factor[:, None]
    color = _mix(color, color + np.array([0.09, 0.07, -0.03]), (use == MEADOW) & (mid > 0.66))
    paved = (use == BUILT) & (noise.fbm(x - 77.0, y + 41.0, 7.0, 2) > 0.64)
    color = _mix(color, PAVING * (0.9 + 0.2 * fine)[:, None], paved)
    color = _mix(color, PATH * (0.85 + 0.3 * fine)[:, None], border < 0.9)
    return _roads(site, x, y, color, fine, broad)


def _roads(
    site: Site, x: np.ndarray, y: np.ndarray, color: np.ndarray, fine: np.ndarray, broad: np.ndarray
) -> np.ndarray:
    """Paint asphalt, gravel shoulders and lane markings (dashed centre, solid edges) over ``color``."""
    roads = site.roads
    half = roads.width / 2
    off_x, off_y = roads.offset(roads.along_x, y), roads.offset(roads.along_y, x)
    on_x, on_y = np.abs(off_x) < half, np.abs(off_y) < half
    shoulder = (np.abs(off_x) < half + 1.2) | (np.abs(off_y) < half + 1.2)
    color = _mix(color, GRAVEL * (0.85 + 0.3 * fine)[:, None], shoulder)
    color = _mix(color, ASPHALT * ((0.9 + 0.2 * fine) * (0.92 + 0.16 * broad))[:, None], on_x | on_y)
    marks = np.zeros(len(x), dtype=bool)
    for off, other, along in ((off_x, off_y, x), (off_y, off_x, y)):
        clear = np.abs(other) > half + 1.0
        dash = (np.abs(off) < 0.15) & (np.mod(along, 6.0) < 3.0)
        edge = np.abs(np.abs(off) - (half - 0.45)) < 0.12
        marks |= clear & (dash | edge)
    return _mix(color, MARKING, marks)


def facade_albedo(
    site: Site, k: np.ndarray, along: np.ndarray, half_along: np.ndarray, p: np.ndarray
) -> np.ndarray:
    """(N, 3) colour of building walls: plaster with floors of windows every 3 m.

    ``along`` is the horizontal coordinate on the wall (metres from its centre line),
    ``half_along`` the wall's half width, ``p`` (3, N) the world points.
    """
    obj, noise = site.objects, site.noise
    x, y, z = p
    top = obj.center[k, 2] + obj.half[k, 2]
    # Storeys count from the ground the building stands on.
    z = z - obj.ground[k]
    top = top - obj.ground[k]
    count = np.floor(2 * half_along / 2.6)
    spacing = 2 * half_along / np.maximum(count, 1)
    column = (along + half_along) / spacing
    floor = z / 3.0
    in_col = np.abs(column - np.floor(column) - 0.5) < 0.22
    in_row = (floor - np.floor(floor) > 0.3) & (floor - np.floor(floor) < 0.75)
    window = in_col & in_row & (count >= 1) & (z < top - 0.5)
    pane = 0.8 + 0.5 * noise(np.floor(column) * 3.7 + k * 0.37, np.floor(floor) * 5.3)
    grime = 0.92 + 0.12 * noise((x + y) / 0.9, z / 0.9)
    trim = np.where(z > top - 0.3, 0.85, 1.0) * np.where(z < 0.5, 0.8, 1.0)
    wall = obj.color_a[k] * (grime * trim)[:, None]
    return _mix(wall, GLASS * pane[:, None], window)


def roof_albedo(
    site: Site, k: np.ndarray, lx: np.ndarray, ly: np.ndarray, p: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) colour of roofs and (N,) light on them; (lx, ly) are the box's local coordinates."""
    obj, noise = site.objects, site.noise
    hx, hy = obj.half[k, 0], obj.half[k, 1]
    style, tone = obj.style[k], obj.tone[k]
    fine = noise(p[0] / 0.5 - 55.5, p[1] / 0.5 + 21.3)
    mottle = 0.88 + 0.24 * noise.fbm(p[0] + 51.0, p[1] + 17.0, 2.5, 2)
    color = obj.color_b[k] * (mottle * (0.93 + 0.14 * fine))[:, None]
    light = lambert(site, np.zeros_like(lx), np.zeros_like(lx), np.ones_like(lx))
    # Tiles: a gabled roof drawn on the flat top, its ridge along the longer side; each half
    # is lit as if it sloped by 30 degrees, which is a function of position like the rest.
    ridge_x = hx >= hy
    v = np.where(ridge_x, ly, lx)
    rows = 0.85 + 0.15 * (np.abs(v) / 0.8 - np.floor(np.abs(v) / 0.8))
    side = np.sign(v) * np.sin(np.radians(30.0))
    yaw = obj.yaw[k]
    nx_local, ny_local = np.where(ridge_x, 0.0, side), np.where(ridge_x, side, 0.0)
    nx = np.cos(yaw) * nx_local - np.sin(yaw) * ny_local
    ny = np.sin(yaw) * nx_local + np.cos(yaw) * ny_local
    tiles = style == TILES
    light = np.where(tiles, lambert(site, nx, ny, np.full_like(nx, np.cos(np.radians(30.0)))), light)
    color = np.where(tiles[:, None], color * (rows * np.where(np.abs(v) < 0.25, 0.75, 1.0))[:, None], color)
    edge = np.minimum(hx - np.abs(lx), hy - np.abs(ly))
    parapet = (style != TILES) & (edge < 0.45)
    gutter = (style != TILES) & (edge >= 0.45) & (edge < 0.7)
    color = color * np.where(parapet, 1.18, np.where(gutter, 0.8, 1.0))[:, None]
    unit_x, unit_y = (tone - 0.5) * hx * 0.8, np.where(tone > 0.5, 0.35, -0.35) * hy
    unit = (style == FLAT) & (np.abs(lx - unit_x) < 1.0) & (np.abs(ly - unit_y) < 0.7)
    color = _mix(color, ROOF_UNIT * (0.9 + 0.2 * fine)[:, None], unit)
    cell_x, cell_y = lx / 1.0 - np.floor(lx / 1.0), ly / 1.7 - np.floor(ly / 1.7)
    array = (style == SOLAR) & (np.abs(lx) < hx - 1.2) & (np.abs(ly) < hy - 1.2)
    frame = (cell_x < 0.08) | (cell_y < 0.06)
    color = _mix(color, np.where(frame[:, None], 0.6, PANEL * (0.9 + 0.2 * fine)[:, None]), array)
    moss = (style == GREEN) & (noise.fbm(p[0] - 9.0, p[1] + 3.0, 1.8, 2) > 0.55) & ~parapet
    return _mix(color, MOSS_PATCH * mottle[:, None], moss), light


def box_color(site: Site, k: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(N, 3) lit colour of points ``p`` (3, N) on box objects ``k`` (buildings, trunks)."""
    obj = site.objects
    half, yaw = obj.half[k], obj.yaw[k]
    c, s = np.cos(yaw), np.sin(yaw)
    rx, ry, rz = p - obj.center[k].T
    lx, ly = c * rx + s * ry, -s * rx + c * ry
    local = np.stack([lx, ly, rz])
    axis = np.argmax(np.abs(local) / half.T, axis=0)
    sign = np.sign(local[axis, np.arange(len(k))])
    nlx, nly, nz = ((axis == a) * sign for a in range(3))
    light = lambert(site, c * nlx - s * nly, s * nlx + c * nly, nz)
    color = np.tile(BARK, (len(k), 1)) * (0.85 + 0.3 * site.noise(p[0] / 0.3, p[2] / 0.3))[:, None]
    building = obj.kind[k] == BUILDING
    roof = building & (axis == 2) & (rz > 0)
    wall = building & ~roof
    if wall.any():
        along = np.where(axis == 0, ly, lx)[wall]
        half_along = np.where(axis == 0, half[:, 1], half[:, 0])[wall]
        color[wall] = facade_albedo(site, k[wall], along, half_along, p[:, wall])
    if roof.any():
        color[roof], light[roof] = roof_albedo(site, k[roof], lx[roof], ly[roof], p[:, roof])
    return color * light[:, None]


def canopy_color(site: Site, k: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(N, 3) lit colour of points ``p`` (3, N) on tree canopies ``k``: clumps of leaves."""
    obj, noise = site.objects, site.noise
    r = p - obj.center[k].T
    n = r / (obj.half[k].T ** 2)
    n = n / np.linalg.norm(n, axis=0)
    x, y, z = p
    leaves = 0.7 + 0.35 * noise((x + 0.6 * z) / 0.8, (y - 0.45 * z) / 0.8)
    leaves += 0.15 * noise((x - 0.5 * z) / 2.5 + 50.0, (y + 0.7 * z) / 2.5 - 20.0)
    occlusion = 0.6 + 0.4 * (0.5 + 0.5 * n[2])
    return obj.color_a[k] * (leaves * occlusion * lambert(site, *n))[:, None]


def shade(site: Site, origin: np.ndarray, dirs: np.ndarray, t: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """(H, W, 3) lit colour of the nearest hits returned by :func:`raycast.cast`."""
    height, width = t.shape
    out = np.tile(SKY_COLOR, (height * width, 1))
    hit = hit.ravel()
    idx = np.flatnonzero(hit != SKY)
    p = origin[:, None] + dirs.reshape(3, -1)[:, idx] * t.ravel()[idx]
    what = hit[idx]
    ground = what == GROUND
    if ground.any():
        # float32 is ample for texture coordinates (sub-millimetre over kilometres) and fast.
        gx, gy = p[0, ground].astype(np.float32), p[1, ground].astype(np.float32)
        if site.terrain.is_flat:
            light = AMBIENT + DIFFUSE * site.sun[2] * site.shadow.sample(gx, gy)
        else:
            n = site.ground_normal(p[0, ground], p[1, ground])
            sun = np.maximum(0.0, n @ site.sun)
            light = AMBIENT + DIFFUSE * sun * site.shadow.sample(gx, gy)
        out[idx[ground]] = ground_albedo(site, gx, gy) * light[:, None]
    kind = (
        np.full(len(what), -1)
        if ground.all()
        else np.where(ground, -1, site.objects.kind[np.maximum(what, 0)])
    )
    for mask, color_fn in ((kind == CANOPY, canopy_color), ((kind == BUILDING) | (kind == TRUNK), box_color)):
        if mask.any():
            out[idx[mask]] = color_fn(site, what[mask], p[:, mask])
    return out.reshape(height, width, 3)
