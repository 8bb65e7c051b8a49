"""``birdnerf update``: add photos of a changed area; retrain only the blocks they touch."""

from __future__ import annotations

from pathlib import Path

import typer

from birdnerf.progress import bars as progress_bars
from birdnerf.progress import console
from birdnerf.train.ray_pool import ADDRESS_HELP, RAY_HELP, RETRIES_HELP
from birdnerf.update import UpdateOptions, rollback, update_run
from birdnerf_cli.app import app, run
from birdnerf_cli.report import block_progress, ray_options, update_plan_report


@app.command("update")
def update_cmd(
    run_dir: Path = typer.Argument(..., help="A trained run directory."),
    add: Path = typer.Option(
        None,
        "--add",
        help="Dataset with the new photos (any layout `partition` reads), in the run's frame or "
        "georeferenced (ENU), so it can be brought into it.",
    ),
    from_scratch: bool = typer.Option(
        False, "--from-scratch", help="Retrain touched blocks from a fresh field instead of fine-tuning."
    ),
    replace_older: bool = typer.Option(
        False,
        "--replace-older",
        help="Drop older photos of the changed area (where the new photos look) from the touched "
        "blocks, so the area shows its new state.",
    ),
    allow_new_area: bool = typer.Option(
        False,
        "--allow-new-area",
        help="Accept photos that touch none of the run's blocks (they only make new blocks beyond it).",
    ),
    steps: int = typer.Option(
        None,
        "--steps",
        min=1,
        help="Steps per retrained block (default: the run's steps; half of them when fine-tuning).",
    ),
    jobs: int = typer.Option(
        1, "--jobs", "-j", min=1, help="Blocks retrained at once, in separate processes."
    ),
    threads: int = typer.Option(
        None,
        "--threads",
        min=1,
        help="Torch threads per job (default: cores / jobs). With --ray: CPUs per block.",
    ),
    ray: bool = typer.Option(False, "--ray", help=RAY_HELP),
    ray_address: str = typer.Option(None, "--ray-address", metavar="HOST:PORT", help=ADDRESS_HELP),
    retries: int = typer.Option(3, "--retries", min=0, help=RETRIES_HELP),
    rollback_to: int = typer.Option(
        None,
        "--rollback",
        min=1,
        help="Instead of adding photos, restore this manifest version (see `birdnerf info`) as a new "
        "version. Nothing is retrained: every version keeps its block folders.",
    ),
    rollback_previous: bool = typer.Option(
        False, "--rollback-previous", help="Restore the version before the current one."
    ),
) -> None:
    """Add new photos to a trained run, retraining only the blocks they touch (a new version)."""
    if rollback_to is not None or rollback_previous:
        if add is not None:
            raise typer.BadParameter("use either --add or --rollback, not both")
        restored = run(rollback, run_dir, rollback_to)
        console.print(
            f"version {restored.version}: restored version {restored.change['restores']} of {run_dir}",
            highlight=False,
        )
        return
    if add is None:
        raise typer.BadParameter("give --add DATA (new photos) or --rollback VERSION")
    ray_opts = ray_options(ray, ray_address, retries, jobs)
    options = UpdateOptions(
        from_scratch=from_scratch, replace_older=replace_older, steps=steps, allow_new_area=allow_new_area
    )
    with progress_bars() as bars:
        tasks: dict[str, int] = {}
        on_plan = update_plan_report(bars, tasks)
        on_progress = block_progress(bars, tasks)
        plan = run(
            update_run,
            run_dir,
            add,
            options,
            jobs=jobs,
            threads=threads,
            on_plan=on_plan,
            on_progress=on_progress,
            ray=ray_opts,
        )
    seconds = plan.partition.change.get("seconds", 0.0)
    console.print(
        f"version {plan.partition.version} is current: retrained {len(plan.retrain)} block(s) in "
        f"{seconds:.0f} s; `birdnerf info {run_dir}` shows the history",
        highlight=False,
    )
