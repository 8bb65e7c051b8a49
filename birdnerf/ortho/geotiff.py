"""Cloud-Optimized GeoTIFFs: windows written into a tiled scratch GeoTIFF, then copied by GDAL's
COG driver (deflate, 256-cell tiles, overviews) to a temporary name and renamed into place."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from birdnerf import atomic
from birdnerf.errors import BirdnerfError
from birdnerf.ortho.georef import RasterGeoref

COG_BLOCK = 256
"""Tile size of the written COGs (cells)."""


def _rasterio():
    try:
        import rasterio
        import rasterio.shutil
    except ImportError:
        raise BirdnerfError("writing GeoTIFFs needs rasterio: pip install 'birdnerf[ortho]'") from None
    return rasterio


def overview_count(width: int, height: int) -> int:
    """Overview levels (each half the previous) until the raster fits one tile; at least one."""
    return max(1, math.ceil(math.log2(max(width, height, 2) / COG_BLOCK)))


@contextlib.contextmanager
def cog_writer(
    path: Path, width: int, height: int, bands: int, dtype: str, georef: RasterGeoref, nodata=None
) -> Iterator:
    """Yield an open rasterio dataset to ``write(array, window=...)`` into; on success the raster
    becomes the COG ``path`` (atomic), with alpha as band 4 of a 4-band uint8 raster."""
    rasterio = _rasterio()
    from rasterio.crs import CRS
    from rasterio.enums import ColorInterp
    from rasterio.transform import Affine

    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=bands,
        dtype=dtype,
        crs=CRS.from_user_input(georef.crs),
        transform=Affine(*georef.transform),
        tiled=True,
        blockxsize=COG_BLOCK,
        blockysize=COG_BLOCK,
        compress="deflate",
        nodata=nodata,
        BIGTIFF="IF_SAFER",
    )
    rgba = bands == 4 and dtype == "uint8"
    if rgba:
        profile["photometric"] = "RGB"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.scratch.tif", dir=path.parent)
    os.close(fd)
    scratch = Path(name)
    try:
        with rasterio.open(scratch, "w", **profile) as dataset:
            if rgba:
                dataset.colorinterp = [
                    ColorInterp.red,
                    ColorInterp.green,
                    ColorInterp.blue,
                    ColorInterp.alpha,
                ]
            yield dataset
        with atomic.atomic_path(path) as tmp:
            rasterio.shutil.copy(
                scratch,
                tmp,
                driver="COG",
                compress="DEFLATE",
                predictor="YES",
                blocksize=COG_BLOCK,
                overview_count=overview_count(width, height),
                overview_resampling="average" if rgba else "nearest",
                bigtiff="IF_SAFER",
            )
    finally:
        scratch.unlink(missing_ok=True)


def write_window(dataset, array: np.ndarray, row0: int, col0: int) -> None:
    """Write (H, W) or (H, W, bands) ``array`` at cell (row0, col0) of ``dataset``."""
    from rasterio.windows import Window

    data = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    dataset.write(data, window=Window(col0, row0, array.shape[1], array.shape[0]))
