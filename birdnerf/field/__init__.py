"""Neural field of one block: multiresolution hash encoding (torch / compiled / fused / tcnn
backends), density and colour MLPs, spherical-harmonics view encoding and per-photo appearance
codes.

Typical use::

    config = FieldConfig(grid=HashGridConfig(log2_hashmap_size=16), num_images=120)
    field = BlockField(config, backend="auto")  # backend chosen once and logged
    rgb, sigma = field(x_unit, dirs, image_ids)  # (N, 3) in (0, 1), (N,) >= 0
    sigma = field.density(x_unit)  # for occupancy-grid updates, under torch.no_grad()
"""

from birdnerf.field.backends import (
    BACKENDS,
    PRECISIONS,
    bf16_native,
    resolve_backend,
    resolve_precision,
    tcnn_available,
)
from birdnerf.field.compile import compile_available
from birdnerf.field.field import BlockField, FieldConfig, make_encoding, trunc_exp
from birdnerf.field.fused import fused_available
from birdnerf.field.hashgrid import (
    GridLevel,
    HashGrid,
    HashGridConfig,
    encode_fast,
    encode_reference,
    grid_levels,
    hash_coords,
)
from birdnerf.field.sh import sh_dim, spherical_harmonics
from birdnerf.field.tcnn_backend import TcnnHashGrid

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "BlockField",
    "FieldConfig",
    "GridLevel",
    "HashGrid",
    "HashGridConfig",
    "TcnnHashGrid",
    "compile_available",
    "encode_fast",
    "fused_available",
    "encode_reference",
    "grid_levels",
    "hash_coords",
    "bf16_native",
    "make_encoding",
    "resolve_backend",
    "resolve_precision",
    "sh_dim",
    "spherical_harmonics",
    "tcnn_available",
    "trunc_exp",
]
