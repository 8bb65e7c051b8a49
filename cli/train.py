"""``birdnerf train``: train one hash-grid NeRF per block."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from rich.table import Table

from birdnerf.device import DEVICE_HELP
from birdnerf.eval.metrics import MIN_MARGIN_DB
from birdnerf.progress import bars as progress_bars
from birdnerf.progress import console
from birdnerf.train import TrainConfig, train_run
from birdnerf_cli.main import app, run


def block_progress(bars, tasks: dict[str, int]):
    """The ``on_progress`` callback of block training: one bar per block with PSNR and rays/s
    (a block without a bar in ``tasks`` gets one when it first reports)."""

    def on_progress(block_id: str, done: int, total: int, info: dict) -> None:
        if block_id not in tasks:
            tasks[block_id] = bars.add_task(f"train {block_id}", total=total, info="")
        text = f"PSNR {info['psnr']:.2f} dB  {info['rays_per_s']:,.0f} rays/s"
        bars.update(tasks[block_id], completed=done, total=total, info=text)

    return on_progress


def print_block_quality(results: dict[str, dict]) -> None:
    """A table of each finished block's PSNR against the mean-colour baseline of the same pixels,
    and a warning for every block (and the run) that does not beat it by ``MIN_MARGIN_DB``."""
    scored = {b: r["quality"] for b, r in results.items() if r.get("finished") and r.get("quality")}
    if not scored:
        return
    table = Table(title="blocks vs the mean-colour baseline of the same pixels")
    for column in ("block", "scored pixels", "PSNR (dB)", "baseline (dB)", "margin (dB)"):
        table.add_column(column, justify="left" if column == "block" else "right")
    for block_id, q in scored.items():
        table.add_row(
            block_id,
            f"{q['pixels']:,} {q['scored']}",
            f"{q['psnr']:.2f}",
            f"{q['baseline_psnr']:.2f}",
            f"{q['margin_db']:+.2f}",
        )
    console.print(table)
    weak = [b for b, q in scored.items() if not q["margin_db"] >= MIN_MARGIN_DB]  # NaN is weak too
    for block_id in weak:
        q = scored[block_id]
        console.print(
            f"[bold yellow]warning:[/] block {block_id} is {q['margin_db']:+.2f} dB from the mean colour "
            f"of its {q['scored']} pixels (needs +{MIN_MARGIN_DB:g} dB): it learned nothing useful. "
            "Check the geometry (camera poses, the ground height in partition.json), then train more "
            "steps (--steps)."
        )
    if weak and len(weak) == len(scored):
        console.print(
            f"[bold red]warning:[/] no block beats the mean-colour baseline by {MIN_MARGIN_DB:g} dB: "
            "this run learned nothing useful, and its renders are little more than average colours."
        )


@app.command("train")
def train_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory made by `birdnerf partition`."),
    block: list[str] = typer.Option(None, "--block", help="Train only this block id (repeatable)."),
    steps: int = typer.Option(TrainConfig.steps, "--steps", min=1, help="Optimisation steps per block."),
    rays: int = typer.Option(TrainConfig.rays_per_batch, "--rays", min=64, help="Rays (pixels) per step."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Blocks trained at once, in separate processes."),
    threads: int = typer.Option(
        None, "--threads", min=1, help="Torch threads per job (default: cores / jobs, never more)."
    ),
    backend: str = typer.Option(
        "auto",
        "--backend",
        help="Hash-grid backend: auto (fused on CPU, tcnn on CUDA), torch (reference), compiled "
        "(torch.compile), fused (C++ kernel, the fast CPU path; built on first use, ~1 min), tcnn (CUDA).",
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
    config = dataclasses.replace(
        TrainConfig(),
        steps=steps,
        rays_per_batch=rays,
        backend=backend,
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

        def on_plan(plans) -> None:
            for p in plans:
                if p.action.startswith("skip"):
                    console.print(f"{p.block_id}: {p.action.removeprefix('skip-')}, skipped")
                else:
                    tasks[p.block_id] = bars.add_task(f"{p.block_id} ({p.action})", total=steps, info="")

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
        )
    trained = [b for b, r in results.items() if r.get("finished")]
    print_block_quality(results)
    console.print(f"trained {len(trained)} block(s); checkpoints in {run_dir / 'blocks'}")
