"""The ortho stage: a true orthophoto and a digital surface model of a trained run, as COGs."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from birdnerf import atomic
from birdnerf.composite.blend import BlendIndex
from birdnerf.composite.cache import BlockCache
from birdnerf.composite.view import HIT_OPACITY
from birdnerf.device import resolve_device
from birdnerf.errors import BirdnerfError
from birdnerf.geo.enu import enu_origin
from birdnerf.ortho import georef as geo
from birdnerf.ortho.budget import check_ortho_fits
from birdnerf.ortho.geotiff import cog_writer, write_window
from birdnerf.ortho.grid import Window, block_mask, block_windows, raster_window, survey_gsd
from birdnerf.ortho.mosaic import NODATA_HEIGHT, TileSource, blend_window
from birdnerf.ortho.tiles import read_tile, render_tile, stored_record, tile_path, tile_record, write_tile
from birdnerf.partition import load_scene, read_partition
from birdnerf.progress import ProgressFn
from birdnerf.runlayout import RunLayout
from birdnerf.runlock import locks_run, writes_inside
from birdnerf.torch_globals import keep_torch_globals

SIDECAR = "ortho.json"


@dataclass
class OrthoConfig:
    """What to render and where."""

    gsd: float | None = None
    """Cell size in metres (scene units); None: the median GSD of the training photos."""
    out_dir: str | Path | None = None
    """Output folder; None: ``RUN/ortho``."""
    min_opacity: float = HIT_OPACITY
    """Blended opacity below which a cell shows no surface (alpha 0, DSM nodata)."""
    window_cells: int = 512
    """Side of the raster windows blended and written at once (cells)."""
    device: str = "auto"
    """Where the block models run (``auto``: CUDA when available)."""


@dataclass
class OrthoResult:
    """What the ortho stage wrote."""

    out_dir: Path
    orthophoto: Path
    dsm: Path
    sidecar: Path
    gsd: float
    width: int
    height: int
    crs: str
    frame: str
    rendered: list[str] = field(default_factory=list)
    """Blocks whose tiles were rendered by this call."""
    reused: list[str] = field(default_factory=list)
    """Blocks whose cached tiles were still valid."""
    seconds: float = 0.0
    rays: int = 0


def _writes_inside(run_dir, config: OrthoConfig | None = None, *_, **__) -> bool:
    return writes_inside(run_dir, out_dir=(config or OrthoConfig()).out_dir)


@locks_run("ortho", when=_writes_inside)
@keep_torch_globals()
def render_ortho(
    run_dir: str | Path, config: OrthoConfig | None = None, progress: ProgressFn | None = None
) -> OrthoResult:
    """Render ``DIR/orthophoto.tif`` (RGBA uint8) and ``DIR/dsm.tif`` (float32 metres) of a run.

    Every block renders the cells where it has a blend weight with vertical rays (an orthographic
    camera looking straight down from above its box); its tile is cached in ``DIR/blocks/<id>.npz``
    and reused while its model and cells are unchanged. The tiles are blended window by window
    with the compositor's weights and written as Cloud-Optimized GeoTIFFs (UTM when the run is
    georeferenced, else the run's frame; see :mod:`birdnerf.ortho.georef`), with ``DIR/ortho.json``
    describing them. ``progress`` gets (done, total) over block tiles, then raster windows.
    """
    config = config or OrthoConfig()
    start = time.perf_counter()
    run_dir = Path(run_dir)
    partition = read_partition(run_dir)
    out = Path(config.out_dir) if config.out_dir else RunLayout(run_dir).ortho
    scene = load_scene(partition)
    ground_z = float(partition.frame["ground_z"])
    gsd = float(config.gsd) if config.gsd is not None else survey_gsd(scene, ground_z)
    raster = raster_window(partition, gsd)
    check_ortho_fits(partition, raster, gsd, config.window_cells, out)
    origin = enu_origin(scene.geo, partition.dataset)
    if origin is None:
        reference = geo.local_georef(raster, gsd)
    else:
        load = np.asarray(partition.frame["load_transform"], dtype=np.float64)
        reference = geo.utm_georef(raster, gsd, origin, load, ground_z)
    index = BlendIndex(partition)
    windows = block_windows(partition, index, raster, gsd)
    cache = BlockCache(run_dir, capacity=2, device=resolve_device(config.device))
    result = OrthoResult(
        out, out / "orthophoto.tif", out / "dsm.tif", out / SIDECAR, gsd, raster.width, raster.height,
        reference.crs, reference.frame,
    )  # fmt: skip
    records = {}
    steps = len(windows) + _count_windows(raster, config.window_cells)
    for k, (b, window) in enumerate(windows.items()):
        block = partition.blocks[b]
        mask = block_mask(index, b, window, gsd).numpy()
        records[b] = tile_record(run_dir, block, window, mask, gsd)
        path = tile_path(out, block.id)
        if stored_record(path) == records[b]:
            result.reused.append(block.id)
        else:
            write_tile(path, render_tile(cache, block, window, mask, gsd), records[b])
            result.rendered.append(block.id)
            result.rays += int(mask.sum())
        if progress:
            progress(k + 1, steps, {"block": block.id})

    def load(b: int):
        path = tile_path(out, partition.blocks[b].id)
        tile = read_tile(path, records[b])
        if tile is None:  # written atomically above: only a change by hand gets here
            raise BirdnerfError("block tile unreadable or changed meanwhile: delete it and run again", path)
        return tile

    tiles = TileSource(load)
    done = len(windows)
    with (
        cog_writer(result.orthophoto, raster.width, raster.height, 4, "uint8", reference) as rgba,
        cog_writer(result.dsm, raster.width, raster.height, 1, "float32", reference, NODATA_HEIGHT) as dsm,
    ):
        for row0, col0, window in _raster_windows(raster, config.window_cells):
            products = blend_window(index, tiles, window, gsd, config.min_opacity)
            write_window(rgba, products.rgba, row0, col0)
            height = np.where(
                products.height == NODATA_HEIGHT, NODATA_HEIGHT, products.height + reference.z_offset
            )
            write_window(dsm, height.astype(np.float32), row0, col0)
            done += 1
            if progress:
                progress(done, steps, {"window": f"{row0},{col0}"})
    result.seconds = time.perf_counter() - start
    atomic.write_json(result.sidecar, _sidecar(result, raster, reference, ground_z, config))
    return result


def _count_windows(raster: Window, side: int) -> int:
    return -(-raster.height // side) * -(-raster.width // side)


def _raster_windows(raster: Window, side: int):
    """(row0, col0, window) of the raster's windows of ``side`` cells, row by row."""
    for row0 in range(0, raster.height, side):
        for col0 in range(0, raster.width, side):
            w, h = min(side, raster.width - col0), min(side, raster.height - row0)
            yield row0, col0, Window(raster.col0 + col0, raster.top - row0, w, h)


def _sidecar(result: OrthoResult, raster: Window, reference, ground_z: float, config: OrthoConfig) -> dict:
    gsd = result.gsd
    return {
        "schema": "birdnerf.ortho",
        "schema_version": 1,
        "frame": result.frame,
        "crs": result.crs,
        "units": "metres",
        "geotransform": list(reference.transform),
        "affine_max_residual_m": reference.max_residual_m,
        "gsd_m": gsd,
        "width": result.width,
        "height": result.height,
        "world_bounds": [
            raster.col0 * gsd,
            (raster.top - raster.height) * gsd,
            (raster.col0 + raster.width) * gsd,
            raster.top * gsd,
        ],  # fmt: skip
        "dsm_height": "WGS84 ellipsoidal height" if result.frame == "UTM" else "run world z",
        "dsm_z_offset_m": reference.z_offset,
        "world_note": "run world frame, metres: x, y ground plane, z up; DSM = world z + dsm_z_offset_m",
        "ground_z": ground_z,
        "dsm_nodata": NODATA_HEIGHT,
        "min_opacity": config.min_opacity,
        "files": {"orthophoto": result.orthophoto.name, "dsm": result.dsm.name},
        "blocks": {"rendered": result.rendered, "reused": result.reused},
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
    }
