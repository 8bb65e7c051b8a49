"""``birdnerf partition``: cut a survey into bird-view blocks."""

from __future__ import annotations

from pathlib import Path

import typer

from birdnerf.errors import BirdnerfError
from birdnerf.partition import PartitionConfig, partition_dataset
from birdnerf.partition.relink import relink_dataset
from birdnerf.progress import console
from birdnerf_cli.app import app, run
from birdnerf_cli.report import print_partition


def parse_blocks(text: str | None) -> tuple[int, int] | None:
    """'3x4' -> (3, 4): rows x columns."""
    if text is None:
        return None
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise BirdnerfError(f"--blocks must look like ROWSxCOLS (e.g. 2x3), got {text!r}") from None
    return rows, cols


@app.command("partition")
def partition_cmd(
    data: Path = typer.Argument(..., help="Dataset: a transforms.json (or its folder) or a COLMAP folder."),
    out: Path = typer.Option(..., "-o", "--out", help="Run directory to create or update."),
    blocks: str = typer.Option(
        None, "--blocks", help="Grid as ROWSxCOLS, e.g. 2x2. Overrides --images-per-block."
    ),
    images_per_block: int = typer.Option(
        20, "--images-per-block", min=1, help="Target training photos per block (centres in its core)."
    ),
    overlap: float = typer.Option(
        0.25, "--overlap", min=0.0, help="Overlap on each side of a block, as a fraction of its core size."
    ),
    overlap_m: float = typer.Option(
        None, "--overlap-m", min=0.0, help="Overlap on each side in scene units (metres if georeferenced)."
    ),
    min_coverage: float = typer.Option(
        0.1,
        "--min-coverage",
        min=0.0,
        max=1.0,
        help="Fraction of a photo's pixels a block must see to use it.",
    ),
    ground_z: float = typer.Option(
        None,
        "--ground-z",
        metavar="METRES",
        help="Height of the ground, in the dataset's units (metres if georeferenced) along its up axis "
        "(for a z-up dataset: its z coordinate). Replaces the estimate from points or photos.",
    ),
    z_range: tuple[float, float] | None = typer.Option(
        None,
        "--z-range",
        metavar="ZMIN ZMAX",
        help="Heights of the lowest and highest surface (ground to the tallest roof or tree), same units "
        "and axis as --ground-z: every block's 3D box spans exactly this range.",
    ),
    force: bool = typer.Option(
        False, "--force", help="Re-partition a run that has trained blocks: deletes its blocks and history."
    ),
    relink: bool = typer.Option(
        False,
        "--relink",
        help="The run's dataset moved to DATA: check that DATA holds the same photos (it must partition, "
        "with the run's own settings, into the same frame, grid and photo lists) and point the run and "
        "its versions at it. Trained blocks are kept; the other options are not used.",
    ),
) -> None:
    """Partition a survey into blocks on the ground plane; writes RUN/partition.json and RUN/partition.png."""
    if relink:
        relinked = run(relink_dataset, data, out)
        console.print(f"{out / 'partition.json'} (version {relinked.version}) now reads {relinked.dataset}")
        return
    config = PartitionConfig(
        blocks=run(parse_blocks, blocks),
        images_per_block=images_per_block,
        overlap=overlap,
        overlap_m=overlap_m,
        min_coverage=min_coverage,
        ground_z=ground_z,
        z_range=None if z_range is None else (z_range[0], z_range[1]),
    )
    partition, scene = run(partition_dataset, data, out, config, force=force)
    print_partition(partition, len(scene), out)
