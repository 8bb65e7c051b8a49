"""Smooth value noise over the plane: the source of every texture of the synthetic site.

All textures are functions of world position only (never of the view), so every photo of the
site agrees with every other photo about the colour of each surface point.
"""

from __future__ import annotations

import numpy as np

TABLE_SIZE = 256


class ValueNoise:
    """Value noise on a unit lattice: random values at integer points, smoothly interpolated.

    The lattice table is drawn once from a seeded generator and wraps every ``TABLE_SIZE``
    lattice units; callers sample it at irrational-looking scales so the period never shows.
    """

    def __init__(self, rng: np.random.Generator):
        table = rng.random((TABLE_SIZE, TABLE_SIZE)).astype(np.float32)
        # One extra row and column (wrapped copies) so that neighbours need no modulo.
        self.table = np.pad(table, ((0, 1), (0, 1)), mode="wrap")
        self._flat = self.table.ravel()

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Noise in [0, 1] at lattice coordinates ``(x, y)`` (any equal shapes), C1-continuous."""
        fx, fy = np.floor(x), np.floor(y)
        tx, ty = x - fx, y - fy
        sx, sy = tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty)
        mask, stride = TABLE_SIZE - 1, TABLE_SIZE + 1
        i = (fx.astype(np.intp) & mask) * stride + (fy.astype(np.intp) & mask)
        t = self._flat
        v00, v01, v10, v11 = t[i], t[i + 1], t[i + stride], t[i + stride + 1]
        top = v00 + sx * (v10 - v00)
        bottom = v01 + sx * (v11 - v01)
        return top + sy * (bottom - top)

    def fbm(self, x: np.ndarray, y: np.ndarray, scale_m: float, octaves: int = 3) -> np.ndarray:
        """Fractal sum of ``octaves`` noise layers; features ~``scale_m`` metres, result in [0, 1].

        Each octave halves the feature size and the amplitude and is shifted so that the
        layers do not line up.
        """
        total = np.zeros(np.shape(x), dtype=np.result_type(x, np.float32))
        amplitude, norm, frequency = 1.0, 0.0, 1.0 / scale_m
        for octave in range(octaves):
            shift = 17.31 * octave
            total += amplitude * self(x * frequency + shift, y * frequency - shift)
            norm += amplitude
            amplitude *= 0.5
            frequency *= 2.03
        return total / norm
