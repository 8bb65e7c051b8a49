"""What the commands print about partitions, training, updates and evaluation: progress bars,
plans and tables."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from birdnerf.eval.metrics import MIN_MARGIN_DB
from birdnerf.partition.manifest import Partition
from birdnerf.progress import console
from birdnerf.train.ray_pool import RayOptions
from birdnerf.train.runner import failed_blocks


def block_progress(bars, tasks: dict[str, int]):
    """The ``on_progress`` callback of block training: one bar per block with PSNR and rays/s
    (a block without a bar in ``tasks`` gets one when it first reports)."""

    def on_progress(block_id: str, done: int, total: int, info: dict) -> None:
        if block_id not in tasks:
            tasks[block_id] = bars.add_task(f"train {block_id}", total=total, info="")
        text = f"PSNR {info['psnr']:.2f} dB  {info['rays_per_s']:,.0f} rays/s"
        bars.update(tasks[block_id], completed=done, total=total, info=text)

    return on_progress


def train_plan_report(bars, tasks: dict[str, int], steps: int):
    """The ``on_plan`` callback of block training: a line per skipped block, a bar per block to train."""

    def on_plan(plans) -> None:
        for p in plans:
            if p.action.startswith("skip"):
                console.print(f"{p.block_id}: {p.action.removeprefix('skip-')}, skipped")
            else:
                tasks[p.block_id] = bars.add_task(f"{p.block_id} ({p.action})", total=steps, info="")

    return on_plan


def update_plan_report(bars, tasks: dict[str, int]):
    """The ``on_plan`` callback of an update: the new version's photos, a bar per retrained block,
    and a line for new photos no block takes."""

    def on_plan(plan) -> None:
        console.print(
            f"version {plan.partition.version}: {len(plan.added)} new photos, "
            f"{len(plan.removed)} older ones dropped; untouched blocks: "
            f"{len(plan.partition.blocks) - len(plan.retrain)}",
            highlight=False,
        )
        for block_id, mode in plan.retrain.items():
            tasks[block_id] = bars.add_task(f"{block_id} ({mode})", total=None, info="")
        if plan.unused:
            console.print(
                f"[yellow]{len(plan.unused)} new photos are in no block (too few beyond the grid)[/]"
            )

    return on_plan


def print_partition(partition: Partition, n_photos: int, out: Path) -> None:
    """The blocks of a new partition as a table, how its frame was found, and where it was written."""
    table = Table(title=f"{len(partition.blocks)} blocks over {n_photos} photos")
    for col in ("block", "core (x0, y0, x1, y1)", "z range", "train", "test", "core-owned"):
        table.add_column(col, justify="right" if col in ("train", "test", "core-owned") else "left")
    for b in partition.blocks:
        core = ", ".join(f"{v:.1f}" for v in b.core)
        table.add_row(
            b.id,
            core,
            f"{b.box[2]:.1f} .. {b.box[5]:.1f}",
            str(len(b.images)),
            str(len(b.test_images)),
            str(b.stats["n_core_images"]),
        )
    console.print(table)
    frame = partition.frame
    console.print(f"frame: up from {frame['up_source']}, ground from {frame['ground_source']}")
    if frame.get("measured_points"):
        where = out / frame["points_file"]
        console.print(f"measured {frame['measured_points']} surface points from the photos: {where}")
        if frame.get("points_reach_z") is not None:
            console.print(
                f"  stereo reaches up to z = {frame['points_reach_z']:.3g} (world frame); anything taller "
                "is outside the boxes unless --z-range includes it",
                highlight=False,
            )
    if frame.get("ground_uncertainty_m"):
        console.print(
            f"[yellow]ground height guessed; boxes widened {frame['ground_uncertainty_m']:.3g} below it "
            "(see --ground-z / --z-range)[/yellow]"
        )
    console.print(f"manifest: {out / 'partition.json'}\nmap:      {out / 'partition.png'}")


def print_block_quality(results: dict[str, dict]) -> None:
    """A table of each finished block's PSNR against the mean-colour baseline of the same pixels,
    and a warning for every block (and the run) that does not beat it by ``MIN_MARGIN_DB``."""
    scored = {b: r["quality"] for b, r in results.items() if r.get("finished") and r.get("quality")}
    if not scored:
        return
    table = Table(title="blocks vs the mean-colour baseline of the same pixels")
    for column in ("block", "scored pixels", "PSNR (dB)", "baseline (dB)", "margin (dB)"):
        table.add_column(column, justify="left" if column == "block" else "right")
    for block_id, q in scored.items():
        table.add_row(
            block_id,
            f"{q['pixels']:,} {q['scored']}",
            f"{q['psnr']:.2f}",
            f"{q['baseline_psnr']:.2f}",
            f"{q['margin_db']:+.2f}",
        )
    console.print(table)
    weak = [b for b, q in scored.items() if not q["margin_db"] >= MIN_MARGIN_DB]  # NaN is weak too
    for block_id in weak:
        q = scored[block_id]
        console.print(
            f"[bold yellow]warning:[/] block {block_id} is {q['margin_db']:+.2f} dB from the mean colour "
            f"of its {q['scored']} pixels (needs +{MIN_MARGIN_DB:g} dB): it learned nothing useful. "
            "Check the geometry (camera poses, the ground height in partition.json), then train more "
            "steps (--steps)."
        )
    if weak and len(weak) == len(scored):
        console.print(
            f"[bold red]warning:[/] no block beats the mean-colour baseline by {MIN_MARGIN_DB:g} dB: "
            "this run learned nothing useful, and its renders are little more than average colours."
        )


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


def ray_options(ray: bool, address: str | None, retries: int, jobs: int) -> RayOptions | None:
    """The Ray options of ``train``/``update`` (None: no Ray); ``--jobs`` is refused with Ray."""
    if not (ray or address):
        return None
    if jobs != 1:
        raise typer.BadParameter("--jobs is for the local process pool; with --ray, Ray places the blocks")
    return RayOptions(address, retries)


def exit_on_failed_blocks(results: dict[str, dict]) -> None:
    """One error line per block that failed (with Ray, the others finished), then exit 1."""
    failed = failed_blocks(results)
    for block_id, error in failed.items():
        console.print(
            f"[bold red]error:[/] block {block_id} failed: {error}", highlight=False, soft_wrap=True
        )
    if failed:
        console.print(
            f"{len(failed)} block(s) failed and {len(results) - len(failed)} finished; fix the cause and run "
            "the same command again: finished blocks are skipped, the others resume",
            highlight=False,
        )
        raise typer.Exit(1)
