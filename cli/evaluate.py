"""``birdnerf eval``: score held-out photos rendered from the blocks."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from birdnerf.eval import evaluate_run
from birdnerf.eval.appearance import AppearanceFit
from birdnerf.eval.stage import APPEARANCE_PROTOCOLS
from birdnerf.progress import bar, console
from birdnerf_cli.main import app, run


def _db(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def protocol_line(result: dict) -> str:
    """One line saying how held-out photos got their appearance and which pixels were scored."""
    if result.get("appearance") == "fit-left":
        fit = result["appearance_fit"]
        return (
            f"appearance: fit-left (Mega-NeRF; codes fitted on the left half, {fit['steps']} Adam steps "
            f"x {fit['rays']} rays) - scores on the RIGHT HALF of each photo"
        )
    return "appearance: mean code of the training photos - scores on whole photos"


def print_eval(result: dict) -> None:
    console.print(protocol_line(result))
    region = " (right halves)" if result.get("scored_region") == "right-half" else ""
    table = Table(title=f"held-out photos: {result['n_test_photos']}{region}")
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
    appearance: str = typer.Option(
        "mean",
        "--appearance",
        help="How held-out photos get an appearance code. mean: the mean of the training photos' "
        "codes, whole photos scored. fit-left: Mega-NeRF's protocol - per photo, fresh codes (one "
        "per block it sees, starting from the mean) are fitted on the LEFT half of its pixels with "
        "the model frozen (Adam, see --fit-steps, --fit-rays), then every score is computed on the "
        "RIGHT half only. fit-left is slower (a fit and a second render per photo).",
    ),
    fit_steps: int = typer.Option(
        AppearanceFit.steps, "--fit-steps", min=1, help="fit-left: Adam steps per photo."
    ),
    fit_rays: int = typer.Option(
        AppearanceFit.rays, "--fit-rays", min=1, help="fit-left: random left-half pixels, used at every step."
    ),
) -> None:
    """PSNR/SSIM on held-out photos: per photo, per block, boundary band vs interiors -> RUN/eval.json."""
    if appearance not in APPEARANCE_PROTOCOLS:
        console.print(f"[bold red]error:[/] --appearance must be mean or fit-left, not {appearance!r}")
        raise typer.Exit(1)
    with bar("eval", None) as progress:
        fit = AppearanceFit(steps=fit_steps, rays=fit_rays)
        result = run(evaluate_run, run_dir, band_m=band, progress=progress, appearance=appearance, fit=fit)
    print_eval(result)
    console.print(f"metrics: {Path(run_dir) / 'eval.json'}\nrenders: {Path(run_dir) / 'renders' / 'test'}")
