"""``birdnerf render`` and ``birdnerf path``: novel views composited from the trained blocks."""

from __future__ import annotations

from pathlib import Path

import typer

from birdnerf.composite import flyover_path, orbit_path, read_camera_path, render_run, write_camera_path
from birdnerf.device import DEVICE_HELP
from birdnerf.partition import load_scene, read_partition
from birdnerf.progress import bar, console
from birdnerf_cli.app import app, run


@app.command("render")
def render_cmd(
    run_dir: Path = typer.Argument(..., help="A trained run directory."),
    split: str = typer.Option("test", "--split", help="Dataset photos to render: test, train or all."),
    camera_path: Path = typer.Option(
        None, "--camera-path", help="Render a nerfstudio-style camera-path JSON instead (run's world frame)."
    ),
    out: Path = typer.Option(None, "-o", "--out", help="Output folder (default RUN/renders/<split|path>)."),
    video: bool = typer.Option(
        False, "--video", help="Also write a video of the frames (RGB and depth): MP4 (H.264), else GIF."
    ),
    gif: bool = typer.Option(False, "--gif", help="Write the --video as an animated GIF instead of MP4."),
    no_depth_guided: bool = typer.Option(
        False,
        "--no-depth-guided",
        help="Assign pixels to blocks by their ground point, not by their rendered surface point.",
    ),
    reference: bool = typer.Option(
        False, "--reference", help="Use the reference renderer (the fast path's twin, for checks)."
    ),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Render views as RGB, depth (PNG + metres in .npy) and block-id PNGs."""
    if split not in ("test", "train", "all"):
        console.print(f"[bold red]error:[/] --split must be test, train or all, not {split!r}")
        raise typer.Exit(2)
    path = run(read_camera_path, camera_path) if camera_path else None
    with bar("render", None) as progress:
        summary = run(
            render_run,
            run_dir,
            split=split,
            camera_path=path,
            out_dir=out,
            video=("gif" if gif else "mp4") if video else None,
            depth_guided=not no_depth_guided,
            fast=not reference,
            progress=progress,
            device=device,
        )
    fps = len(summary.views) / max(summary.seconds, 1e-9)
    console.print(
        f"{len(summary.views)} views in {summary.seconds:.1f} s "
        f"({fps:.2f} frames/s, {summary.rays_per_second:,.0f} rays/s), "
        f"blocks loaded: {', '.join(summary.blocks_loaded)}"
    )
    console.print(f"renders: {summary.out_dir}")
    if summary.animation:
        console.print(f"video:   {summary.animation}\n         {summary.depth_animation}")


@app.command("path")
def path_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory (its partition gives the site extent)."),
    out: Path = typer.Option(..., "-o", "--out", help="Camera-path JSON to write."),
    kind: str = typer.Option(
        "orbit", "--kind", help="orbit (circle around the centre) or flyover (straight pass)."
    ),
    frames: int = typer.Option(48, "--frames", min=2, help="Number of frames."),
    altitude: float = typer.Option(
        None, "--altitude", help="Height above ground in scene units (default: the survey's median)."
    ),
    scale: float = typer.Option(1.0, "--scale", min=0.05, help="Image size relative to the survey photos."),
) -> None:
    """Generate a camera path over the site (render it with `birdnerf render --camera-path`)."""
    partition = run(read_partition, run_dir)
    scene = run(load_scene, partition)
    camera = scene.cameras[0].scaled(scale)
    height = altitude or float(scene.centers[:, 2].mean() - partition.frame["ground_z"])
    if kind not in ("orbit", "flyover"):
        console.print(f"[bold red]error:[/] --kind must be orbit or flyover, not {kind!r}")
        raise typer.Exit(2)
    maker = orbit_path if kind == "orbit" else flyover_path
    written = write_camera_path(out, maker(partition, camera, height, frames))
    console.print(f"camera path ({frames} frames, {kind}): {written}")
