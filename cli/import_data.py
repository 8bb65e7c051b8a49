"""``birdnerf import``: turn a COLMAP model, raw drone photos or a Mill19 folder into a dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from birdnerf.ingest import ImportConfig, SfmOptions, check_import, import_dataset
from birdnerf.progress import bar, console
from birdnerf_cli.app import app, run

_HELP = (
    "Import real drone data as a birdnerf dataset: OUT/transforms.json (nerfstudio format, camera "
    "poses and intrinsics in pixels), OUT/images/ (copies, downscaled when asked), OUT/points.npz "
    "(sparse points) and OUT/import_report.json (photos registered and skipped, GPS residual). "
    "SRC is a COLMAP dataset (images/ + sparse/0, text or binary; lens distortion is kept in the "
    "cameras, images are not undistorted), a folder of photos (reconstructed with structure from "
    "motion; needs pycolmap), or a Mega-NeRF/Mill19 folder (coordinates.pt + train/ and val/; val "
    "photos become test photos). With EXIF GPS on enough photos the dataset is georeferenced: "
    "world frame in metres, x east, y north, z up, origin at the photos' mean GPS position (WGS84). "
    "Otherwise up and the ground are estimated from the cameras and points (units: those of the "
    "source). OUT is built beside itself and renamed into place; re-importing into the same OUT "
    "reuses unchanged image copies."
)
_STEPS = {
    "metadata": "reading photos",
    "images": "copying images",
    "features": "SfM features",
    "matching": "SfM matching",
    "mapping": "SfM mapping",
}


@app.command("import", help=_HELP)
def import_cmd(
    src: Path = typer.Argument(..., help="COLMAP dataset or model folder, photo folder, or Mill19 folder."),
    out: Path = typer.Option(
        ..., "-o", "--out", help="Dataset folder to create (or an earlier import to replace)."
    ),
    source: str = typer.Option(
        "auto", "--from", help="What SRC is: auto, colmap, images (raw photos, SfM) or mill19."
    ),
    max_width: int = typer.Option(
        None, "--max-width", min=1, help="Downscale photos wider than this many pixels (aspect kept)."
    ),
    downscale: float = typer.Option(
        None,
        "--downscale",
        min=1.0,
        help="Divide photo width and height by this factor (e.g. 2 halves them).",
    ),
    no_geo: bool = typer.Option(
        False,
        "--no-geo",
        help="Do not georeference: estimate up and the ground instead of using GPS/ENU metres "
        "(GPS still guides SfM matching).",
    ),
    neighbors: int = typer.Option(
        10, "--neighbors", min=1, help="SfM only: match each photo with this many nearest photos by GPS."
    ),
    skip_bad_photos: bool = typer.Option(
        False,
        "--skip-bad-photos",
        help="Import without the photos that are missing, empty, unreadable or not their camera's "
        "size (listed as skipped). Default: refuse the import, naming them.",
    ),
) -> None:
    config = ImportConfig(
        source=source,
        max_width=max_width,
        downscale=downscale,
        geo=not no_geo,
        sfm=SfmOptions(neighbors=neighbors),
        skip_bad_photos=skip_bad_photos,
    )
    run(check_import, src, out, config)
    with bar("importing") as update:

        def progress(done: int, total: int, info: dict) -> None:
            update(done, total, {"step": _STEPS.get(info.get("step", ""), info.get("step", ""))})

        report = run(import_dataset, src, out, config, progress)
    console.print(
        f"Registered {report.photos_registered} of {report.photos_total} photos "
        f"({len(report.skipped)} skipped; see import_report.json)",
        highlight=False,
    )
    for skipped in report.skipped[:5]:
        console.print(f"  skipped {skipped.name}: {skipped.reason}", highlight=False)
    if len(report.skipped) > 5:
        console.print(f"  ... and {len(report.skipped) - 5} more", highlight=False)
    if report.frame.get("source") == "gps":
        origin = report.gps["origin"]
        console.print(
            f"Georeferenced: GPS residual {report.gps['rms_m']:.3f} m RMS (max {report.gps['max_m']:.3f} m) "
            f"over {report.gps['used']} photos; ENU origin lat {origin['lat']:.7f}, lon {origin['lon']:.7f}, "
            f"alt {origin['alt']:.2f} m",
            highlight=False,
        )
    else:
        console.print(
            f"Not georeferenced ({report.frame.get('reason', '')}); up from {report.frame.get('up')}, "
            f"ground from {report.frame.get('ground')}",
            highlight=False,
        )
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if report.sfm:
        total = sum(report.sfm["seconds"].values())
        console.print(
            f"Structure from motion: {report.sfm['pairs_matched']} pairs, {total:.1f} s", highlight=False
        )
    console.print(f"Dataset: [bold]{report.dataset}[/]", highlight=False)
