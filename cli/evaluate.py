"""``birdnerf eval``: score held-out photos rendered from the blocks."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from birdnerf.device import DEVICE_HELP
from birdnerf.eval import evaluate_run
from birdnerf.eval.appearance import AppearanceFit
from birdnerf.eval.metrics import MIN_MARGIN_DB
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


def _margin(score: float | None, base: float | None) -> str:
    return "-" if score is None or base is None else f"{score - base:+.2f}"


def print_eval(result: dict) -> None:
    """The scores of ``eval.json`` beside the mean-colour baseline, and a warning when the run
    does not beat that baseline by ``MIN_MARGIN_DB``."""
    console.print(protocol_line(result))
    region = " (right halves)" if result.get("scored_region") == "right-half" else ""
    table = Table(title=f"held-out photos: {result['n_test_photos']}{region}")
    table.add_column("scope")
    for column in ("PSNR (dB)", "mean colour (dB)", "margin (dB)", "pixels"):
        table.add_column(column, justify="right")
    base = result.get("baseline_psnr")  # None in eval.json files written before baselines
    rows = [("all (mean over photos)", result["psnr"], base, "")]
    rows.append(
        (
            f"boundary band (±{result['boundary_band_m']:.1f} m)",
            result["psnr_boundary"],
            result.get("baseline_psnr_boundary"),
            f"{result['boundary_pixels']:,}",
        )
    )
    rows.append(
        (
            "block interiors",
            result["psnr_interior"],
            result.get("baseline_psnr_interior"),
            f"{result['interior_pixels']:,}",
        )
    )
    for block_id, entry in result["per_block"].items():
        rows.append((f"block {block_id}", entry["psnr"], entry.get("baseline_psnr"), f"{entry['pixels']:,}"))
    for scope, score, baseline, pixels in rows:
        table.add_row(scope, _db(score), _db(baseline), _margin(score, baseline), pixels)
    console.print(table)
    lpips = result["lpips_unavailable"] or f"{result['lpips']:.3f}"
    base_ssim = result.get("baseline_ssim")
    against = "" if base_ssim is None else f" (mean-colour baseline {base_ssim:.3f})"
    console.print(f"SSIM {result['ssim']:.3f}{against}   LPIPS: {lpips}")
    for line in baseline_warnings(result):
        console.print(line)


def baseline_warnings(result: dict) -> list[str]:
    """Warning lines for a run (``eval.json`` content) that does not beat the mean-colour baseline
    by ``MIN_MARGIN_DB``, overall or in some block; empty when it does (or has no baseline)."""
    if result.get("baseline_psnr") is None:
        return []
    lines = []
    margin = result["psnr"] - result["baseline_psnr"]
    if not margin >= MIN_MARGIN_DB:
        lines.append(
            f"[bold red]warning:[/] held-out PSNR {result['psnr']:.2f} dB is {margin:+.2f} dB from the "
            f"mean-colour baseline ({result['baseline_psnr']:.2f} dB; needs +{MIN_MARGIN_DB:g} dB): "
            "the run learned nothing useful, its renders are no better than each photo's average "
            "colour. Check the geometry (camera poses, the ground height in partition.json) and train "
            "more steps."
        )
    weak = [
        b
        for b, e in result["per_block"].items()
        if e.get("margin_db") is not None and not e["margin_db"] >= MIN_MARGIN_DB
    ]
    if weak and not (lines and len(weak) == len(result["per_block"])):  # else the line above says it
        lines.append(
            f"[bold yellow]warning:[/] block(s) {', '.join(weak)} do not beat the mean-colour baseline of "
            f"their pixels by {MIN_MARGIN_DB:g} dB: check their geometry or train them longer."
        )
    return lines


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
