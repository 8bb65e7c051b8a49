"""``birdnerf export``: a coloured point cloud and/or a TSDF mesh of a trained run, as PLY."""

from __future__ import annotations

from pathlib import Path

import typer

from birdnerf.device import DEVICE_HELP
from birdnerf.export import FRAMES, ExportConfig, export_run
from birdnerf.progress import bar, console
from birdnerf_cli.app import app, run

D = ExportConfig()


@app.command("export")
def export_cmd(
    run_dir: Path = typer.Argument(..., help="A trained run directory."),
    points: Path = typer.Option(
        None, "--points", help="Point cloud PLY to write (positions, normals, colours)."
    ),
    mesh: Path = typer.Option(None, "--mesh", help="Triangle mesh PLY to write (TSDF fusion of the views)."),
    frame: str = typer.Option(
        D.frame,
        "--frame",
        help="Coordinates: world (the run's frame), input (the dataset's input frame, where the "
        "photos' poses came from) or enu (georeferenced East-North-Up metres; the origin's WGS84 "
        "latitude, longitude and height go to FILE.geo.json).",
    ),
    point_spacing: float = typer.Option(
        None,
        "--point-spacing",
        min=0.0,
        help="Points are merged to one per cube of this edge, in scene units (metres when "
        "georeferenced). Default: the rendered views' ground sample distance (camera height over "
        "focal length in pixels).",
    ),
    mesh_voxel: float = typer.Option(
        None,
        "--mesh-voxel",
        min=0.0,
        help="TSDF voxel edge in scene units (metres when georeferenced). Default: the rendered "
        "views' ground sample distance.",
    ),
    scale: float = typer.Option(
        D.render_scale,
        "--scale",
        min=0.05,
        help="Rendered view size relative to the photos (1 = their size in pixels). Views, points "
        "and the TSDF grid that cannot fit in memory or on disk are refused before rendering.",
    ),
    views: int = typer.Option(
        D.max_views,
        "--views",
        min=2,
        help="Training viewpoints rendered per block, at most.",
    ),
    min_agree: int = typer.Option(
        D.min_agree,
        "--min-agree",
        min=1,
        help="A surface point is kept when at least this many other views (of its "
        f"{D.neighbours} nearest) render the same depth there.",
    ),
    tolerance: float = typer.Option(
        D.depth_tolerance,
        "--depth-tolerance",
        min=0.0,
        help="Depths agree when they differ by at most this fraction of the depth "
        "(0.02 = 2 %: 1.2 m at 60 m).",
    ),
    device: str = typer.Option(D.device, "--device", help=DEVICE_HELP),
) -> None:
    """Export the trained run as a point cloud and/or a mesh (PLY), block by block.

    Every block's training viewpoints are rendered (RGB and depth) from the composite; points
    that neighbouring views confirm are kept (one per --point-spacing cube, normals facing the
    cameras), and the views' depth is fused into a TSDF mesh. Each block keeps what lies in its
    core, so overlaps are not doubled. Needs open3d (pip install 'birdnerf\\[export]').
    """
    if frame not in FRAMES:
        console.print(f"[bold red]error:[/] --frame must be one of {', '.join(FRAMES)}, not {frame!r}")
        raise typer.Exit(2)
    config = ExportConfig(
        frame=frame,
        render_scale=scale,
        max_views=views,
        min_agree=min_agree,
        depth_tolerance=tolerance,
        point_spacing=point_spacing or None,
        mesh_voxel=mesh_voxel or None,
        device=device,
    )
    with bar("export", None) as progress:
        summary = run(export_run, run_dir, points=points, mesh=mesh, config=config, progress=progress)
    console.print(
        f"{len(summary.blocks)} blocks, {summary.views} views in {summary.seconds:.1f} s "
        f"(point spacing {summary.point_spacing:.3g}, mesh voxel {summary.mesh_voxel:.3g}, frame {frame})"
    )
    if summary.points:
        console.print(f"points: {summary.points} ({summary.n_points:,} points)")
    if summary.mesh:
        console.print(
            f"mesh:   {summary.mesh} ({summary.n_vertices:,} vertices, {summary.n_triangles:,} triangles)"
        )
    for geo in summary.geo:
        console.print(f"geo:    {geo}")
