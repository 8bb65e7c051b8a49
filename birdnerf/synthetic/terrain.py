"""The ground of the synthetic site: a smooth height field, and exact ray / height-field hits.

The height is ``h(x, y) = base_z + sum_i a_i sin(k_i . (x, y) + phi_i)``: a few seeded
sinusoids of random direction and wavelength, which make rolling hills with a known bound on
the slope (``sum_i a_i |k_i|``). A flat terrain has no sinusoids and ``h = base_z``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COMPONENTS = 6
"""Sinusoids summed into the hills: enough that the surface does not look corrugated."""
NORMALIZE_SAMPLES = 97
"""Samples per axis of the grid on which the relief is measured and normalised."""
MAX_SLOPE = 0.25
"""Steepest slope (rise over run, on the normalisation grid) that hills may have."""


@dataclass(frozen=True)
class Terrain:
    """Height field of the ground, metres, world frame (z up)."""

    base_z: float
    """Constant part of the height."""
    amplitude: np.ndarray
    """(n,) amplitude of each sinusoid, metres."""
    wavevector: np.ndarray
    """(n, 2) spatial angular frequency (kx, ky) of each sinusoid, radians per metre."""
    phase: np.ndarray
    """(n,) phase of each sinusoid, radians."""

    @staticmethod
    def flat(z: float = 0.0) -> Terrain:
        """Flat ground at height ``z`` (metres)."""
        return Terrain(z, np.zeros(0), np.zeros((0, 2)), np.zeros(0))

    @staticmethod
    def hills(
        ground_z: float, relief_m: float, wavelength_m: float, extent_m: float, rng: np.random.Generator
    ) -> Terrain:
        """Rolling hills whose peak-to-peak height over the site square is ``relief_m``.

        Args:
            ground_z: mean height of the ground over the site, metres.
            relief_m: peak-to-peak height across the site ``[-extent/2, extent/2]^2``, metres
                (measured on a grid; beyond the site the ground may rise or fall slightly more).
                A site narrower than ``wavelength_m`` is measured over a square that wide
                instead, so that a small site gets gentle slopes rather than a steep ramp. Hills
                that would be steeper than ``MAX_SLOPE`` somewhere are lowered until they are not.
            wavelength_m: typical distance between hilltops; the sinusoids' wavelengths are
                0.7x to 1.4x this. The steepest slope is 2 to 3 times ``relief_m / wavelength_m``.
            extent_m: side of the site square, metres.
            rng: the site's terrain stream.
        """
        if relief_m <= 0.0:
            return Terrain.flat(ground_z)
        angle = rng.uniform(0.0, 2 * np.pi, COMPONENTS)
        wavelength = wavelength_m * rng.uniform(0.7, 1.4, COMPONENTS)
        # Longer waves carry more height, as in natural terrain.
        raw = wavelength * rng.uniform(0.5, 1.0, COMPONENTS)
        phase = rng.uniform(0.0, 2 * np.pi, COMPONENTS)
        k = (2 * np.pi / wavelength)[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        shape = Terrain(0.0, raw, k, phase)
        side = max(extent_m, wavelength_m)
        g = np.linspace(-side / 2, side / 2, NORMALIZE_SAMPLES)
        gx, gy = np.meshgrid(g, g, indexing="ij")
        v = shape.height(gx, gy)
        steepest = float(np.hypot(*shape.gradient(gx, gy)).max())
        scale = min(relief_m / float(v.max() - v.min()), MAX_SLOPE / steepest)
        return Terrain(ground_z - scale * float(v.mean()), raw * scale, k, phase)

    @property
    def is_flat(self) -> bool:
        return len(self.amplitude) == 0

    @property
    def z_min(self) -> float:
        """Lower bound of the height anywhere, metres."""
        return self.base_z - float(np.abs(self.amplitude).sum())

    @property
    def z_max(self) -> float:
        """Upper bound of the height anywhere, metres."""
        return self.base_z + float(np.abs(self.amplitude).sum())

    @property
    def slope_bound(self) -> float:
        """Upper bound of ``|grad h|`` anywhere (rise over run)."""
        return float((np.abs(self.amplitude) * np.linalg.norm(self.wavevector, axis=1)).sum())

    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Height (metres) at world points ``(x, y)`` (any equal shapes), float64."""
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        h = np.full(np.broadcast_shapes(x.shape, y.shape), self.base_z)
        for a, (kx, ky), p in zip(self.amplitude, self.wavevector, self.phase, strict=True):
            h += a * np.sin(kx * x + ky * y + p)
        return h

    def gradient(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(dh/dx, dh/dy)`` at world points ``(x, y)``, float64."""
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        gx = np.zeros(np.broadcast_shapes(x.shape, y.shape))
        gy = np.zeros_like(gx)
        for a, (kx, ky), p in zip(self.amplitude, self.wavevector, self.phase, strict=True):
            c = a * np.cos(kx * x + ky * y + p)
            gx += kx * c
            gy += ky * c
        return gx, gy

    def normal(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(..., 3) upward unit normal at world points ``(x, y)``."""
        gx, gy = self.gradient(x, y)
        n = np.stack([-gx, -gy, np.ones_like(gx)], axis=-1)
        return n / np.linalg.norm(n, axis=-1, keepdims=True)

    def mean_height(self, bounds: tuple[float, float, float, float], samples: int = 65) -> float:
        """Mean height (metres) over the rectangle ``(xmin, ymin, xmax, ymax)``, on a grid."""
        if self.is_flat:
            return self.base_z
        xmin, ymin, xmax, ymax = bounds
        gx, gy = np.meshgrid(
            np.linspace(xmin, xmax, samples), np.linspace(ymin, ymax, samples), indexing="ij"
        )
        return float(self.height(gx, gy).mean())

    def lowest_under(self, center_xy: tuple[float, float], half_xy: tuple[float, float], yaw: float) -> float:
        """A height (metres) at or below the ground everywhere under a rotated rectangle.

        The rectangle (centre, half extents along its local axes, rotated by ``yaw`` radians
        about +z) is sampled at most 1 m apart; the minimum is lowered by the most the ground can
        dip between samples, so an object based there never floats.
        """
        if self.is_flat:
            return self.base_z
        hx, hy = max(half_xy[0], 1e-3), max(half_xy[1], 1e-3)
        nx, ny = int(np.ceil(2 * hx)) + 1, int(np.ceil(2 * hy)) + 1
        lx, ly = np.meshgrid(np.linspace(-hx, hx, nx), np.linspace(-hy, hy, ny), indexing="ij")
        c, s = np.cos(yaw), np.sin(yaw)
        x = center_xy[0] + c * lx - s * ly
        y = center_xy[1] + s * lx + c * ly
        gap = 0.5 * np.hypot(2 * hx / (nx - 1), 2 * hy / (ny - 1))
        return float(self.height(x, y).min()) - self.slope_bound * gap

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Ray parameter of the first hit of rays ``x = o + t d`` with the ground.

        Args:
            o: (3,) ray origin, metres, above the ground.
            d: (3, ...) ray directions (any non-zero length).

        Returns:
            (...) ``t`` of the hit, ``inf`` where the ray never meets the ground (sky).

        A flat terrain is a plane. Otherwise rays descend through the slab between ``z_max`` and
        ``z_min``. A ray steeper than every slope (``-d_z > slope_bound * |d_xy|``) meets the
        ground exactly once there: the root is bracketed by the slab and found by secant steps
        kept inside the bracket, then refined by bisection. A shallower ray may graze a hill, so
        it advances by steps that cannot pass the first hit (the height gap over the largest
        rate at which it can close) before the same refinement.
        """
        o = np.asarray(o, dtype=np.float64)
        d = np.asarray(d, dtype=np.float64)
        if self.is_flat:
            with np.errstate(divide="ignore"):
                return np.where(d[2] < 0, (self.base_z - o[2]) / np.minimum(d[2], -1e-300), np.inf)
        shape = d.shape[1:]
        d = d.reshape(3, -1)
        t = np.full(d.shape[1], np.inf)
        dz, run = d[2], np.hypot(d[0], d[1])
        zmin, zmax, slope = self.z_min, self.z_max, self.slope_bound
        with np.errstate(divide="ignore", invalid="ignore"):
            t_top = np.where(o[2] > zmax, (zmax - o[2]) / dz, 0.0)
            t_bottom = (zmin - o[2]) / dz
        enters = (o[2] <= zmax) | (dz < 0)
        steep = enters & (dz < 0) & (-dz > slope * run)
        if steep.any():
            t[steep] = self._solve(o, d[:, steep], t_top[steep], t_bottom[steep])
        shallow = np.flatnonzero(enters & ~steep)
        if len(shallow):
            t[shallow] = self._march(o, d[:, shallow], t_top[shallow], dz[shallow], run[shallow])
        return t.reshape(shape)

    def _gap(self, o: np.ndarray, d: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Height of the ray points above the ground, metres (negative below it)."""
        p = o[:, None] + d * t
        return p[2] - self.height(p[0], p[1])

    def _solve(self, o: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Root of the rays' height gap in ``[lo, hi]`` (gap >= 0 at lo, <= 0 at hi, one root).

        Secant steps inside the bracket (Illinois rule: an end kept twice has its gap halved,
        so both ends close in), until the bracket is under a micrometre per metre of ``t``;
        a final bisection step returns the middle of the last bracket.
        """
        lo, hi = lo.copy(), hi.copy()
        f_lo, f_hi = self._gap(o, d, lo), self._gap(o, d, hi)
        kept = np.zeros(len(lo), dtype=np.int8)  # +1: lo moved last, -1: hi moved last
        active = np.arange(len(lo))
        for _ in range(100):
            a = active
            open_ = hi[a] - lo[a] > 1e-6 * np.maximum(1.0, np.abs(hi[a]))
            active = a = a[open_]
            if len(a) == 0:
                break
            denom = f_lo[a] - f_hi[a]
            frac = np.clip(
                np.where(denom > 0, f_lo[a] / np.where(denom > 0, denom, 1.0), 0.5), 1e-3, 1 - 1e-3
            )
            mid = lo[a] + frac * (hi[a] - lo[a])
            f_mid = self._gap(o, d[:, a], mid)
            above = f_mid >= 0
            f_hi[a] = np.where(above & (kept[a] == 1), 0.5 * f_hi[a], f_hi[a])
            f_lo[a] = np.where(~above & (kept[a] == -1), 0.5 * f_lo[a], f_lo[a])
            lo[a], f_lo[a] = np.where(above, mid, lo[a]), np.where(above, f_mid, f_lo[a])
            hi[a], f_hi[a] = np.where(above, hi[a], mid), np.where(above, f_hi[a], f_mid)
            kept[a] = np.where(above, 1, -1)
        mid = 0.5 * (lo + hi)
        above = self._gap(o, d, mid) >= 0
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
        return 0.5 * (lo + hi)

    def _march(
        self, o: np.ndarray, d: np.ndarray, t: np.ndarray, dz: np.ndarray, run: np.ndarray
    ) -> np.ndarray:
        """First hits of shallow rays from ``t`` on, by steps that never pass the surface."""
        rate = np.abs(dz) + self.slope_bound * run  # the gap shrinks at most this fast per unit t
        with np.errstate(divide="ignore"):
            # Beyond this the ray is above z_max and climbing, or has run 20 km: the sky.
            t_end = np.where(dz > 0, (self.z_max - o[2]) / np.where(dz > 0, dz, 1.0), 2e4 / run)
        out = np.full(len(t), np.inf)
        active = np.arange(len(t))
        for _ in range(4000):
            if len(active) == 0:
                break
            gap = self._gap(o, d[:, active], t[active])
            near = gap < 1e-4
            if near.any():
                k = active[near]
                # Bracket the crossing just beyond, if the ray goes under; else it touches here.
                probe = t[k] + 1e-3 / np.linalg.norm(d[:, k], axis=0)
                under = self._gap(o, d[:, k], probe) <= 0
                solved = t[k].copy()
                if under.any():
                    solved[under] = self._solve(o, d[:, k[under]], t[k[under]], probe[under])
                out[k] = solved
            t[active] += np.where(near, 0.0, gap / rate[active])
            active = active[~near & (t[active] < t_end[active])]
        return out
