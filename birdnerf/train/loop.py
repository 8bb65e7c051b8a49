"""Training one block's NeRF: seeded, checkpointed, resumable on the same trajectory."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from birdnerf.block import checkpoint as ckpt
from birdnerf.block.model import BlockModel, RenderConfig
from birdnerf.device import resolve_device
from birdnerf.field import FieldConfig
from birdnerf.partition.manifest import Block
from birdnerf.progress import ProgressFn
from birdnerf.render.volume import distortion_loss
from birdnerf.scene.scene import Scene
from birdnerf.torch_globals import keep_torch_globals
from birdnerf.train.optim import LazyAdam
from birdnerf.train.pixels import BlockPixels, block_pixels
from birdnerf.train.quality import block_quality
from birdnerf.train.record import check_resume, config_record, init_from_model
from birdnerf.train.state import MetricsLog, TrainingClock, TrainingRun


@dataclass
class TrainConfig:
    """How one block is trained."""

    steps: int = 1000
    """Optimisation steps per block."""
    rays_per_batch: int = 4096
    """Most pixels (rays) drawn per step. Once a step has measured the samples per ray, a step
    draws only about as many as the sample budget keeps (25 % spare; the rest would be marched
    and then dropped); rays past the budget are left for later steps."""
    samples_per_batch: int = 1 << 16
    """Sample budget per step (keeps steps equally fast while the occupancy grid is coarse)."""
    lr: float = 0.2
    """Adam learning rate of the hash table; held for the first half of the steps, then decayed
    exponentially. Each table row is hit by few rays per step, and with Adam's per-row
    normalisation a high rate is what moves it: on the small sample scene 0.2 reaches in 250 steps
    what 0.01 reaches in 2000 (see the README's training benchmarks)."""
    lr_decay: float = 0.1
    """Learning rate at the last step, relative to ``lr``."""
    mlp_lr: float = 5e-3
    """Learning rate of the MLPs and appearance codes (same schedule)."""
    mlp_weight_decay: float = 1e-6
    surface_prior: bool = True
    """Bound the occupancy grid by the sparse points (see birdnerf.block.prior)."""
    distortion_weight: float = 1e-3
    """Weight of the distortion regulariser (removes floaters)."""
    occupancy_every: int = 16
    """Refresh the occupancy grid every this many steps."""
    occupancy_warmup: int = 64
    """Steps during which every occupancy cell is re-evaluated."""
    max_seconds: float | None = None
    """Stop once this many seconds of training have passed, as if ``steps`` had ended (final model
    and ``done.json``); the learning rate then also decays over the second half of this time.
    Counted over the optimisation steps (a compile in the first steps included, loading the
    block's rays not) and carried across resumes. None: ``steps`` alone ends training."""
    checkpoint_every: int = 50
    log_every: int = 25
    seed: int = 0
    backend: str = "auto"
    precision: str = "auto"
    """Precision of the field's MLPs: ``auto`` (bf16 on the fused backend where the CPU computes
    bfloat16 natively, else fp32), ``fp32`` or ``bf16`` (fused backend only)."""
    device: str = "auto"
    """Torch device: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    pixel_budget_mb: int = 256
    """Most MB of the block's colour file mapped in memory at once (see birdnerf.train.pixels);
    with the index, this bounds the training data's share of the peak memory whatever the
    photos' size."""
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    render: RenderConfig = dataclasses.field(default_factory=RenderConfig)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["field"] = self.field.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Inverse of :meth:`to_dict`; missing settings take their defaults, unknown ones raise
        ``ValueError`` naming them."""
        data = dict(data)
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(unknown)}")
        if "field" in data:
            data["field"] = FieldConfig.from_dict(data["field"])
        if "render" in data:
            data["render"] = RenderConfig(**data["render"])
        return cls(**data)


def decay_factor(progress: float, decay: float) -> float:
    """Learning-rate factor at ``progress`` (0..1) of a time budget: 1 for the first half, then
    exponential down to ``decay`` at the end."""
    return 1.0 if progress < 0.5 else decay ** min(1.0, (progress - 0.5) / 0.5)


def make_optimizer(model: BlockModel, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam: the hash table at ``lr``, lazily (only the rows a step hits are updated, see
    :class:`LazyAdam`); the MLPs and appearance codes at ``mlp_lr`` with a little weight decay
    (at the table's rate they saturate the colour sigmoid and the block turns grey)."""
    table = [p for n, p in model.named_parameters() if n.startswith("field.encoding.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("field.encoding.")]
    groups = [
        {"params": table, "lr": config.lr, "lazy": True},
        {"params": rest, "lr": config.mlp_lr, "weight_decay": config.mlp_weight_decay},
    ]
    return LazyAdam(groups, betas=(0.9, 0.99), eps=1e-15)


def rays_to_draw(most: int, sample_budget: int, samples_per_ray: float | None, spare: float = 1.25) -> int:
    """Rays to draw for a step: ``most`` until the samples per kept ray are known, then about as
    many as the sample budget keeps (``spare`` times that), at least 64 and at most ``most``."""
    if samples_per_ray is None or samples_per_ray <= 0:
        return most
    return max(64, min(most, math.ceil(spare * sample_budget / samples_per_ray)))


def build_model(
    block: Block, config: TrainConfig, num_images: int, device: torch.device | str = "cpu"
) -> BlockModel:
    return BlockModel(
        block.box,
        config.field,
        num_images,
        config.render,
        backend=config.backend,
        device=device,
        precision=config.precision,
    )


@keep_torch_globals()
def train_block(
    run_dir: str | Path,
    scene: Scene,
    block: Block,
    config: TrainConfig,
    *,
    resume: bool = True,
    progress: ProgressFn | None = None,
    stop_after: int | None = None,
    init_from: str | Path | None = None,
) -> dict:
    """Train ``block`` and write its files under ``run_dir/<block.folder>/``; returns final figures.

    With ``resume``, training continues from the last checkpoint and follows the same
    trajectory as an uninterrupted run (data order, sampling and optimiser state are restored).
    ``stop_after`` ends the run early after that step (for tests of interruption).
    ``config.max_seconds`` ends it when its time is spent, which no resume can replay exactly.
    ``init_from`` is the folder of a finished model of the same block (same box) to fine-tune
    from (see :func:`init_from_model`); the occupancy grid then starts open and is first pruned
    after ``occupancy_warmup`` steps, so that new geometry can grow where the old field was empty.
    """
    out = ckpt.block_dir(run_dir, block.id, block.revision)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    rays = block_pixels(scene, block, out, budget_bytes=config.pixel_budget_mb << 20)
    if len(rays) == 0:
        raise ValueError(f"block {block.id} has no training pixels")
    # Adam's second moments of rarely hit hash-table rows decay into subnormal floats, which
    # are ~10x slower on CPUs; flushing them to zero changes nothing measurable in the result.
    torch.set_flush_denormal(True)
    torch.manual_seed(config.seed)
    run = _start(scene, block, config, device)
    resumed = _resume_or_init(run, out, block, config, resume, init_from)
    record = config_record(run.model, config, block, rays)
    record["init_from"] = None if init_from is None else Path(init_from).name
    record["resumed"] = resumed
    ckpt.write_config(out, record)

    last = config.steps if stop_after is None else min(config.steps, stop_after)
    hold = config.occupancy_warmup if init_from is not None else 0
    done = _train_steps(run, rays, config, out, last, hold, progress)
    rays.close()
    if done < config.steps and not run.clock.out_of_time:
        return {"step": done, "finished": False}
    ckpt.save_tensors(out / "model.pt", {"model": run.model.state_dict()})
    result = {
        "step": done,
        "finished": True,
        "stopped_by": "time" if done < config.steps else "steps",
        "n_rays": len(rays),
        "n_images": len(block.images),
        "seconds": run.clock.seconds,
        "rays_trained": run.clock.rays,
        # Scored after training so a block that learned nothing says so where its figures are.
        "quality": block_quality(run.model, scene, block, rays),
    }
    ckpt.write_done(out, result)
    rays.remove()  # the colour cache is as large as the block's photos; a finished block needs none
    return result


def _start(scene: Scene, block: Block, config: TrainConfig, device: torch.device) -> TrainingRun:
    """A fresh model, optimiser, learning-rate schedule and generators (after the global seed)."""
    model = build_model(block, config, num_images=len(block.images), device=device)
    if config.surface_prior:
        model.set_surface_prior(scene.points)
    optimizer = make_optimizer(model, config)
    half = config.steps // 2
    clock = TrainingClock(config.max_seconds)

    def lr_factor(step: int) -> float:
        by_steps = 1.0 if step < half else config.lr_decay ** ((step - half) / max(config.steps - half, 1))
        if config.max_seconds is None:
            return by_steps
        return min(by_steps, decay_factor(clock.progress, config.lr_decay))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    generator = torch.Generator().manual_seed(config.seed)
    on_device = generator if device.type == "cpu" else torch.Generator(device).manual_seed(config.seed)
    return TrainingRun(model, optimizer, scheduler, generator, on_device, clock)


def _resume_or_init(
    run: TrainingRun, out: Path, block: Block, config: TrainConfig, resume: bool, init_from: str | Path | None
) -> list[dict]:
    """Continue from the block's checkpoint (with ``resume``), else start afresh, from ``init_from``'s
    model if given; returns the block's resume history (see :func:`check_resume`)."""
    state_path = out / "checkpoint.pt"
    if resume and state_path.exists():
        state = ckpt.load_tensors(state_path)
        resumed = check_resume(out / "config.json", run.model, config, int(state["step"]))
        run.load(state)
        ckpt.truncate_metrics(out / "metrics.jsonl", run.step)
        return resumed
    (out / "metrics.jsonl").unlink(missing_ok=True)
    if init_from is not None:
        init_from_model(run.model, Path(init_from), block.images)
    return []


def _train_steps(
    run: TrainingRun,
    rays: BlockPixels,
    config: TrainConfig,
    out: Path,
    last: int,
    hold: int,
    progress: ProgressFn | None,
) -> int:
    """Optimise from ``run.step`` up to step ``last`` or the end of the time budget, logging every
    ``log_every`` steps and checkpointing every ``checkpoint_every``; returns the steps done."""
    log, rows = MetricsLog(), []
    run.clock.start()
    for step in range(run.step, last):
        if run.clock.out_of_time:  # the step before ended on time, or a resumed run had none left
            break
        if step >= hold:
            run.model.update_occupancy(
                step - hold, config.occupancy_every, config.occupancy_warmup, run.on_device
            )
        mse, n_samples, n_kept = _optimise(run, rays, config)
        log.add(mse, n_samples, n_kept)
        run.step = step + 1
        final = run.step == last or run.clock.out_of_time
        if run.step % config.log_every == 0 or final:
            rows.append(log.row(run))
            if progress:
                progress(run.step, config.steps, {k: rows[-1][k] for k in ("psnr", "rays_per_s")})
        if run.step % config.checkpoint_every == 0 or final:
            ckpt.append_metrics(out / "metrics.jsonl", rows)
            rows = []
            ckpt.save_tensors(out / "checkpoint.pt", run.state())
    return run.step


def _optimise(run: TrainingRun, rays: BlockPixels, config: TrainConfig) -> tuple[float, int, int]:
    """One step: draw pixels, render them, take an Adam step on colour MSE plus distortion.

    Returns the step's MSE, samples marched and rays kept (rays beyond the sample budget are not).
    """
    model, device = run.model, run.model.device
    n_draw = rays_to_draw(config.rays_per_batch, config.samples_per_batch, run.samples_per_ray)
    batch = torch.randint(len(rays), (n_draw,), generator=run.generator)
    pixels = rays.batch(batch).to(device)
    out_rays, samples = model.render(
        pixels.origins,
        pixels.dirs,
        pixels.image_ids,
        stratified=True,
        generator=run.on_device,
        max_total_samples=config.samples_per_batch,
    )
    kept = samples.ray_kept
    n_kept = int(kept.sum())
    mse = torch.mean((out_rays.rgb[kept] - pixels.rgb[kept]) ** 2)
    loss = mse
    n_samples = int(samples.ray_indices.numel())
    if n_kept > 0 and n_samples > 0:
        run.samples_per_ray = n_samples / n_kept
    if config.distortion_weight > 0 and n_samples > 0:
        distortion = distortion_loss(
            out_rays.weights, samples.t_starts, samples.t_ends, samples.ray_indices, len(batch)
        )
        loss = loss + config.distortion_weight * distortion[kept].mean() / model.box_height
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    run.clock.tick(n_kept)
    run.scheduler.step()  # after the clock: a time budget's schedule reads the time spent
    return float(mse.detach()), n_samples, n_kept
