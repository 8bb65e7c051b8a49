"""``birdnerf demo``: the whole pipeline on the shipped sample scene."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from birdnerf.demo import DemoConfig, run_demo
from birdnerf.progress import bars as progress_bars
from birdnerf.progress import console, format_info
from birdnerf_cli.evaluate import print_eval
from birdnerf_cli.main import app, run


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(
        Path("birdnerf-demo"), "--out", "-o", help="Folder for the dataset, run and renders."
    ),
    steps: int = typer.Option(DemoConfig.steps, "--steps", min=1, help="Training steps per block."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Blocks trained at once (processes)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the sample scene and of training."),
) -> None:
    """Sample scene -> partition -> train -> eval -> fly-over video, then print where everything is."""
    config = DemoConfig(steps=steps, jobs=jobs, seed=seed)
    with progress_bars() as bars:
        open_tasks: list = []

        def finish_open_tasks() -> None:
            """Stop the clocks of the last stage's bars (a stage without steps shows as done)."""
            for task in (t for t in bars.tasks if t.id in open_tasks):
                if task.total is None:
                    bars.update(task.id, total=1, completed=1)
                bars.stop_task(task.id)
            open_tasks.clear()

        def on_stage(name: str):
            finish_open_tasks()
            if name == "train":
                tasks: dict[str, int] = {}

                def on_block(block_id: str, done: int, total: int, info: dict) -> None:
                    if block_id not in tasks:
                        tasks[block_id] = bars.add_task(f"train {block_id}", total=total, info="")
                        open_tasks.append(tasks[block_id])
                    text = f"PSNR {info['psnr']:.2f} dB  {info['rays_per_s']:,.0f} rays/s"
                    bars.update(tasks[block_id], completed=done, total=total, info=text)

                return on_block
            task = bars.add_task(name, total=None, info="")
            open_tasks.append(task)

            def on_step(done: int, total: int, info: dict | None = None) -> None:
                bars.update(task, completed=done, total=total, info=format_info(info))

            return on_step

        result = run(run_demo, out, config, on_stage=on_stage)
        finish_open_tasks()
    print_eval(json.loads(result.eval_json.read_text()))
    total = sum(result.seconds.values())
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    console.print(f"\n[bold]done in {total:.0f} s[/] ({stages})")
    console.print(f"dataset:  {result.data_dir}")
    console.print(f"run:      {result.run_dir}  (partition.png, blocks/)")
    console.print(f"renders:  {result.renders / 'test'}  (RGB, depth, block-id PNGs)")
    console.print(f"video:    {result.video}\n          {result.depth_video}")
    console.print(
        f"metrics:  {result.eval_json}  (held-out PSNR {result.psnr:.2f} dB, SSIM {result.ssim:.3f})"
    )
