"""The world model of the synthetic site: parcels of land, roads, buildings and trees.

World frame: right-handed, metres, z up; the site is the square ``[-extent/2, extent/2]^2``
centred on the origin. Beyond the site the ground (parcels and roads) continues for
``ground_margin_m`` so that photos near the border see plausible land, but every building and
tree stands inside the site. The ground is flat at ``z = ground_z_m`` (0 by default), or rolling
hills around that height (:mod:`birdnerf.synthetic.terrain`); buildings and trees stand on it.

Solid objects are three kinds of primitives, all intersected exactly by the ray caster:

- ``BUILDING``: a box (one storey block; a two-level building is two stacked boxes) rotated by
  ``yaw`` about +z, with facades, windows and a textured roof;
- ``TRUNK``: a thin box under a canopy;
- ``CANOPY``: a vertical spheroid with radii ``(r_h, r_h, r_v)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from birdnerf.synthetic.noise import ValueNoise
from birdnerf.synthetic.terrain import Terrain

BUILDING, TRUNK, CANOPY = 0, 1, 2
FIELD, MEADOW, BUILT, WOODS = 0, 1, 2, 3
GROUND, SKY = -1, -2
"""What a ray hit when it hit no object: the ground, or nothing (the sky)."""


@dataclass(frozen=True)
class SiteConfig:
    """Parameters of the procedural site. Lengths in metres, densities per hectare."""

    extent_m: float = 180.0
    """Side of the square site centred on the origin; buildings and trees stand inside it."""
    ground_margin_m: float = 200.0
    """How far beyond the site the textured ground (parcels, roads) continues."""
    parcel_m: float = 42.0
    """Mean size of a parcel of land (a field, a meadow, a built plot, a wood)."""
    road_spacing_m: tuple[float, float] = (85.0, 140.0)
    """Range of the distance between parallel roads."""
    road_width_m: float = 7.0
    built_fraction: float = 0.28
    """Share of parcels with buildings (higher near roads)."""
    woods_fraction: float = 0.08
    meadow_fraction: float = 0.15
    buildings_per_ha: float = 15.0
    """Buildings per hectare of built parcels."""
    garden_trees_per_ha: float = 22.0
    wood_tree_spacing_m: float = 5.5
    street_tree_spacing_m: float = 11.0
    max_building_height_m: float = 24.0
    """Tallest main block of a building; an upper level adds 3 to 8 m."""
    change_corner_m: float = 67.5
    """Side of the square corner (at +x, +y) where a changed site gains new buildings."""
    sun_azimuth_deg: float = 135.0
    """Direction of the sun in the ground plane, counter-clockwise from +x."""
    sun_elevation_deg: float = 50.0
    ground_z_m: float = 0.0
    """Height of the ground (the mean over the site where it has relief), world z."""
    terrain_relief_m: float = 0.0
    """Peak-to-peak height of the smooth hills across the site (less if a slope would pass 0.25); 0: flat."""
    terrain_wavelength_m: float = 120.0
    """Typical distance between hilltops; the steepest slope is 2 to 3 times relief / wavelength."""
    crown_lobes: int = 1
    """Spheroids per tree crown: 1 is an ellipsoid, more make an irregular cluster."""
    tower_fraction: float = 0.0
    """Share of buildings that are towers (taller than ``max_building_height_m``)."""
    tower_height_m: float = 45.0
    """Tallest tower, including its upper level."""


def sun_direction(config: SiteConfig) -> np.ndarray:
    """(3,) unit vector pointing towards the sun of a site."""
    az, el = np.radians(config.sun_azimuth_deg), np.radians(config.sun_elevation_deg)
    return np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])


@dataclass
class Objects:
    """Solid primitives of the site, one row each (K rows)."""

    kind: np.ndarray
    """(K,) int8: BUILDING, TRUNK or CANOPY."""
    center: np.ndarray
    """(K, 3) centre in world metres."""
    half: np.ndarray
    """(K, 3) box half extents along its local axes, or spheroid radii (r_h, r_h, r_v), metres."""
    yaw: np.ndarray
    """(K,) rotation of a box's local x axis from world +x, counter-clockwise about +z, radians."""
    style: np.ndarray
    """(K,) int8 roof style of a building (see ``texture.ROOF_STYLES``)."""
    color_a: np.ndarray
    """(K, 3) wall, bark or foliage colour, RGB in [0, 1]."""
    color_b: np.ndarray
    """(K, 3) roof colour, RGB in [0, 1]."""
    tone: np.ndarray
    """(K,) per-object variation in [0, 1)."""
    group: np.ndarray
    """(K,) int64 id shared by the parts of one building (its levels) or one tree."""
    ground: np.ndarray
    """(K,) world z the building or tree stands on (at or below the ground under it), metres."""

    def __len__(self) -> int:
        return len(self.kind)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """World axis-aligned bounding boxes: (K, 3) lower and (K, 3) upper corners."""
        c, s = np.abs(np.cos(self.yaw)), np.abs(np.sin(self.yaw))
        ex = c * self.half[:, 0] + s * self.half[:, 1]
        ey = s * self.half[:, 0] + c * self.half[:, 1]
        extent = np.stack([ex, ey, self.half[:, 2]], axis=1)
        return self.center - extent, self.center + extent

    def select(self, keep: np.ndarray) -> Objects:
        """The objects at ``keep`` (boolean mask or indices), in order."""
        return Objects(**{k: v[keep] for k, v in vars(self).items()})

    @staticmethod
    def concat(parts: list[Objects]) -> Objects:
        return Objects(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in vars(parts[0])})


@dataclass
class Parcels:
    """Voronoi parcels of land around seeds jittered on a square lattice.

    Per-parcel arrays are (nx, ny) over the lattice; ``lookup`` returns flat indices into them.
    """

    origin: np.ndarray
    """(2,) world position of lattice cell (0, 0)'s corner."""
    spacing: float
    seeds: np.ndarray
    """(nx, ny, 2) seed positions."""
    use: np.ndarray
    """(nx, ny) land use: FIELD, MEADOW, BUILT or WOODS."""
    color: np.ndarray
    """(nx, ny, 3) base colour."""
    angle: np.ndarray
    """(nx, ny) orientation of crop rows and buildings, radians from +x."""
    period: np.ndarray
    """(nx, ny) crop row period, metres."""

    def lookup(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Parcel of each point (flat index) and its distance to the parcel's border (metres).

        The nearest seed is searched among the 3 x 3 lattice cells around the point (seeds are
        jittered by less than half a cell, so it is always there).
        """
        nx, ny = self.use.shape
        seed_x = self.seeds[..., 0].ravel().astype(x.dtype)
        seed_y = self.seeds[..., 1].ravel().astype(x.dtype)
        # Points beyond the lattice use its outermost parcels.
        gx = np.clip(np.floor((x - self.origin[0]) / self.spacing), 1, nx - 2).astype(np.intp)
        gy = np.clip(np.floor((y - self.origin[1]) / self.spacing), 1, ny - 2).astype(np.intp)
        home = gx * ny + gy
        candidates = []
        best_d2 = np.full(np.shape(x), np.inf, dtype=x.dtype)
        best = home
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                cell = home + (di * ny + dj)
                sx, sy = seed_x[cell], seed_y[cell]
                d2 = (sx - x) ** 2 + (sy - y) ** 2
                closer = d2 < best_d2
                best_d2 = np.where(closer, d2, best_d2)
                best = np.where(closer, cell, best)
                candidates.append((sx, sy))
        bx, by = seed_x[best], seed_y[best]
        border = np.full(np.shape(x), np.inf, dtype=x.dtype)
        for sx, sy in candidates:
            # Distance to the bisector between the nearest seed and this candidate.
            vx, vy = sx - bx, sy - by
            length = np.sqrt(vx * vx + vy * vy)
            valid = length > 1e-6
            along = (x - 0.5 * (sx + bx)) * vx + (y - 0.5 * (sy + by)) * vy
            dist = np.abs(along) / np.where(valid, length, 1)
            border = np.minimum(border, np.where(valid, dist, np.inf))
        return best, border


@dataclass
class Roads:
    """Straight roads crossing the whole ground: some along x, some along y."""

    along_x: np.ndarray
    """Sorted y positions of the roads that run along the x axis."""
    along_y: np.ndarray
    """Sorted x positions of the roads that run along the y axis."""
    width: float

    @staticmethod
    def offset(lines: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Signed offset (metres) of coordinates ``v`` from the nearest of the sorted ``lines``."""
        if len(lines) == 0:
            return np.full(np.shape(v), np.inf)
        k = np.searchsorted(lines, v)
        lo = lines[np.clip(k - 1, 0, len(lines) - 1)]
        hi = lines[np.clip(k, 0, len(lines) - 1)]
        return np.where(np.abs(v - lo) <= np.abs(v - hi), v - lo, v - hi)

    def distance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Distance (metres) from points to the centre line of the nearest road."""
        return np.minimum(np.abs(self.offset(self.along_x, y)), np.abs(self.offset(self.along_y, x)))


@dataclass
class ShadowMap:
    """Sunlit fraction of the ground on a regular grid (1 = lit, 0 = in an object's shadow)."""

    origin: np.ndarray
    """(2,) world position of sample (0, 0)."""
    cell: float
    lit: np.ndarray
    """(nx, ny) float32; the outermost rows and columns are 1."""

    def sample(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Bilinearly interpolated sunlit fraction at ground points; 1 outside the grid.

        The grid's outermost samples are lit, so clamping far points onto it reads 1.
        """
        nx, ny = self.lit.shape
        u = np.clip((x - self.origin[0]) / self.cell, 0, nx - 1.001)
        v = np.clip((y - self.origin[1]) / self.cell, 0, ny - 1.001)
        i, j = u.astype(np.intp), v.astype(np.intp)
        fu, fv = u - i, v - j
        g = self.lit.ravel()
        k = i * ny + j
        top = g[k] + fu * (g[k + ny] - g[k])
        bottom = g[k + 1] + fu * (g[k + ny + 1] - g[k + 1])
        return top + fv * (bottom - top)


class SpatialIndex:
    """Objects bucketed by square ground cells, so a query costs what lies near it, not the site."""

    def __init__(self, lower: np.ndarray, upper: np.ndarray, cell_m: float = 32.0):
        self.cell = cell_m
        buckets: dict[tuple[int, int], list[int]] = {}
        lo = np.floor(lower[:, :2] / cell_m).astype(np.int64)
        hi = np.floor(upper[:, :2] / cell_m).astype(np.int64)
        for k in range(len(lower)):
            for i in range(lo[k, 0], hi[k, 0] + 1):
                for j in range(lo[k, 1], hi[k, 1] + 1):
                    buckets.setdefault((i, j), []).append(k)
        self.buckets = {key: np.asarray(v, dtype=np.int64) for key, v in buckets.items()}

    def query(self, xmin: float, ymin: float, xmax: float, ymax: float) -> np.ndarray:
        """Sorted indices of the objects whose ground bounding box may meet the rectangle."""
        i0, i1 = int(np.floor(xmin / self.cell)), int(np.floor(xmax / self.cell))
        j0, j1 = int(np.floor(ymin / self.cell)), int(np.floor(ymax / self.cell))
        if (i1 - i0 + 1) * (j1 - j0 + 1) > 4 * len(self.buckets):
            parts = list(self.buckets.values())
        else:
            cells = [(i, j) for i in range(i0, i1 + 1) for j in range(j0, j1 + 1)]
            parts = [self.buckets[c] for c in cells if c in self.buckets]
        found = [p for p in parts if len(p)]
        return np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)


@dataclass
class Site:
    """Everything needed to render the site from any camera."""

    config: SiteConfig
    seed: int
    parcels: Parcels
    roads: Roads
    objects: Objects
    noise: ValueNoise
    shadow: ShadowMap
    index: SpatialIndex
    change_bounds: tuple[float, float, float, float] | None = None
    """(xmin, ymin, xmax, ymax) of the corner where buildings were added, for a changed site."""
    terrain: Terrain = field(default_factory=Terrain.flat)
    """Height of the ground."""

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the site, metres."""
        h = self.config.extent_m / 2
        return (-h, -h, h, h)

    @property
    def sun(self) -> np.ndarray:
        """(3,) unit vector pointing towards the sun."""
        return sun_direction(self.config)

    @property
    def max_height(self) -> float:
        """World z (metres) of the highest point of any object, or of the ground if higher.

        On the default flat ground at z = 0 this is the height above the ground (0 for an empty
        site); on hills, where no object rises above them, it is a bound of the hilltops.
        """
        if len(self.objects) == 0:
            return self.terrain.z_max
        return max(self.terrain.z_max, float((self.objects.center[:, 2] + self.objects.half[:, 2]).max()))

    def ground_height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """World z (metres, float64) of the ground at world points ``(x, y)`` (any equal shapes)."""
        return self.terrain.height(x, y)

    def ground_normal(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(..., 3) upward unit normal of the ground at world points ``(x, y)``."""
        return self.terrain.normal(x, y)
