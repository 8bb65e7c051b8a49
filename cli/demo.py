"""``birdnerf demo``: the whole pipeline on the shipped sample scene."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from birdnerf.demo import QUICK_STEPS, DemoConfig, quick_config, run_demo
from birdnerf.eval.metrics import MIN_MARGIN_DB
from birdnerf.formats import EVAL, read_record
from birdnerf.progress import bars as progress_bars
from birdnerf.progress import console, format_info
from birdnerf.synthetic import SAMPLE_SEED, resolve_preset
from birdnerf_cli.app import app, run
from birdnerf_cli.report import block_progress, print_block_quality, print_eval


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(
        Path("birdnerf-demo"), "--out", "-o", help="Folder for the dataset, run and renders."
    ),
    steps: int | None = typer.Option(
        None,
        "--steps",
        min=1,
        help=f"Training steps per block (default {DemoConfig.steps}; {QUICK_STEPS} with --quick).",
        show_default=False,
    ),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Blocks trained at once (processes)."),
    seed: int | None = typer.Option(
        None,
        "--seed",
        min=0,
        help=f"Seed of the sample scene and of training (default 0; {SAMPLE_SEED} with --quick, the seed "
        "of sample_data/).",
        show_default=False,
    ),
    scene: str | None = typer.Option(
        None,
        "--scene",
        help="Sample scene: hills (terrain 31-43 m high, towers, lobed tree crowns, per-photo exposure), "
        "the flat small, medium and large sites, or sample (the survey in sample_data/; see "
        "`birdnerf sample-data --help`; default hills, sample with --quick).",
        show_default=False,
    ),
    quick: bool = typer.Option(
        False,
        "--quick",
        help=f"About a minute on 2 cores: the survey committed in sample_data/ (nothing to render), 2x2 "
        f"blocks, a small field and {QUICK_STEPS} steps per block.",
    ),
) -> None:
    """Sample scene -> partition -> train -> eval -> fly-over video, then print where everything is."""
    config = quick_config() if quick else DemoConfig()
    config = replace(
        config,
        scene=run(resolve_preset, scene or config.scene),
        steps=steps or config.steps,
        seed=config.seed if seed is None else seed,
        jobs=jobs,
    )
    with progress_bars() as bars:

        def finish_stage() -> None:
            """Stop the clocks of the last stage's bars (a stage without steps shows as done)."""
            for task in bars.tasks:
                if task.stop_time is None:
                    if task.total is None:
                        bars.update(task.id, total=1, completed=1)
                    bars.stop_task(task.id)

        def on_stage(name: str):
            finish_stage()
            if name == "train":
                return block_progress(bars, {})
            task = bars.add_task(name, total=None, info="")

            def on_step(done: int, total: int, info: dict | None = None) -> None:
                bars.update(task, completed=done, total=total, info=format_info(info))

            return on_step

        result = run(run_demo, out, config, on_stage=on_stage)
        finish_stage()
    print_block_quality(result.trained)
    print_eval(read_record(result.eval_json, EVAL))
    total = sum(result.seconds.values())
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    console.print(f"\n[bold]done in {total:.0f} s[/] ({stages})")
    console.print(f"dataset:  {result.data_dir}")
    console.print(f"run:      {result.run_dir}  (partition.png, blocks/)")
    console.print(f"renders:  {result.renders / 'test'}  (RGB, depth, block-id PNGs)")
    console.print(f"video:    {result.video}\n          {result.depth_video}")
    console.print(
        f"metrics:  {result.eval_json}  (held-out PSNR {result.psnr:.2f} dB, SSIM {result.ssim:.3f}; "
        f"each photo's mean colour: {result.baseline_psnr:.2f} dB, {result.baseline_ssim:.3f})"
    )
    if result.psnr - result.baseline_psnr < MIN_MARGIN_DB:
        console.print(
            f"[bold red]warning:[/] the demo's renders are not {MIN_MARGIN_DB:g} dB better than each "
            "photo's mean colour: training failed (see the warnings above)."
        )
