"""The memory one training step of a block can take, estimated from its settings alone.

A step holds, at its peak (during the backward pass):

- the **model state**: every parameter with its gradient and Adam's two moments (16 bytes each);
- the **drawn rays**: origins, directions, colours, the marching bounds and each ray's rendered
  outputs and their gradients (:data:`BYTES_PER_RAY`); the first step draws all ``rays_per_batch``;
- the **samples**: at most ``samples_per_batch`` are kept a step, each with its positions, the
  hash grid's corner rows and weights for every level, the MLPs' activations, and the gradients
  of all of them (:func:`bytes_per_sample`);
- the **pixel cache**: ``pixel_budget_mb`` of the block's colour file mapped at most;
- the **marching working set**: one chunk of ``chunk_steps`` candidate steps (fixed).

Calibrated with ``benchmarks/bench_train_memory.py``, which trains a block of the sample survey
for a few steps in fresh processes and compares each one's peak RSS growth with this estimate.
On 2 cores (torch 2.13 CPU, reference torch backend, default field, the sample survey as one
block with its occupancy grid open, 3 steps), the estimate was 1.3-1.85x the measured growth from
4k to 4M rays and 4k to 256k samples a step (446 MB measured for 4096 rays and 4096 samples,
1702 MB for 4096 rays and 256k samples, 1130 MB for 4M rays and 16k samples; the table is in
docs/performance.md); the fused backend keeps less a sample. It is an upper bound meant to
refuse what cannot fit, not a prediction.
"""

from __future__ import annotations

from birdnerf.field.field import FieldConfig
from birdnerf.field.hashgrid import grid_levels
from birdnerf.field.sh import sh_dim
from birdnerf.resources import check_fits

BYTES_PER_RAY = 320
"""A drawn ray's share of a step: its float64 camera rays while they are built, the float32 batch,
marching bounds and counts, rendered colour/opacity/depth and their gradients (measured ~210)."""
FIXED_BYTES = 512 << 20
"""What does not grow with the settings: the marching chunk (``chunk_steps`` = 2^20 candidate
steps), the occupancy grid and its updates (64k points a call), autograd's and the allocator's
own (measured ~450 MB with 4096 rays and 4096 samples a step)."""
SAMPLE_MARGIN = 1.25
"""Factor over the counted bytes of a sample (measured: ~5.4 kB a sample, 5.3 kB counted, with
the default field)."""
BYTES_PER_LEVEL_SAMPLE = 8 * (8 + 4) + 4
"""Per sample and hash level, kept for the backward pass: 8 corner rows (int64), their 8
trilinear weights, and the level's output features' gradient (reference backend)."""


def parameter_count(field: FieldConfig, num_images: int) -> int:
    """Parameters of a block's field: hash table rows x features, MLP weights, appearance codes."""
    rows = sum(level.size for level in grid_levels(field.grid))
    total = rows * field.grid.n_features_per_level
    density = [field.grid.output_dim] + [field.hidden_dim] * field.density_hidden_layers
    density.append(1 + field.geo_feature_dim)
    colour_in = field.geo_feature_dim + sh_dim(field.sh_degree) + (field.appearance_dim if num_images else 0)
    colour = [colour_in] + [field.hidden_dim] * field.color_hidden_layers + [3]
    for dims in (density, colour):
        total += sum((a + 1) * b for a, b in zip(dims[:-1], dims[1:], strict=True))
    return total + num_images * field.appearance_dim


def bytes_per_sample(field: FieldConfig) -> int:
    """Memory of one kept sample during the backward pass (see the module's docstring)."""
    grid = field.grid
    mlp_floats = (
        grid.output_dim
        + field.hidden_dim * (field.density_hidden_layers + field.color_hidden_layers)
        + 1
        + 2 * field.geo_feature_dim
        + sh_dim(field.sh_degree)
        + field.appearance_dim
        + 3
    )
    sampling = 8 + 4 * (2 + 1 + 3 + 3 + 3)  # ray index, t0/t1, t, world/unit point, direction
    rendering = 4 * 8  # density, alpha, transmittance, weight, colour
    # Activations are kept for the backward pass, which adds their gradients (x2), and the
    # ReLU masks and pre-activations beside them (x1.5 more).
    counted = grid.n_levels * BYTES_PER_LEVEL_SAMPLE + 3 * 4 * mlp_floats + 2 * (sampling + rendering)
    return int(SAMPLE_MARGIN * counted)


def step_memory(config, num_images: int) -> int:
    """Bytes one training step of a block with ``num_images`` photos can take (``config``: a
    :class:`birdnerf.train.TrainConfig`)."""
    state = 16 * parameter_count(config.field, num_images)
    return (
        state
        + config.rays_per_batch * BYTES_PER_RAY
        + config.samples_per_batch * bytes_per_sample(config.field)
        + (config.pixel_budget_mb << 20)
        + FIXED_BYTES
    )


def check_training_fits(config, num_images: int, jobs: int = 1) -> None:
    """Refuse, with one line, a training whose steps (``jobs`` blocks at once, the largest with
    ``num_images`` photos) cannot fit in the memory available."""
    per_block = step_memory(config, num_images)
    at_once = f"{jobs} blocks at once, " if jobs > 1 else ""
    check_fits(
        f"training ({at_once}{config.rays_per_batch:,} rays and {config.samples_per_batch:,} samples a step)",
        memory=jobs * per_block,
        hint="use fewer rays (--rays), fewer blocks at once (--jobs) or a smaller field",
    )
