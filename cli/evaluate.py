"""``birdnerf eval``: score held-out photos rendered from the blocks."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from birdnerf.eval import evaluate_run
from birdnerf.progress import bar, console
from birdnerf_cli.main import app, run


def _db(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_eval(result: dict) -> None:
    table = Table(title=f"held-out photos: {result['n_test_photos']}")
    table.add_column("scope")
    table.add_column("PSNR (dB)", justify="right")
    table.add_column("pixels", justify="right")
    table.add_row("all (mean over photos)", _db(result["psnr"]), "")
    table.add_row(
        f"boundary band (±{result['boundary_band_m']:.1f} m)",
        _db(result["psnr_boundary"]),
        f"{result['boundary_pixels']:,}",
    )
    table.add_row("block interiors", _db(result["psnr_interior"]), f"{result['interior_pixels']:,}")
    for block_id, entry in result["per_block"].items():
        table.add_row(f"block {block_id}", _db(entry["psnr"]), f"{entry['pixels']:,}")
    console.print(table)
    lpips = result["lpips_unavailable"] or f"{result['lpips']:.3f}"
    console.print(f"SSIM {result['ssim']:.3f}   LPIPS: {lpips}")


@app.command("eval")
def eval_cmd(
    run_dir: Path = typer.Argument(..., help="A trained run directory."),
    band: float = typer.Option(
        None, "--band", min=0.0, help="Half-width of the boundary band around block edges (scene units)."
    ),
) -> None:
    """PSNR/SSIM on held-out photos: per photo, per block, boundary band vs interiors -> RUN/eval.json."""
    with bar("eval", None) as progress:
        result = run(evaluate_run, run_dir, band_m=band, progress=progress)
    print_eval(result)
    console.print(f"metrics: {Path(run_dir) / 'eval.json'}\nrenders: {Path(run_dir) / 'renders' / 'test'}")
