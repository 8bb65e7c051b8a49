"""An occupancy grid over a block's box, so that marching skips empty space.

The grid divides the world-space box ``aabb = (xmin, ymin, zmin, xmax, ymax, zmax)`` into
``rx x ry x rz`` equal cells (cell ``(i, j, k)`` spans ``lo + [i, i+1] * cell_size`` on x, and so
on). Aerial blocks are flat, so the resolution may differ per axis, e.g. ``(128, 128, 32)``.
Everything the grid takes and gives is in **world metres**: ``sigma_fn`` receives world points in
the box, :meth:`OccupancyGrid.query` takes world points.

The update follows Instant-NGP / nerfacc: every ``every_n`` steps, evaluate the density at one
jittered point in a set of cells (all cells during the warm-up; afterwards a random quarter of all
cells plus as many random occupied cells), keep ``density = max(density * ema_decay, sigma)`` for
those cells, and mark a cell occupied when ``density * step_size > min(mean(density) * step_size,
occ_thre)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

SigmaFn = Callable[[Tensor], Tensor]


class OccupancyGrid(nn.Module):
    """Binary occupancy of a box's cells, kept up to date from a density callback.

    State (registered buffers, saved in ``state_dict`` and moved by ``.to(device)``):

    - ``aabb`` (6,) float32: the box, world metres.
    - ``density`` (rx, ry, rz) float32: running maximum of the decayed density σ (1/m) per cell.
    - ``binary`` (rx, ry, rz) bool: the occupied cells. It starts all True (nothing is known to
      be empty), so marching with a fresh grid skips nothing.

    Args:
        aabb: (6,) ``(xmin, ymin, zmin, xmax, ymax, zmax)``, world metres.
        resolution: cells per axis, one int for all three or ``(rx, ry, rz)``.

    Example:
        >>> grid = OccupancyGrid([0, 0, 0, 100, 100, 25], resolution=(128, 128, 32))
        >>> for step in range(n_steps):
        ...     grid.update(step, lambda x: field.density(x), step_size=render_step)
        ...     samples = march_rays(origins, dirs, t_near, t_far, render_step, grid, stratified=True)
    """

    aabb: Tensor
    density: Tensor
    binary: Tensor

    def __init__(self, aabb: Tensor | Sequence[float], resolution: int | Sequence[int] = 128):
        super().__init__()
        res = (resolution,) * 3 if isinstance(resolution, int) else tuple(int(r) for r in resolution)
        if len(res) != 3 or min(res) < 1:
            raise ValueError(f"resolution must be a positive int or three of them, got {resolution}")
        box = torch.as_tensor(aabb, dtype=torch.float32).reshape(-1)
        if box.numel() != 6 or not bool((box[3:] > box[:3]).all()):
            raise ValueError(f"aabb must be (xmin, ymin, zmin, xmax, ymax, zmax) with max > min, got {aabb}")
        self.resolution: tuple[int, int, int] = (res[0], res[1], res[2])
        self.register_buffer("aabb", box.clone())
        self.register_buffer("density", torch.zeros(self.resolution))
        self.register_buffer("binary", torch.ones(self.resolution, dtype=torch.bool))

    @property
    def num_cells(self) -> int:
        return self.resolution[0] * self.resolution[1] * self.resolution[2]

    @property
    def cell_size(self) -> Tensor:
        """(3,) edge lengths of one cell, metres."""
        return (self.aabb[3:] - self.aabb[:3]) / self.aabb.new_tensor(self.resolution)

    @property
    def occupied_fraction(self) -> float:
        """Share of cells marked occupied, in [0, 1]."""
        return float(self.binary.float().mean())

    def cell_index(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Flat cell index of world points and whether they lie in the box.

        Args:
            points: (M, 3) world points, metres.

        Returns:
            ``index`` (M,) int64 in ``[0, rx*ry*rz)`` (row-major over (i, j, k); clamped for
            points outside), and ``inside`` (M,) bool (box boundaries included).
        """
        return self._index_of_grid_coords(self.to_grid_coords(points))

    def to_grid_coords(self, points: Tensor) -> Tensor:
        """(M, 3) world points -> continuous cell coordinates ``(points - lo) / cell_size``.

        Cell ``(i, j, k)`` covers ``[i, i+1) x [j, j+1) x [k, k+1)``; the box is ``[0, res]``.
        """
        lo = self.aabb[:3].to(points.dtype)
        return (points - lo) / self.cell_size.to(points.dtype)

    def _index_of_grid_coords(self, coords: Tensor) -> tuple[Tensor, Tensor]:
        return self._index_of_axes(*(c.contiguous() for c in coords.unbind(-1)))

    def _index_of_axes(self, x: Tensor, y: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """Flat index and inside mask from the three (M,) cell coordinates (one pass per axis)."""
        rx, ry, rz = self.resolution
        inside = (x >= 0) & (x <= rx) & (y >= 0) & (y <= ry) & (z >= 0) & (z <= rz)
        # Clamping before the cast makes truncation a floor, and points on the far faces land in
        # the last cell.
        i, j, k = (c.clamp(0, r - 1).long() for c, r in ((x, rx), (y, ry), (z, rz)))
        return (i * ry + j) * rz + k, inside

    def query(self, points: Tensor) -> Tensor:
        """(M,) bool: True for world points (M, 3) inside the box and in an occupied cell."""
        return self.query_grid_coords(self.to_grid_coords(points))

    def query_grid_coords(self, coords: Tensor) -> Tensor:
        """(M,) bool: :meth:`query` for continuous cell coordinates (see :meth:`to_grid_coords`)."""
        index, inside = self._index_of_grid_coords(coords)
        return self.binary.reshape(-1).index_select(0, index) & inside

    def query_along_rays(self, origins: Tensor, dirs: Tensor, ray_indices: Tensor, t: Tensor) -> Tensor:
        """(M,) bool: :meth:`query` at ``origins[ray_indices] + t * dirs[ray_indices]``.

        The fast path of marching: rays are converted to cell units once, and every point costs
        one gather and one multiply-add per axis (no (M, 3) gathers).

        Args:
            origins: (N, 3) world metres. dirs: (N, 3). ray_indices: (M,) int64 rows of them.
            t: (M,) distances along the rays.
        """
        o_cells = self.to_grid_coords(origins.to(t.dtype))
        d_cells = dirs.to(t.dtype) / self.cell_size.to(t.dtype)
        axes = [
            torch.addcmul(
                o.contiguous().index_select(0, ray_indices), d.contiguous().index_select(0, ray_indices), t
            )
            for o, d in zip(o_cells.unbind(-1), d_cells.unbind(-1), strict=True)
        ]
        index, inside = self._index_of_axes(*axes)
        return self.binary.reshape(-1).index_select(0, index) & inside

    def cell_centers(self, cells: Tensor | None = None) -> Tensor:
        """(C, 3) world centres of the given flat cell indices (all cells when None)."""
        if cells is None:
            cells = torch.arange(self.num_cells, device=self.aabb.device)
        return self._cell_points(cells, torch.full((cells.numel(), 3), 0.5, device=self.aabb.device))

    def _cell_points(self, cells: Tensor, offsets: Tensor) -> Tensor:
        """World points at fractional ``offsets`` (C, 3) in [0, 1) within flat ``cells`` (C,)."""
        ry, rz = self.resolution[1], self.resolution[2]
        ijk = torch.stack([cells // (ry * rz), (cells // rz) % ry, cells % rz], dim=-1)
        return self.aabb[:3] + (ijk.to(offsets.dtype) + offsets) * self.cell_size

    @torch.no_grad()
    def update(
        self,
        step: int,
        sigma_fn: SigmaFn,
        *,
        every_n: int = 16,
        warmup_steps: int = 256,
        ema_decay: float = 0.95,
        occ_thre: float = 0.01,
        step_size: float = 1.0,
        chunk_size: int = 1 << 16,
        generator: torch.Generator | None = None,
    ) -> bool:
        """Refresh the grid from the current density when ``step % every_n == 0``.

        Args:
            step: the training step.
            sigma_fn: maps (M, 3) world points (float32, on the grid's device) to (M,) densities σ
                in 1/m; called under ``torch.no_grad`` in chunks of ``chunk_size`` points.
            every_n: update period, in steps.
            warmup_steps: before this step every cell is evaluated; from it on, ``C/4`` random
                cells plus ``C/4`` random occupied cells (C = number of cells).
            ema_decay: factor applied to the stored density of each evaluated cell before the
                maximum with the new value.
            occ_thre: occupancy threshold on ``σ * step_size`` (the opacity-like quantity of one
                marching step); the threshold actually used is ``min(mean(σ) * step_size, occ_thre)``.
            step_size: the marching step (metres) the grid serves.
            chunk_size: points per ``sigma_fn`` call.
            generator: random source for cell choice and jitter (on the grid's device).

        Returns:
            True when the grid was updated at this step.
        """
        if step % every_n != 0:
            return False
        device = self.aabb.device
        n = self.num_cells
        if step < warmup_steps:
            cells = torch.arange(n, device=device)
        else:
            quarter = max(n // 4, 1)
            cells = torch.randint(n, (quarter,), device=device, generator=generator)
            occupied = self.binary.reshape(-1).nonzero().squeeze(1)
            if occupied.numel() > 0:
                pick = torch.randint(occupied.numel(), (quarter,), device=device, generator=generator)
                cells = torch.cat([cells, occupied[pick]])
        jitter = torch.rand((cells.numel(), 3), device=device, generator=generator)
        points = self._cell_points(cells, jitter)
        sigma = torch.cat([sigma_fn(chunk).reshape(-1) for chunk in points.split(chunk_size)])
        sigma = torch.nan_to_num(sigma.to(self.density.dtype), nan=0.0)

        flat = self.density.reshape(-1)
        # A cell drawn twice gets the same decayed value twice, then the maximum of all its samples.
        flat[cells] = flat[cells] * ema_decay
        flat.scatter_reduce_(0, cells, sigma, reduce="amax")
        threshold = torch.clamp(flat.mean() * step_size, max=occ_thre)
        self.binary.copy_(self.density * step_size > threshold)
        return True

    def extra_repr(self) -> str:
        box = ", ".join(f"{v:g}" for v in self.aabb.tolist())
        return f"aabb=({box}), resolution={self.resolution}"
