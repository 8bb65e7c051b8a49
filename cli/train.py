"""``birdnerf train``: train one hash-grid NeRF per block."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from birdnerf.device import DEVICE_HELP
from birdnerf.progress import bars as progress_bars
from birdnerf.progress import console
from birdnerf.train import TrainConfig, train_run
from birdnerf.train.ray_pool import ADDRESS_HELP, RAY_HELP, RETRIES_HELP
from birdnerf_cli.app import app, run
from birdnerf_cli.report import (
    block_progress,
    exit_on_failed_blocks,
    print_block_quality,
    ray_options,
    train_plan_report,
)


@app.command("train")
def train_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory made by `birdnerf partition`."),
    block: list[str] = typer.Option(None, "--block", help="Train only this block id (repeatable)."),
    steps: int = typer.Option(TrainConfig.steps, "--steps", min=1, help="Optimisation steps per block."),
    rays: int = typer.Option(
        TrainConfig.rays_per_batch,
        "--rays",
        min=64,
        help="Rays (pixels) drawn per step (the first step draws them all); a step that cannot fit "
        "in the memory available is refused before training starts.",
    ),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Blocks trained at once, in separate processes."),
    threads: int = typer.Option(
        None,
        "--threads",
        min=1,
        help="Torch threads per job (default: cores / jobs, never more). With --ray: CPUs per block "
        "(default: the cluster's CPUs / blocks, at most one node's).",
    ),
    ray: bool = typer.Option(False, "--ray", help=RAY_HELP),
    ray_address: str = typer.Option(None, "--ray-address", metavar="HOST:PORT", help=ADDRESS_HELP),
    retries: int = typer.Option(3, "--retries", min=0, help=RETRIES_HELP),
    backend: str = typer.Option(
        "auto",
        "--backend",
        help="Hash-grid backend: auto (fused on CPU, tcnn on CUDA), torch (reference), compiled "
        "(torch.compile), fused (C++ kernel, the fast CPU path; built on first use, ~1 min), tcnn (CUDA).",
    ),
    precision: str = typer.Option(
        TrainConfig.precision,
        "--precision",
        help="Precision of the field's MLPs: auto (bf16 with the fused backend on CPUs with bfloat16 "
        "instructions, AVX512-BF16 or AMX; else fp32), fp32, bf16 (fused only). The hash tables and "
        "the optimiser stay float32.",
    ),
    device: str = typer.Option(TrainConfig.device, "--device", help=DEVICE_HELP),
    resume: bool = typer.Option(
        True, "--resume/--no-resume", help="Continue from each block's last checkpoint."
    ),
    force: bool = typer.Option(False, "--force", help="Retrain blocks that are already done, from scratch."),
    seed: int = typer.Option(0, "--seed", help="Random seed (data order, sampling, initialisation)."),
    lr: float = typer.Option(
        TrainConfig.lr,
        "--lr",
        min=0.0,
        help="Adam learning rate of the hash tables (held for half the steps, then decayed to "
        f"{TrainConfig.lr_decay:g}x; a resumed block keeps the rate it started with).",
    ),
    mlp_lr: float = typer.Option(
        TrainConfig.mlp_lr, "--mlp-lr", min=0.0, help="Adam learning rate of the MLPs and appearance codes."
    ),
    surface_prior: bool = typer.Option(
        True,
        "--surface-prior/--no-surface-prior",
        help="Limit sampling to a shell around the sparse points (faster; can cut surfaces they miss).",
    ),
    checkpoint_every: int = typer.Option(
        TrainConfig.checkpoint_every, "--checkpoint-every", min=1, help="Steps between checkpoints."
    ),
    max_minutes: float = typer.Option(
        None,
        "--max-minutes",
        min=0.01,
        help="Stop each block after this many minutes of training, or at --steps if sooner "
        "(the learning rate then decays over the second half of the time).",
    ),
) -> None:
    """Train every block (or --block ones); finished blocks are skipped, interrupted ones resume."""
    ray_opts = ray_options(ray, ray_address, retries, jobs)
    config = dataclasses.replace(
        TrainConfig(),
        steps=steps,
        rays_per_batch=rays,
        backend=backend,
        precision=precision,
        device=device,
        seed=seed,
        lr=lr,
        mlp_lr=mlp_lr,
        checkpoint_every=checkpoint_every,
        surface_prior=surface_prior,
        max_seconds=None if max_minutes is None else 60.0 * max_minutes,
    )
    with progress_bars() as bars:
        tasks: dict[str, int] = {}
        on_plan = train_plan_report(bars, tasks, steps)
        on_progress = block_progress(bars, tasks)
        results = run(
            train_run,
            run_dir,
            config,
            block_ids=block or None,
            jobs=jobs,
            threads=threads,
            resume=resume,
            force=force,
            on_progress=on_progress,
            on_plan=on_plan,
            ray=ray_opts,
        )
    trained = [b for b, r in results.items() if r.get("finished")]
    print_block_quality(results)
    exit_on_failed_blocks(results)
    console.print(f"trained {len(trained)} block(s); checkpoints in {run_dir / 'blocks'}")
