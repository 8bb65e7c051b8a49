"""Which photo pairs feature matching compares: neighbours on the ground, from GPS.

Matching every pair costs O(n^2); a survey photo only overlaps its neighbours. With GPS, each
photo is paired with its ``k`` nearest photos by the ground point it looks at: its own position
for nadir photos, and for oblique DJI photos (gimbal pitch and height above take-off in XMP) the
point where its optical axis meets the take-off plane. Photos without GPS are paired with their
neighbours in file-name order (drones number photos in flight order), or with every photo in
small sets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from birdnerf.geo.enu import geodetic_to_enu, mean_origin
from birdnerf.geo.exif import PhotoMeta

EXHAUSTIVE_MAX_PHOTOS = 30
"""Sets this small are matched exhaustively whatever their GPS says (at most 435 pairs)."""
OBLIQUE_PITCH_DEG = (-80.0, -10.0)
"""Gimbal pitch range (degrees, 0 = horizon, -90 = straight down) treated as oblique."""
MAX_LOOK_OFFSET = 3.0
"""Cap on the look-point offset, in multiples of the height above take-off."""


def look_points(metas: Sequence[PhotoMeta]) -> np.ndarray:
    """(N, 2) east/north metres of the ground point each photo looks at; NaN rows without GPS."""
    have = [i for i, m in enumerate(metas) if m.gps is not None]
    points = np.full((len(metas), 2), np.nan)
    if not have:
        return points
    gps = [metas[i].gps for i in have]
    lat = np.array([g.lat for g in gps])  # type: ignore[union-attr]
    lon = np.array([g.lon for g in gps])  # type: ignore[union-attr]
    alt = np.array([g.alt for g in gps])  # type: ignore[union-attr]
    enu = geodetic_to_enu(lat, lon, alt, mean_origin(lat, lon, alt))
    for row, i in enumerate(have):
        dji = metas[i].dji
        pitch, yaw, height = (
            dji.get("GimbalPitchDegree"),
            dji.get("GimbalYawDegree"),
            dji.get("RelativeAltitude"),
        )
        offset = np.zeros(2)
        if pitch is not None and yaw is not None and height and height > 0:
            if OBLIQUE_PITCH_DEG[0] <= pitch <= OBLIQUE_PITCH_DEG[1]:
                distance = min(height / math.tan(math.radians(-pitch)), MAX_LOOK_OFFSET * height)
                # Yaw is clockwise from north: east = sin(yaw), north = cos(yaw).
                offset = distance * np.array([math.sin(math.radians(yaw)), math.cos(math.radians(yaw))])
        points[i] = enu[row, :2] + offset
    return points


def select_pairs(names: Sequence[str], points: np.ndarray, neighbors: int = 10) -> list[tuple[int, int]]:
    """Index pairs (i < j) to match, sorted.

    Args:
        names: photo names (their order is the flight order for photos without GPS).
        points: (N, 2) ground look points in metres, NaN rows for photos without GPS.
        neighbors: how many nearest photos each photo is paired with.
    """
    n = len(names)
    if n <= max(EXHAUSTIVE_MAX_PHOTOS, neighbors + 1):
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    pairs: set[tuple[int, int]] = set()
    located = np.flatnonzero(np.all(np.isfinite(points), axis=1))
    if len(located) > 1:
        xy = points[located]
        dist = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
        np.fill_diagonal(dist, np.inf)
        k = min(neighbors, len(located) - 1)
        nearest = np.argsort(dist, axis=1, kind="stable")[:, :k]
        for a, row in enumerate(nearest):
            for b in row:
                i, j = int(located[a]), int(located[b])
                pairs.add((min(i, j), max(i, j)))
    order = sorted(range(n), key=lambda i: names[i])
    rank = {i: r for r, i in enumerate(order)}
    half = max(1, neighbors // 2)
    has_gps = set(located.tolist())
    for i in range(n):
        if i in has_gps:
            continue
        for step in range(1, half + 1):
            for r in (rank[i] - step, rank[i] + step):
                if 0 <= r < n and order[r] != i:
                    j = order[r]
                    pairs.add((min(i, j), max(i, j)))
    return sorted(pairs)
