"""``birdnerf view``: the interactive web viewer of a run."""

from __future__ import annotations

from pathlib import Path

import typer

from birdnerf.device import DEVICE_HELP
from birdnerf.progress import console
from birdnerf_cli.app import app, run


@app.command("view")
def view_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory (partitioned; trained blocks render live)."),
    port: int = typer.Option(
        8080,
        "--port",
        min=0,
        max=65535,
        help="Port to listen on (the next free one if busy; 0: any free port).",
    ),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address to listen on: 127.0.0.1 is this machine only, 0.0.0.0 every network interface.",
    ),
    width: int = typer.Option(
        480,
        "--width",
        min=16,
        max=4096,
        help="Live render width in pixels when the camera is still.",
    ),
    preview_width: int = typer.Option(
        64, "--preview-width", min=8, max=1024, help="Live render width in pixels while it moves."
    ),
    thumbnails: int = typer.Option(
        64,
        "--thumbnails",
        min=0,
        max=512,
        help="Photo thumbnail width on the frustums, pixels; 0: none.",
    ),
    backend: str = typer.Option(
        "auto",
        "--backend",
        help="Field backend of the blocks: auto (the fastest here; on a CPU the first render compiles it, "
        "up to a minute), torch (no compilation, slower), compiled, fused, tcnn.",
    ),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Open a web viewer: cameras, block boxes, sparse points, orthophoto, live renders. Ctrl-C stops it."""
    from birdnerf.viewer import ViewerConfig, serve

    config = ViewerConfig(
        host=host,
        port=port,
        full_width=width,
        preview_width=preview_width,
        thumbnails=thumbnails,
        device=device,
        backend=backend,
    )
    viewer = run(serve, run_dir, config)
    console.print(f"viewer of {run_dir}: [bold]{viewer.url}[/] (Ctrl-C to stop)", highlight=False)
    try:
        viewer.wait()
    except KeyboardInterrupt:
        console.print("stopping the viewer")
    finally:
        viewer.stop()
