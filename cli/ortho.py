"""``birdnerf ortho``: a true orthophoto and a DSM of a trained run, as Cloud-Optimized GeoTIFFs."""

from __future__ import annotations

from pathlib import Path

import typer

from birdnerf.device import DEVICE_HELP
from birdnerf.ortho import OrthoConfig, render_ortho
from birdnerf.progress import bar, console
from birdnerf_cli.app import app, run


@app.command("ortho")
def ortho_cmd(
    run_dir: Path = typer.Argument(..., help="A trained run directory."),
    gsd: float = typer.Option(
        None,
        "--gsd",
        help="Cell size in metres (scene units). Default: the median ground sampling distance of "
        "the training photos (height above the ground along the optical axis / focal length). A "
        "raster that cannot fit in memory or on disk is refused before rendering, with a GSD that fits.",
    ),
    out: Path = typer.Option(None, "-o", "--out", help="Output folder (default RUN/ortho)."),
    min_opacity: float = typer.Option(
        0.5,
        "--min-opacity",
        min=0.0,
        max=1.0,
        help="Opacity (0-1) below which a cell is empty: alpha 0, DSM nodata.",
    ),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Render orthophoto.tif (RGBA) and dsm.tif (float32 heights, metres) with vertical rays.

    Georeferenced runs are written in the UTM zone of their origin (DSM: WGS84 ellipsoidal
    heights), others in the run's world frame (a LOCAL_CS; see ortho.json beside them). Each
    block's tile is cached in DIR/blocks/ and reused until the block is retrained.
    """
    config = OrthoConfig(gsd=gsd, out_dir=out, min_opacity=min_opacity, device=device)
    with bar("ortho", None) as progress:
        result = run(render_ortho, run_dir, config, progress=progress)
    crs = result.crs if result.frame == "UTM" else "LOCAL_CS"
    console.print(
        f"{result.width} x {result.height} cells at {result.gsd:.3g} m ({result.frame}, {crs}) "
        f"in {result.seconds:.1f} s; blocks rendered: {', '.join(result.rendered) or 'none'}"
        f"{'; reused: ' + ', '.join(result.reused) if result.reused else ''}"
    )
    console.print(f"orthophoto: {result.orthophoto}\ndsm:        {result.dsm}")
