"""``birdnerf eval``: score held-out photos rendered from the blocks."""

from __future__ import annotations

from pathlib import Path

import typer

from birdnerf.device import DEVICE_HELP
from birdnerf.eval import evaluate_run
from birdnerf.eval.appearance import AppearanceFit
from birdnerf.eval.stage import APPEARANCE_PROTOCOLS
from birdnerf.progress import bar, console
from birdnerf_cli.app import app, run
from birdnerf_cli.report import print_eval


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
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """PSNR/SSIM on held-out photos: per photo, per block, boundary band vs interiors -> RUN/eval.json."""
    if appearance not in APPEARANCE_PROTOCOLS:
        console.print(f"[bold red]error:[/] --appearance must be mean or fit-left, not {appearance!r}")
        raise typer.Exit(1)
    with bar("eval", None) as progress:
        fit = AppearanceFit(steps=fit_steps, rays=fit_rays)
        result = run(
            evaluate_run,
            run_dir,
            band_m=band,
            progress=progress,
            appearance=appearance,
            fit=fit,
            device=device,
        )
    print_eval(result)
    console.print(f"metrics: {Path(run_dir) / 'eval.json'}\nrenders: {Path(run_dir) / 'renders' / 'test'}")
