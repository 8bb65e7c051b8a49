"""tiny-cuda-nn hash grid, imported only if present.

tinycudann is optional: when it does not import, :data:`tcnn` is a stand-in that raises the
original import error at first use, so importing birdnerf never fails because of it.

Layout differences from :mod:`birdnerf.field.hashgrid` (why parameters do not transfer): tcnn
places level ``l`` vertices at ``x * (N_min b^l - 1) + 0.5`` with ``ceil`` resolutions, decides
dense vs hashed levels by its own rule, pads each level to a multiple of 8 rows, and computes in
half precision. A ``tcnn`` field therefore has its own ``state_dict`` (key ``encoding.tcnn.params``)
and agrees with the torch encodings statistically (it fits the same targets as well), not value by
value.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from birdnerf.field.hashgrid import HashGridConfig


class _MissingModule:
    """Stands in for a module that failed to import; any attribute access re-raises the error."""

    def __init__(self, name: str, error: BaseException):
        self._name = name
        self._error = error

    def __getattr__(self, attr: str) -> Any:
        raise ImportError(f"{self._name} is needed here but failed to import: {self._error}") from self._error


try:
    import tinycudann as tcnn

    _IMPORT_ERROR: BaseException | None = None
except (ImportError, OSError, RuntimeError) as err:  # no package, no CUDA runtime or no GPU
    tcnn = _MissingModule("tinycudann", err)
    _IMPORT_ERROR = err


def tcnn_import_error() -> BaseException | None:
    """The error raised by ``import tinycudann``, or None when it imported."""
    return _IMPORT_ERROR


def tcnn_encoding_config(config: HashGridConfig) -> dict:
    """The tiny-cuda-nn ``HashGrid`` encoding config equivalent to ``config``."""
    return {
        "otype": "HashGrid",
        "n_levels": config.n_levels,
        "n_features_per_level": config.n_features_per_level,
        "log2_hashmap_size": config.log2_hashmap_size,
        "base_resolution": config.base_resolution,
        "per_level_scale": config.growth_factor,
    }


class TcnnHashGrid(nn.Module):
    """Hash-grid encoding by tiny-cuda-nn.

    ``forward(x)``: x (N, 3) in [0, 1]^3 on CUDA -> (N, L * F) float32 (computed in half precision).
    tinycudann creates its parameters on the current CUDA device when the module is built.
    """

    def __init__(self, config: HashGridConfig, seed: int = 1337):
        super().__init__()
        self.config = config
        self.tcnn = tcnn.Encoding(n_input_dims=3, encoding_config=tcnn_encoding_config(config), seed=seed)

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.tcnn(x.clamp(0.0, 1.0)).float()
