"""One block's model: a hash-grid field over the block's 3D box plus its occupancy grid.

Rendering a batch of rays: cut each ray by the box (the altitude slab), march through occupied
cells, evaluate the field at the sample midpoints (normalised to the unit cube), and composite.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from birdnerf import formats
from birdnerf.block.prior import surface_prior
from birdnerf.errors import BirdnerfError
from birdnerf.field import BlockField, FieldConfig, resolve_backend, tcnn_available
from birdnerf.render import OccupancyGrid, march_rays, ray_aabb, render_rays, volume_render
from birdnerf.render.sampling import PackedSamples
from birdnerf.render.volume import RenderOutput, accumulate_along_rays, render_weights

REFERENCE_LAYOUT = "reference"
"""The hash-table layout of :mod:`birdnerf.field.hashgrid`, shared by every backend but tcnn."""


def layout_of(backend: str) -> str:
    """The parameter layout of a resolved field backend: ``tcnn`` for tcnn, else the reference."""
    return "tcnn" if backend == "tcnn" else REFERENCE_LAYOUT


def backend_for_layout(layout: str, device: torch.device, backend: str = "auto") -> str:
    """A backend on ``device`` that reads weights saved in ``layout`` (``backend`` if it does).

    Raises BirdnerfError naming both backends when this machine cannot run the saved layout
    (a tcnn-trained block without tinycudann and CUDA, or tcnn asked for reference weights).
    """
    if layout not in (REFERENCE_LAYOUT, "tcnn"):
        raise BirdnerfError(f"unknown hash-grid layout {layout!r} (known: reference, tcnn)")
    if backend != "auto":
        try:
            chosen = resolve_backend(backend, device)
        except (RuntimeError, ValueError) as err:
            raise BirdnerfError(str(err)) from None
        if layout_of(chosen) != layout:
            raise BirdnerfError(
                f"weights in the {layout} layout ({_backends(layout)}) cannot be read by the "
                f"{chosen} backend ({layout_of(chosen)} layout)"
            )
        return chosen
    if layout == "tcnn":
        if device.type != "cuda" or not tcnn_available():
            raise BirdnerfError(
                "the block was trained with the tcnn backend (tiny-cuda-nn's grid layout), which "
                f"needs tinycudann and CUDA; on {device.type} only the reference layout's backends "
                "(torch, compiled) run here: retrain it, or load it where tinycudann is installed"
            )
        return "tcnn"
    chosen = resolve_backend("auto", device)
    return chosen if layout_of(chosen) == REFERENCE_LAYOUT else "torch"


def _backends(layout: str) -> str:
    return "tcnn backend" if layout == "tcnn" else "torch/compiled backends"


@dataclass
class RenderConfig:
    """How rays are sampled inside a block's box."""

    steps_per_slab: int = 128
    """Marching step = the box's height / this (metres per step, fine enough for roofs)."""
    occupancy_resolution: int = 64
    """Cells of the occupancy grid along the box's longest side (fewer along the others)."""
    max_samples_per_ray: int = 256
    """Cap on occupied samples kept per ray."""
    early_stop_eps: float = 1e-4
    """At evaluation, stop a ray once its transmittance falls below this."""


@dataclass
class FrozenRays:
    """Rays of a block reduced to what appearance codes cannot change (:meth:`BlockModel.freeze`).

    Attributes:
        weights: (S,) volume-rendering weight of each sample.
        ray_indices: (S,) the ray of each sample.
        features: (S, C) colour-MLP inputs of each sample other than the code.
        n_rays: number of rays N.
    """

    weights: Tensor
    ray_indices: Tensor
    features: Tensor
    n_rays: int


class BlockModel(nn.Module):
    """Field + occupancy grid of one block. ``box`` = (xmin, ymin, zmin, xmax, ymax, zmax)."""

    def __init__(
        self,
        box: list[float],
        field_config: FieldConfig,
        num_images: int,
        render: RenderConfig,
        backend: str = "auto",
        device: str | torch.device = "cpu",
        precision: str = "auto",
    ):
        super().__init__()
        device = torch.device(device)
        self.render_config = render
        self.register_buffer("box", torch.tensor(box, dtype=torch.float32))
        field_config = dataclasses.replace(field_config, num_images=num_images)
        self.field = BlockField(field_config, backend=backend, device=device, precision=precision)
        size = [box[3] - box[0], box[4] - box[1], box[5] - box[2]]
        cell = max(size) / render.occupancy_resolution
        res = [max(8, min(render.occupancy_resolution, math.ceil(s / cell))) for s in size[:2]]
        # The slab is thin: give it finer cells vertically, where the surface must be located.
        res.append(max(16, min(render.occupancy_resolution, math.ceil(4 * size[2] / cell))))
        self.grid = OccupancyGrid(box, resolution=res)
        # Cells that may hold the surface (see birdnerf.block.prior); all, until points are given.
        self.register_buffer("prior", torch.ones(self.grid.resolution, dtype=torch.bool))
        self.box_height = size[2]
        self.step_size = size[2] / render.steps_per_slab
        self.field_config = field_config
        self.num_images = num_images
        self.to(device)

    @property
    def device(self) -> torch.device:
        return self.box.device

    @property
    def backend(self) -> str:
        return self.field.backend

    @property
    def precision(self) -> str:
        """The field's MLP precision: ``fp32`` or ``bf16``."""
        return self.field.precision

    @property
    def layout(self) -> str:
        """How the hash table's parameters are laid out: ``reference`` or ``tcnn``."""
        return layout_of(self.field.backend)

    def to_unit(self, points: Tensor) -> Tensor:
        """World points (..., 3) -> the box's unit cube [0, 1]^3."""
        return (points - self.box[:3]) / (self.box[3:] - self.box[:3])

    def set_surface_prior(self, points) -> None:
        """Bound the occupied cells by the sparse points (M, 3) of the scene (see prior.py)."""
        self.prior.copy_(surface_prior(points, self.box.tolist(), self.grid.resolution))
        self.grid.binary &= self.prior

    def update_occupancy(self, step: int, every_n: int, warmup_steps: int, generator=None) -> None:
        """Refresh the occupancy grid from the field, never re-opening cells the prior rules out."""
        if self.grid.update(
            step,
            self.sigma_world,
            every_n=every_n,
            warmup_steps=warmup_steps,
            step_size=self.step_size,
            generator=generator,
        ):
            self.grid.binary &= self.prior

    def sigma_world(self, points: Tensor) -> Tensor:
        """Density (M,) in 1/m at world points (M, 3): the occupancy grid's callback.

        The field's density is used per metre as it is: a fresh field (sigma ~ 1/m) makes the few
        metres of the surface shell opaque from the first steps. Scaled down by the block's size,
        the surface stays translucent for hundreds of steps, and the colours saturate to compensate.
        """
        return self.field.density(self.to_unit(points))

    def query(
        self, points: Tensor, dirs: Tensor, image_ids: Tensor | None, appearance: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Colour (M, 3) and density (M,) in 1/m at world points (M, 3) seen along ``dirs``.

        ``appearance`` (A,), if given, is the code of every sample instead of ``image_ids``' codes.
        """
        return self.field(self.to_unit(points), dirs, image_ids, appearance_code=appearance)

    def config_dict(self) -> dict:
        return {
            "box": self.box.tolist(),
            "field": self.field_config.to_dict(),
            "num_images": self.num_images,
            "render": asdict(self.render_config),
        }

    @classmethod
    def from_config_dict(
        cls, data: dict, backend: str = "auto", device: str | torch.device = "cpu", precision: str = "auto"
    ) -> BlockModel:
        return cls(
            data["box"],
            FieldConfig.from_dict(data["field"]),
            int(data["num_images"]),
            RenderConfig(**data["render"]),
            backend=backend,
            device=device,
            precision=precision,
        )

    def render(
        self,
        origins: Tensor,
        dirs: Tensor,
        image_ids: Tensor | None,
        *,
        stratified: bool = False,
        background: Tensor | None = None,
        generator: torch.Generator | None = None,
        max_total_samples: int | None = None,
    ) -> tuple[RenderOutput, PackedSamples]:
        """Render rays (N, 3) in the world frame; returns the output and the samples used.

        ``image_ids`` (N,) pick appearance codes; None uses the codes' mean (novel views).
        """
        n = origins.shape[0]
        t_near, t_far, hit = ray_aabb(origins, dirs, self.box)
        t_far = torch.where(hit, t_far, t_near)
        samples = march_rays(
            origins,
            dirs,
            t_near,
            t_far,
            self.step_size,
            self.grid,
            stratified=stratified,
            max_samples_per_ray=self.render_config.max_samples_per_ray,
            max_total_samples=max_total_samples,
            generator=generator,
        )
        ray_idx = samples.ray_indices
        t_mid = 0.5 * (samples.t_starts + samples.t_ends)
        points = origins[ray_idx] + dirs[ray_idx] * t_mid[:, None]
        ids = None if image_ids is None else image_ids[ray_idx]
        rgb, sigma = self.query(points, dirs[ray_idx], ids)
        out = volume_render(sigma, rgb, samples.t_starts, samples.t_ends, ray_idx, n, background)
        return out, samples

    @torch.no_grad()
    def render_eval(
        self,
        origins: Tensor,
        dirs: Tensor,
        image_ids: Tensor | None = None,
        chunk: int = 16384,
        appearance: Tensor | None = None,
    ) -> RenderOutput:
        """Render rays (N, 3) without gradients, with early ray termination, in chunks.

        Rays that miss the box get zero opacity. Depth is the distance along the ray (metres).
        Inputs may live on any device: chunks move to the model's, outputs come back to ``origins``'.
        ``image_ids`` pick codes as in :meth:`render`; ``appearance`` (A,) is one code for every
        ray instead (e.g. one fitted to a held-out photo).
        """
        rgb, opacity, depth = [], [], []
        home, device = origins.device, self.device
        if appearance is not None:
            appearance = appearance.to(device)
        for start in range(0, origins.shape[0], chunk):
            o, d = origins[start : start + chunk].to(device), dirs[start : start + chunk].to(device)
            ids = None if image_ids is None else image_ids[start : start + chunk].to(device)
            t_near, t_far, _ = ray_aabb(o, d, self.box)

            def rgb_sigma(
                t0: Tensor, t1: Tensor, ray_idx: Tensor, o=o, d=d, ids=ids
            ) -> tuple[Tensor, Tensor]:
                points = o[ray_idx] + d[ray_idx] * (0.5 * (t0 + t1))[:, None]
                return self.query(points, d[ray_idx], None if ids is None else ids[ray_idx], appearance)

            out = render_rays(
                o,
                d,
                t_near,
                t_far,
                rgb_sigma,
                self.step_size,
                self.grid,
                early_stop_eps=self.render_config.early_stop_eps,
            )
            rgb.append(out.rgb.to(home))
            opacity.append(out.opacity.to(home))
            depth.append(out.depth.to(home))
        return RenderOutput(torch.cat(rgb), torch.cat(opacity), torch.cat(depth))

    @torch.no_grad()
    def freeze(self, origins: Tensor, dirs: Tensor) -> FrozenRays:
        """March and weigh rays (N, 3) once, for :meth:`render_frozen` with any appearance code.

        The rays move to the model's device (so do the frozen tensors). Samples as
        :meth:`render_eval` does (deterministic, samples behind transmittance
        ``early_stop_eps`` dropped), so colours agree with it to about that tolerance.
        """
        origins, dirs = origins.to(self.device), dirs.to(self.device)
        t_near, t_far, hit = ray_aabb(origins, dirs, self.box)
        t_far = torch.where(hit, t_far, t_near)
        samples = march_rays(origins, dirs, t_near, t_far, self.step_size, self.grid)
        ray_idx = samples.ray_indices
        points = origins[ray_idx] + dirs[ray_idx] * (0.5 * (samples.t_starts + samples.t_ends))[:, None]
        sigma, features = self.field.color_features(self.to_unit(points), dirs[ray_idx])
        weights, transmittance = render_weights(sigma, samples.t_starts, samples.t_ends, ray_idx)
        keep = transmittance >= self.render_config.early_stop_eps
        return FrozenRays(weights[keep], ray_idx[keep], features[keep], origins.shape[0])

    def render_frozen(self, rays: FrozenRays, appearance: Tensor | None = None) -> Tensor:
        """Colours (N, 3) of :meth:`freeze`'d rays with code ``appearance`` (A,) (None: the mean);
        differentiable in ``appearance``. One colour-MLP pass: no marching, no hash grid."""
        rgb = self.field.color(rays.features, appearance)
        return accumulate_along_rays(rays.weights, rgb, rays.ray_indices, rays.n_rays)


def load_trained_model(
    folder: Path,
    device: str | torch.device = "cpu",
    backend: str = "auto",
    weights: str = "model.pt",
    precision: str = "auto",
) -> BlockModel:
    """A block's saved model from ``folder`` (``config.json`` + ``weights``) on ``device``.

    The backend reads the layout that ``config.json`` records (runs that predate the record are
    in the reference layout); weights saved on any device load on any other. A layout this
    machine cannot run is one BirdnerfError naming both backends.
    """
    from birdnerf.block import checkpoint as ckpt

    device = torch.device(device)
    config = ckpt.read_config(folder)
    layout = config.get("layout", REFERENCE_LAYOUT)
    try:
        chosen = backend_for_layout(layout, device, backend)
    except BirdnerfError as err:
        raise BirdnerfError(err.message, folder / "config.json") from None
    make = functools.partial(BlockModel.from_config_dict, backend=chosen, device=device, precision=precision)
    model = formats.build(make, config.get("model"), folder / "config.json", "model record")
    state = ckpt.load_tensors(folder / weights)["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise BirdnerfError(f"the weights do not fit the recorded model ({err})", folder / weights) from None
    return model.eval()
