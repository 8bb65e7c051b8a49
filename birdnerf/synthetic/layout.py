"""Procedural layout of the synthetic site: roads, parcels, buildings, trees, and later changes.

Everything is drawn from ``numpy.random.Generator`` streams derived from the seed, one stream
per part of the layout, so a given ``(config, seed)`` always yields the same site. Streams are
only ever appended to ``STREAMS``, and the terrain, towers and crown lobes draw from their own,
so sites with the default flat ground, no towers and single-spheroid crowns never change.
"""

from __future__ import annotations

import numpy as np

from birdnerf.synthetic import texture
from birdnerf.synthetic.noise import ValueNoise
from birdnerf.synthetic.raycast import bake_shadows
from birdnerf.synthetic.site import (
    BUILDING,
    BUILT,
    CANOPY,
    FIELD,
    MEADOW,
    TRUNK,
    WOODS,
    Objects,
    Parcels,
    Roads,
    Site,
    SiteConfig,
    SpatialIndex,
    sun_direction,
)
from birdnerf.synthetic.terrain import Terrain

STREAMS = ("noise", "roads", "parcels", "buildings", "trees", "change", "terrain", "towers", "crowns")


def build_site(config: SiteConfig, seed: int = 0, changed: bool = False) -> Site:
    """The site for ``(config, seed)``; with ``changed``, new buildings stand in its +x/+y corner.

    A changed site is the same site plus the new buildings; trees or buildings in their way are
    removed (the plot was cleared). See :func:`add_changes`.
    """
    streams = np.random.SeedSequence(seed).spawn(len(STREAMS))
    rng = {name: np.random.default_rng(s) for name, s in zip(STREAMS, streams, strict=True)}
    terrain = Terrain.hills(
        config.ground_z_m,
        config.terrain_relief_m,
        config.terrain_wavelength_m,
        config.extent_m,
        rng["terrain"],
    )
    roads = _roads(config, rng["roads"])
    parcels = _parcels(config, rng["parcels"], roads)
    buildings = _buildings(config, rng["buildings"], parcels, roads, terrain, rng["towers"])
    trees = _trees(config, rng["trees"], parcels, roads, buildings, terrain, rng["crowns"])
    if len(buildings):
        trees.group += int(buildings.group.max()) + 1
    objects = Objects.concat([buildings, trees])
    change_bounds = None
    if changed:
        objects, change_bounds = add_changes(config, rng["change"], objects, roads, terrain)
    return Site(
        config=config,
        seed=seed,
        parcels=parcels,
        roads=roads,
        objects=objects,
        noise=ValueNoise(rng["noise"]),
        shadow=bake_shadows(objects, sun_direction(config), terrain=terrain),
        index=SpatialIndex(*objects.bounds()),
        change_bounds=change_bounds,
        terrain=terrain,
    )


def _lines(reach: float, spacing: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    positions, v = [], -reach + rng.uniform(0.0, spacing[1])
    while v < reach:
        positions.append(v)
        v += rng.uniform(*spacing)
    return np.asarray(positions)


def _roads(config: SiteConfig, rng: np.random.Generator) -> Roads:
    reach = config.extent_m / 2 + config.ground_margin_m
    along_x = _lines(reach, config.road_spacing_m, rng)
    along_y = _lines(reach, config.road_spacing_m, rng)
    return Roads(along_x=along_x, along_y=along_y, width=config.road_width_m)


def _parcels(config: SiteConfig, rng: np.random.Generator, roads: Roads) -> Parcels:
    reach = config.extent_m / 2 + config.ground_margin_m
    size = config.parcel_m
    n = int(np.ceil(2 * reach / size))
    origin = np.array([-reach, -reach])
    lattice = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), axis=-1)
    seeds = origin + (lattice + 0.5 + rng.uniform(-0.4, 0.4, (n, n, 2))) * size
    near_road = roads.distance(seeds[..., 0], seeds[..., 1]) < 0.9 * size
    p_built = np.clip(config.built_fraction * np.where(near_road, 1.6, 0.3), 0.0, 0.9)
    r = rng.random((n, n))
    thresholds = np.cumsum(
        [p_built, np.full((n, n), config.woods_fraction), np.full((n, n), config.meadow_fraction)], 0
    )
    use = np.select([r < thresholds[0], r < thresholds[1], r < thresholds[2]], [BUILT, WOODS, MEADOW], FIELD)
    color = texture.CROPS[rng.integers(0, len(texture.CROPS), (n, n))]
    for kind, rgb in texture.LAND.items():
        color[use == kind] = rgb
    color = color * rng.uniform(0.92, 1.08, (n, n, 1))
    aligned = rng.integers(0, 2, (n, n)) * (np.pi / 2) + rng.normal(0.0, 0.04, (n, n))
    angle = np.where(use == BUILT, aligned, rng.uniform(0.0, np.pi, (n, n)))
    period = rng.uniform(1.6, 3.2, (n, n))
    return Parcels(origin=origin, spacing=size, seeds=seeds, use=use, color=color, angle=angle, period=period)


def _box_rows(rows: list[dict]) -> Objects:
    keys = ("kind", "center", "half", "yaw", "style", "color_a", "color_b", "tone", "group", "ground")
    if not rows:
        shapes = {"center": (0, 3), "half": (0, 3), "color_a": (0, 3), "color_b": (0, 3)}
        empty = {k: np.zeros(shapes.get(k, (0,))) for k in keys}
        empty["kind"], empty["style"] = empty["kind"].astype(np.int8), empty["style"].astype(np.int8)
        return Objects(**{**empty, "group": empty["group"].astype(np.int64)})
    out = {k: np.asarray([row[k] for row in rows], dtype=np.float64) for k in keys}
    out["kind"], out["style"] = out["kind"].astype(np.int8), out["style"].astype(np.int8)
    out["group"] = out["group"].astype(np.int64)
    return Objects(**out)


def _building(center_xy, size_xy, height, yaw, style, wall, roof, tone, group, ground, base=None) -> dict:
    """One box of a building standing on ``ground`` (world z); ``base``: its bottom (default ground)."""
    base = ground if base is None else base
    return {
        "group": group,
        "ground": ground,
        "kind": BUILDING,
        "center": [center_xy[0], center_xy[1], base + height / 2],
        "half": [size_xy[0] / 2, size_xy[1] / 2, height / 2],
        "yaw": yaw,
        "style": style,
        "color_a": wall,
        "color_b": roof,
        "tone": tone,
    }


def _clear_of(x: float, y: float, radius: float, placed: np.ndarray, count: int, gap: float) -> bool:
    """Whether a disc keeps ``gap`` metres from the first ``count`` discs (x, y, radius) of ``placed``."""
    p = placed[:count]
    return bool(np.all(np.hypot(p[:, 0] - x, p[:, 1] - y) >= radius + p[:, 2] + gap))


def _buildings(
    config: SiteConfig,
    rng: np.random.Generator,
    parcels: Parcels,
    roads: Roads,
    terrain: Terrain,
    towers: np.random.Generator,
) -> Objects:
    """Buildings on the built parcels; a ``config.tower_fraction`` share of them are towers.

    Towers keep the footprint drawn for the building but reach up to ``config.tower_height_m``
    (upper level included); their draws come from ``towers`` so the rest of the layout does not
    depend on the share.
    """
    half_site = config.extent_m / 2
    seeds = parcels.seeds.reshape(-1, 2)
    inside = np.all(np.abs(seeds) < half_site, axis=1)
    built_ha = np.count_nonzero(inside & (parcels.use.ravel() == BUILT)) * config.parcel_m**2 / 1e4
    target = int(round(config.buildings_per_ha * built_ha))
    # Candidates are drawn in bulk, then accepted in order unless they collide with earlier ones.
    attempts = 40 * target
    x, y = rng.uniform(-half_site, half_site, (2, attempts))
    length = rng.uniform(8.0, 22.0, attempts)
    width = np.minimum(rng.uniform(7.0, 14.0, attempts), length)
    tall = rng.random(attempts) < 0.1
    height = np.where(
        tall, rng.uniform(12.0, config.max_building_height_m, attempts), rng.uniform(3.5, 11.0, attempts)
    )
    radius = 0.5 * np.hypot(length, width)
    parcel, _ = parcels.lookup(x, y)
    fits = (parcels.use.ravel()[parcel] == BUILT) & (np.maximum(np.abs(x), np.abs(y)) + radius <= half_site)
    fits &= roads.distance(x, y) >= radius + roads.width / 2 + 2.0
    rows: list[dict] = []
    placed, count = np.zeros((target, 3)), 0
    for a in np.flatnonzero(fits):
        if count >= target:
            break
        if not _clear_of(x[a], y[a], radius[a], placed, count, 2.0):
            continue
        placed[count] = (x[a], y[a], radius[a])
        count += 1
        yaw = parcels.angle.ravel()[parcel[a]] + rng.integers(0, 2) * np.pi / 2 + rng.normal(0.0, 0.03)
        style = int(rng.choice(4, p=[0.4, 0.3, 0.15, 0.15]))
        style = texture.TILES if style == texture.SOLAR and width[a] < 9.0 else style
        wall = texture.WALLS[rng.integers(len(texture.WALLS))] * rng.uniform(0.93, 1.05)
        roof = texture.ROOFS[style][rng.integers(len(texture.ROOFS[style]))] * rng.uniform(0.93, 1.05)
        size = (length[a], width[a])
        tone = rng.random()
        upper = None
        if rng.random() < 0.3 and width[a] > 9.0 and style != texture.TILES:
            shrink = rng.uniform(0.45, 0.75, 2)
            shift = rng.uniform(-1.0, 1.0, 2) * (1.0 - shrink) * np.array(size) / 2
            c, s = np.cos(yaw), np.sin(yaw)
            center = (x[a] + c * shift[0] - s * shift[1], y[a] + s * shift[0] + c * shift[1])
            upper = (center, (size[0] * shrink[0], size[1] * shrink[1]), rng.uniform(3.0, 8.0), rng.random())
        main = height[a]
        is_tower, tower_total = towers.random() < config.tower_fraction, towers.uniform(0.6, 1.0)
        if is_tower:
            total = max(config.max_building_height_m, tower_total * config.tower_height_m)
            main = total - (upper[2] if upper else 0.0)
        ground = terrain.lowest_under((x[a], y[a]), (size[0] / 2, size[1] / 2), yaw)
        rows.append(_building((x[a], y[a]), size, main, yaw, style, wall, roof, tone, count, ground))
        if upper:
            center, upper_size, upper_height, upper_tone = upper
            rows.append(
                _building(
                    center,
                    upper_size,
                    upper_height,
                    yaw,
                    style,
                    wall,
                    roof,
                    upper_tone,
                    count,
                    ground,
                    ground + main,
                )
            )
    return _box_rows(rows)


def _tree(
    rng: np.random.Generator,
    x: float,
    y: float,
    in_woods: bool,
    group: int,
    terrain: Terrain,
    lobes: int = 1,
    crowns: np.random.Generator | None = None,
) -> list[dict]:
    """The rows of one tree at (x, y): its crown (``lobes`` spheroids) and its trunk.

    With one lobe the crown is a single spheroid. With more, it is a cluster: a main spheroid
    somewhat smaller than the single one, and smaller lobes around it at random azimuths,
    drawn from ``crowns`` so the trees' other draws do not depend on ``lobes``.
    """
    r_h = rng.uniform(2.2, 3.4) if in_woods else rng.uniform(1.6, 3.6)
    r_v = r_h * rng.uniform(0.8, 1.25)
    trunk = rng.uniform(2.5, 5.0) if in_woods else rng.uniform(1.0, 3.0)
    foliage = texture.FOLIAGE[rng.choice(len(texture.FOLIAGE), p=[0.25, 0.25, 0.2, 0.2, 0.1])]
    foliage = foliage * rng.uniform(0.9, 1.1)
    common = {"yaw": 0.0, "style": 0, "color_b": foliage, "tone": rng.random(), "group": group}
    stem_top = trunk + 0.5 * r_v
    radius = 0.1 + 0.04 * r_h
    ground = terrain.lowest_under((x, y), (radius, radius), 0.0)
    common["ground"] = ground
    crown = [([x, y, ground + (trunk + 0.9 * r_v)], [r_h, r_h, r_v])]
    if lobes > 1 and crowns is not None:
        crown = [([x, y, ground + (trunk + 0.9 * r_v)], [0.8 * r_h, 0.8 * r_h, 0.85 * r_v])]
        for azimuth in crowns.uniform(0.0, 2 * np.pi) + np.arange(lobes - 1) * 2 * np.pi / (lobes - 1):
            reach = crowns.uniform(0.35, 0.65) * r_h
            rise = crowns.uniform(-0.25, 0.35) * r_v
            size = crowns.uniform(0.45, 0.75)
            center = [x + reach * np.cos(azimuth), y + reach * np.sin(azimuth), crown[0][0][2] + rise]
            crown.append((center, [size * r_h, size * r_h, size * r_v * crowns.uniform(0.85, 1.2)]))
    rows = [{"kind": CANOPY, "center": c, "half": h, "color_a": foliage, **common} for c, h in crown]
    trunk_row = {
        "kind": TRUNK,
        "center": [x, y, ground + stem_top / 2],
        "half": [radius, radius, stem_top / 2],
        "color_a": texture.BARK,
        **common,
    }
    return [*rows, trunk_row]


def _trees(
    config: SiteConfig,
    rng: np.random.Generator,
    parcels: Parcels,
    roads: Roads,
    buildings: Objects,
    terrain: Terrain,
    crowns: np.random.Generator,
) -> Objects:
    half_site = config.extent_m / 2 - 2.0
    lower, upper = buildings.bounds()
    b_center = (lower[:, :2] + upper[:, :2]) / 2
    b_radius = np.linalg.norm(upper[:, :2] - lower[:, :2], axis=1) / 2
    area_ha = config.extent_m**2 / 1e4
    rows: list[dict] = []

    def accept(x: np.ndarray, y: np.ndarray, uses: tuple[int, ...], border_range=(0.0, np.inf)) -> np.ndarray:
        idx, border = parcels.lookup(x, y)
        ok = (
            np.isin(parcels.use.ravel()[idx], uses) & (border >= border_range[0]) & (border < border_range[1])
        )
        ok &= roads.distance(x, y) > roads.width / 2 + 3.0
        ok &= (np.abs(x) < half_site) & (np.abs(y) < half_site)
        if len(b_center):
            gap = np.hypot(x[:, None] - b_center[:, 0], y[:, None] - b_center[:, 1]) - b_radius
            ok &= gap.min(axis=1) > 3.0
        return ok

    planted = [0]

    def plant(x: np.ndarray, y: np.ndarray, ok: np.ndarray, in_woods: bool) -> None:
        for xi, yi in zip(x[ok], y[ok], strict=True):
            rows.extend(
                _tree(rng, float(xi), float(yi), in_woods, planted[0], terrain, config.crown_lobes, crowns)
            )
            planted[0] += 1

    all_uses = (FIELD, MEADOW, BUILT, WOODS)
    street = config.street_tree_spacing_m
    for lines, along_x in ((roads.along_x, True), (roads.along_y, False)):
        for line in lines:
            if abs(line) > half_site or rng.random() < 0.5:
                continue
            steps = np.arange(-half_site, half_site, street) + rng.uniform(0.0, street)
            for side in (-1.0, 1.0):
                across = np.full_like(steps, line + side * (roads.width / 2 + 3.2))
                x, y = (steps, across) if along_x else (across, steps)
                plant(x, y, accept(x, y, all_uses) & (rng.random(len(steps)) < 0.85), False)
    garden = rng.uniform(-half_site, half_site, (int(config.garden_trees_per_ha * area_ha), 2))
    plant(garden[:, 0], garden[:, 1], accept(garden[:, 0], garden[:, 1], (BUILT,)), False)
    hedge = rng.uniform(-half_site, half_site, (int(12 * area_ha), 2))
    plant(hedge[:, 0], hedge[:, 1], accept(hedge[:, 0], hedge[:, 1], (FIELD, MEADOW), (0.0, 2.0)), False)
    step = config.wood_tree_spacing_m
    grid = np.arange(-half_site, half_site, step) + step / 2
    wx, wy = (g.ravel() for g in np.meshgrid(grid, grid, indexing="ij"))
    wx, wy = wx + rng.uniform(-0.35, 0.35, wx.shape) * step, wy + rng.uniform(-0.35, 0.35, wy.shape) * step
    plant(wx, wy, accept(wx, wy, (WOODS,), (1.5, np.inf)), True)
    return _box_rows(rows)


def add_changes(
    config: SiteConfig,
    rng: np.random.Generator,
    objects: Objects,
    roads: Roads,
    terrain: Terrain | None = None,
) -> tuple[Objects, tuple[float, float, float, float]]:
    """New buildings in the square corner of side ``config.change_corner_m`` at +x, +y.

    A warehouse, a tower and a house are placed off the roads; existing objects whose ground
    bounding box comes within 1.5 m of a new building are removed. New buildings stand on
    ``terrain`` (default: flat ground at z = 0). Returns the changed objects and the corner
    ``(xmin, ymin, xmax, ymax)``.
    """
    terrain = Terrain.flat() if terrain is None else terrain
    h, c = config.extent_m / 2, min(config.change_corner_m, config.extent_m)
    corner = (h - c, h - c, h, h)
    designs = [
        ((20.0, 14.0), 7.0, texture.FLAT, [0.45, 0.52, 0.62], [0.86, 0.86, 0.84]),
        ((9.0, 9.0), 20.0, texture.SOLAR, [0.80, 0.80, 0.82], [0.30, 0.32, 0.36]),
        ((11.0, 8.0), 5.0, texture.TILES, [0.85, 0.80, 0.55], [0.68, 0.32, 0.22]),
    ]
    rows: list[dict] = []
    placed = np.zeros((len(designs), 3))
    for size, height, style, wall, roof in designs:
        radius = 0.5 * float(np.hypot(*size))
        for _ in range(500):
            x, y = rng.uniform(np.array(corner[:2]) + radius + 1.0, np.array(corner[2:]) - radius - 1.0)
            clear_road = roads.distance(np.array([x]), np.array([y]))[0] > radius + roads.width / 2 + 1.5
            if clear_road and _clear_of(x, y, radius, placed, len(rows), 2.0):
                placed[len(rows)] = (x, y, radius)
                yaw = rng.integers(0, 2) * np.pi / 2
                wall_rgb, roof_rgb = np.array(wall), np.array(roof)
                ground = terrain.lowest_under((x, y), (size[0] / 2, size[1] / 2), float(yaw))
                tone = rng.random()
                rows.append(
                    _building((x, y), size, height, yaw, style, wall_rgb, roof_rgb, tone, len(rows), ground)
                )
                break
    new = _box_rows(rows)
    lower, upper = objects.bounds()
    new_lower, new_upper = new.bounds()
    cleared = np.zeros(len(objects), dtype=bool)
    for lo, hi in zip(new_lower, new_upper, strict=True):
        cleared |= np.all(lower[:, :2] < hi[:2] + 1.5, axis=1) & np.all(upper[:, :2] > lo[:2] - 1.5, axis=1)
    # Clearing one part of a building or tree clears all of it (no floating upper levels).
    keep = ~np.isin(objects.group, objects.group[cleared])
    new.group += (int(objects.group.max()) + 1) if len(objects) else 0
    return Objects.concat([objects.select(keep), new]), corner
