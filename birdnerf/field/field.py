"""The neural field of one block: hash grid -> density MLP -> colour MLP with appearance codes.

    features = HashGrid(x)                               (N, L*F)
    h = density_mlp(features)                            (N, 1 + geo)
    sigma = trunc_exp(h[:, 0])  (0 outside [0, 1]^3)     (N,)
    rgb = sigmoid(color_mlp([h[:, 1:], SH(d), a]))       (N, 3)

``x`` is the sample position normalised to the block's box ([0, 1]^3), ``d`` the unit view
direction in the world frame and ``a`` the appearance code of the photo (NeRF-W style), so that
exposure and weather differences between photos do not turn into floaters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from birdnerf.field.backends import resolve_backend, resolve_precision, tcnn_available
from birdnerf.field.compile import LazyCompile
from birdnerf.field.hashgrid import HashGrid, HashGridConfig, encode_fast
from birdnerf.field.sh import sh_dim, spherical_harmonics
from birdnerf.field.tcnn_backend import TcnnHashGrid


@dataclass
class FieldConfig:
    """Architecture of a :class:`BlockField`; saved as plain JSON via :meth:`to_dict`."""

    grid: HashGridConfig = field(default_factory=HashGridConfig)
    """The hash-grid encoding."""
    geo_feature_dim: int = 15
    """Channels passed from the density MLP to the colour MLP."""
    hidden_dim: int = 64
    """Width of every hidden layer."""
    density_hidden_layers: int = 1
    """Hidden layers of the density MLP."""
    color_hidden_layers: int = 2
    """Hidden layers of the colour MLP."""
    sh_degree: int = 4
    """Spherical-harmonics bands of the view direction (4 -> 16 channels)."""
    appearance_dim: int = 16
    """Length of the per-photo appearance code; 0 disables appearance codes."""
    num_images: int = 0
    """Photos with an appearance code (image ids run 0 .. num_images - 1)."""
    density_clamp: float = 15.0
    """trunc_exp bound: sigma = exp(min(h, clamp)); the gradient uses the same bound."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FieldConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        grid_known = {f.name for f in dataclasses.fields(HashGridConfig)}
        grid = dict(data.get("grid", {}))
        unknown = sorted(set(data) - known) + sorted(f"grid.{k}" for k in set(grid) - grid_known)
        if unknown:
            raise ValueError(f"unknown FieldConfig keys: {', '.join(unknown)}")
        rest = {k: v for k, v in data.items() if k != "grid"}
        return cls(grid=HashGridConfig(**grid), **rest)

    @property
    def uses_appearance(self) -> bool:
        return self.appearance_dim > 0 and self.num_images > 0


class _TruncExp(torch.autograd.Function):
    """exp with the exponent clamped to ``max`` in the value and in the gradient, so that a large
    pre-activation yields a large but finite density and a bounded gradient instead of inf."""

    @staticmethod
    def forward(ctx, h: Tensor, bound: float) -> Tensor:
        ctx.save_for_backward(h)
        ctx.bound = bound
        return torch.exp(h.clamp(max=bound))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (h,) = ctx.saved_tensors
        return grad * torch.exp(h.clamp(max=ctx.bound)), None


def trunc_exp(h: Tensor, bound: float = 15.0) -> Tensor:
    """sigma = exp(min(h, bound)), d sigma / d h = exp(min(h, bound)) (also above the bound)."""
    return _TruncExp.apply(h, bound)


def _mlp(h: Tensor, weights: Sequence[Tensor], half: bool = False) -> Tensor:
    """Linear layers (w0, b0, w1, b1, ...) with ReLU between them and none after the last.

    ``half``: inputs, weights and activations in bfloat16 (products accumulate in float32), the
    output back in ``h``'s dtype; gradients reach the float32 weights through the casts.
    """
    out_dtype = h.dtype
    if half:
        h, weights = h.to(torch.bfloat16), [w.to(torch.bfloat16) for w in weights]
    n_layers = len(weights) // 2
    for i in range(n_layers):
        h = F.linear(h, weights[2 * i], weights[2 * i + 1])
        if i < n_layers - 1:
            h = F.relu(h)
    return h.to(out_dtype)


def _inside_unit_cube(x: Tensor) -> Tensor:
    return ((x >= 0.0) & (x <= 1.0)).all(dim=-1)


def _density_head(
    features: Tensor, x: Tensor, density_w: Sequence[Tensor], bound: float, half: bool = False
) -> tuple[Tensor, Tensor]:
    """(sigma (N,), geo features (N, G)) from grid features; sigma is 0 outside the unit cube."""
    h = _mlp(features, density_w, half)
    sigma = torch.where(_inside_unit_cube(x), trunc_exp(h[:, 0], bound), 0.0)
    return sigma, h[:, 1:]


def _color_head(
    geo: Tensor,
    dirs: Tensor,
    app: Tensor | None,
    color_w: Sequence[Tensor],
    sh_degree: int,
    half: bool = False,
) -> Tensor:
    parts = [geo, spherical_harmonics(F.normalize(dirs, dim=-1), sh_degree)]
    if app is not None:  # (N, A), or (1, A): one code for every sample
        parts.append(app.expand(geo.shape[0], -1))
    return torch.sigmoid(_mlp(torch.cat(parts, dim=-1), color_w, half))


def _fast_forward(x, dirs, app, table, scale, mul, dense, offset, mask, density_w, color_w, sh_degree, bound):
    sigma, geo = _density_head(encode_fast(x, table, scale, mul, dense, offset, mask), x, density_w, bound)
    return _color_head(geo, dirs, app, color_w, sh_degree), sigma


def _fast_density(x, table, scale, mul, dense, offset, mask, density_w, bound):
    return _density_head(encode_fast(x, table, scale, mul, dense, offset, mask), x, density_w, bound)[0]


def _heads(features, x, dirs, app, density_w, color_w, sh_degree, bound, half):
    sigma, geo = _density_head(features, x, density_w, bound, half)
    return _color_head(geo, dirs, app, color_w, sh_degree, half), sigma


def _density_only(features, x, density_w, bound, half):
    return _density_head(features, x, density_w, bound, half)[0]


_compiled_forward = LazyCompile(_fast_forward, name="field forward")
_compiled_density = LazyCompile(_fast_density, name="field density")
# The fused backend: the encoding runs in its kernel, the MLP heads compiled (bias, activations,
# SH and the copies between them fused around the matrix products).
_compiled_heads = LazyCompile(_heads, name="field heads")
_compiled_density_head = LazyCompile(_density_only, name="field density head")


def make_encoding(config: HashGridConfig, backend: str) -> nn.Module:
    """The hash-grid module of a resolved backend (``torch``, ``compiled``, ``fused`` or ``tcnn``)."""
    if backend == "tcnn":
        return TcnnHashGrid(config)
    return HashGrid(config, backend=backend)


def _linear_stack(in_dim: int, hidden: int, n_hidden: int, out_dim: int) -> nn.ModuleList:
    dims = [in_dim] + [hidden] * n_hidden + [out_dim]
    return nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))


def _weights(layers: nn.ModuleList) -> tuple[Tensor, ...]:
    return tuple(t for layer in layers for t in (layer.weight, layer.bias))


class BlockField(nn.Module):
    """Density and colour of one block.

    Args:
        config: the architecture.
        backend: ``auto``, ``torch``, ``compiled``, ``fused`` or ``tcnn`` (see :func:`resolve_backend`).
        device: where to build the parameters. None -> CUDA when ``auto``/``tcnn`` can use
            tinycudann there, else CPU (where ``auto`` picks ``fused``). Pass ``"cuda"`` for
            the ``torch`` backend on a GPU without tinycudann.
        precision: the MLP heads' precision, ``auto``, ``fp32`` or ``bf16`` (see
            :func:`~birdnerf.field.backends.resolve_precision`; ``auto`` is ``bf16`` on the fused
            backend where the CPU computes bfloat16 natively).

    Inputs are float32; ``x_unit`` (N, 3) positions in the block box normalised to [0, 1]^3,
    ``dirs`` (N, 3) view directions (normalised inside), ``image_ids`` (N,) int64 in
    [0, num_images). Parameters and ``state_dict`` keys are identical for ``torch``,
    ``compiled`` and ``fused``; neither the backend nor the precision is part of the state.
    """

    def __init__(
        self,
        config: FieldConfig,
        backend: str = "auto",
        device: str | torch.device | None = None,
        precision: str = "auto",
    ):
        super().__init__()
        self.config = config
        if device is None and backend in ("auto", "tcnn") and tcnn_available():
            device = torch.device("cuda")
        self.backend = resolve_backend(backend, "cpu" if device is None else device)
        self.precision = resolve_precision(precision, self.backend)
        self.encoding = make_encoding(config.grid, self.backend)
        hidden = config.hidden_dim
        self.density_mlp = _linear_stack(
            config.grid.output_dim, hidden, config.density_hidden_layers, 1 + config.geo_feature_dim
        )
        color_in = config.geo_feature_dim + sh_dim(config.sh_degree)
        if config.uses_appearance:
            color_in += config.appearance_dim
            self.appearance_embedding = nn.Embedding(config.num_images, config.appearance_dim)
        self.color_mlp = _linear_stack(color_in, hidden, config.color_hidden_layers, 3)
        if device is not None:
            self.to(device)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def appearance(self, image_ids: Tensor | None, n: int | None = None) -> Tensor | None:
        """Appearance codes (N, A) for ``image_ids`` (N,) int64; None (novel views) -> the mean
        code over all photos, expanded to ``n`` rows. Returns None if appearance is disabled."""
        if not self.config.uses_appearance:
            return None
        if image_ids is None:
            mean = self.appearance_embedding.weight.mean(dim=0)
            return mean.expand(1 if n is None else n, -1)
        return self.appearance_embedding(image_ids)

    def _check(self, x: Tensor, dirs: Tensor | None = None) -> Tensor:
        if x.dim() != 2 or x.shape[1] != 3:
            raise ValueError(f"x_unit must have shape (N, 3), got {tuple(x.shape)}")
        if dirs is not None and dirs.shape != x.shape:
            raise ValueError(f"dirs must have shape {tuple(x.shape)}, got {tuple(dirs.shape)}")
        return x.to(self.density_mlp[0].weight.dtype)

    def density(self, x_unit: Tensor) -> Tensor:
        """sigma (N,) >= 0 at x_unit (N, 3) in [0, 1]^3; 0 outside the cube. For occupancy updates."""
        x = self._check(x_unit)
        bound = self.config.density_clamp
        if self.backend == "compiled":
            grid_args = self.encoding.fast_args()
            return _compiled_density((x,), (*grid_args, _weights(self.density_mlp), bound))[0]
        if self.backend == "fused":
            rest = (_weights(self.density_mlp), bound, self.precision == "bf16")
            return _compiled_density_head((self.encoding(x), x), rest, bounded=self.precision == "bf16")[0]
        return _density_head(self.encoding(x), x, _weights(self.density_mlp), bound)[0]

    def color_features(self, x_unit: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
        """Density sigma (N,) and the colour MLP's inputs other than the appearance code (N, C).

        Neither depends on the code, so fitting a code with the field frozen computes them once
        and then only :meth:`color` per step (see :mod:`birdnerf.eval.appearance`).
        """
        x = self._check(x_unit, dirs)
        sigma, geo = _density_head(self.encoding(x), x, _weights(self.density_mlp), self.config.density_clamp)
        sh = spherical_harmonics(F.normalize(dirs.to(x.dtype), dim=-1), self.config.sh_degree)
        return sigma, torch.cat([geo, sh], dim=-1)

    def color(self, features: Tensor, appearance_code: Tensor | None = None) -> Tensor:
        """Colour (N, 3) from :meth:`color_features` (N, C) and a code (A,) or (N, A).

        None -> the mean code, as :meth:`forward` with neither ``image_ids`` nor a code.
        """
        n = features.shape[0]
        if appearance_code is not None and self.config.uses_appearance:
            app = appearance_code.to(features.dtype).expand(n, -1)
        else:
            app = self.appearance(None, n)
        parts = [features] if app is None else [features, app]
        return torch.sigmoid(_mlp(torch.cat(parts, dim=-1), _weights(self.color_mlp)))

    def forward(
        self,
        x_unit: Tensor,
        dirs: Tensor,
        image_ids: Tensor | None = None,
        appearance_code: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Colour and density of N samples.

        Args:
            x_unit: (N, 3) positions in [0, 1]^3 (outside -> sigma 0).
            dirs: (N, 3) view directions, world frame.
            image_ids: (N,) int64 photo index for the appearance code; None -> mean code.
            appearance_code: (A,) or (N, A) code used instead of ``image_ids`` (e.g. one fitted
                to a held-out photo).
        Returns:
            rgb (N, 3) in (0, 1) and sigma (N,) >= 0 (density per unit length of the ray parameter).
        """
        x = self._check(x_unit, dirs)
        dirs = dirs.to(x.dtype)
        n = x.shape[0]
        if appearance_code is not None and self.config.uses_appearance:
            app = appearance_code.to(x.dtype).expand(n, -1)
        else:
            app = self.appearance(image_ids, n)
        sh_degree, bound = self.config.sh_degree, self.config.density_clamp
        density_w, color_w = _weights(self.density_mlp), _weights(self.color_mlp)
        if self.backend == "compiled":
            batched = (x, dirs) if app is None else (x, dirs, app.contiguous())
            rest = (None,) if app is None else ()
            grid_args = self.encoding.fast_args()
            return _compiled_forward(batched, (*rest, *grid_args, density_w, color_w, sh_degree, bound))
        if self.backend == "fused":
            batched = (self.encoding(x), x, dirs)
            if app is None or app.stride(0) == 0 or app.shape[0] == 1:  # one code (or none) for all
                rest = (None if app is None else app[0].unsqueeze(0),)
            else:
                batched, rest = (*batched, app.contiguous()), ()
            half = self.precision == "bf16"
            return _compiled_heads(batched, (*rest, density_w, color_w, sh_degree, bound, half), bounded=half)
        sigma, geo = _density_head(self.encoding(x), x, density_w, bound)
        return _color_head(geo, dirs, app, color_w, sh_degree), sigma
