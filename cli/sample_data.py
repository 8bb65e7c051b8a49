"""``birdnerf sample-data``: render the synthetic aerial sample dataset."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from birdnerf.progress import bar, console
from birdnerf.synthetic import (
    PRESETS,
    check_output_dir,
    describe_preset,
    generate_sample_scene,
    resolve_preset,
)
from birdnerf_cli.app import app, run

_SURVEY = PRESETS["small"].survey
_HILLS = PRESETS["hills"].site
_HELP = (
    "Render a synthetic drone survey of a procedural site: photos (PNG), ground-truth z-depth maps "
    "(float32 .npy, metres along the camera axis), poses and (unless --no-points) sparse points, as a "
    "nerfstudio transforms.json dataset. World frame: metres, z up; the ground is flat at z = 0 except "
    f"in the hills scene (rolling terrain around z = {_HILLS.ground_z_m:.0f} m). Pinhole photos of "
    f"{_SURVEY.width}x{_SURVEY.height} px ({_SURVEY.hfov_deg:.0f} degree horizontal field of view) are "
    f"taken {_SURVEY.altitude_m:.0f} m above the mean ground ({_SURVEY.gsd_m * 100:.0f} cm per pixel) on a "
    f"lawnmower flight with {_SURVEY.forward_overlap:.0%} forward and {_SURVEY.side_overlap:.0%} side "
    "overlap; every 8th photo is held out for testing. The same seed gives identical files."
)
_SCENES = "; ".join(f"{name}: {describe_preset(p)}" for name, p in PRESETS.items())


@app.command("sample-data", help=_HELP)
def sample_data(
    out: Path = typer.Argument(..., help="Dataset directory to create (must be missing or empty)."),
    scene: str = typer.Option(
        "small",
        "--scene",
        help=f"Sample scene ({_SCENES}); same altitude above the ground and overlaps for all, "
        "and the image size above except for sample.",
    ),
    seed: int = typer.Option(
        0, "--seed", min=0, help="Seed of the site layout, textures, pose jitter and photo exposures."
    ),
    oblique: bool = typer.Option(
        False,
        "--oblique",
        help="Tilt the camera 35 degrees off nadir, turning its heading 90 degrees per photo.",
    ),
    variant: str = typer.Option(
        "base",
        "--variant",
        help="'base' flies the whole site; 'changed' adds buildings in the +x/+y corner and flies only "
        "that corner (same world frame), to test scene updates.",
    ),
    no_points: bool = typer.Option(
        False,
        "--no-points",
        help="Write no sparse points and reference no depth maps in transforms.json (plain posed photos); "
        "the ground-truth depth maps (metres) are still written to depth/ for scoring.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a dataset already in OUT."),
) -> None:
    preset = run(resolve_preset, scene)
    if no_points:
        preset = replace(preset, write_points=False)
    run(check_output_dir, out, overwrite)
    with bar(f"rendering {preset.name} sample") as progress:
        result = run(
            generate_sample_scene,
            out,
            preset,
            seed=seed,
            oblique=oblique,
            progress=progress,
            variant=variant,
            overwrite=overwrite,
        )
    extent = preset.site.extent_m
    survey = preset.survey
    console.print(
        f"Wrote {len(result)} photos ({len(result.indices('test'))} held out for testing) of a "
        f"{extent:.0f} m x {extent:.0f} m site to [bold]{result.root}[/]",
        highlight=False,
    )
    points = "no sparse points" if result.points is None else f"{len(result.points)} sparse points"
    console.print(
        f"  {survey.width}x{survey.height} px, altitude {survey.altitude_m:.0f} m above the ground, "
        f"{survey.gsd_m * 100:.0f} cm/px on the ground, {points}",
        highlight=False,
    )
