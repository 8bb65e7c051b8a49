"""Accuracy and cost of ``birdnerf ortho`` on a trained sample run, against the generator's truth.

    python benchmarks/bench_ortho.py --run RUN [--gsd M] [--out DIR]
    python benchmarks/bench_ortho.py --run RUN --points        # a real survey: vs its sparse points

On a generated sample run (its dataset has ``sample.json``) the orthophoto and DSM are scored
against vertical rays cast through the generator's site (:mod:`birdnerf.ortho.truth`), inside the
site and where the DSM has a value:

- DSM RMSE and median absolute error (metres), over all cells and over building roofs, beside the
  same errors of a flat plane at the run's ground height (the baseline, computed here);
- orthophoto PSNR against the true colours, beside the PSNR of their mean colour;
- building-edge displacement (cells): per building seen whole, the mean distance between the
  outline of its true roof and the outline of the cells the DSM puts more than half its height
  above the ground (both ways, averaged), then the median over buildings.

With ``--points`` (a real survey) the DSM is compared with the dataset's sparse points: the
median of (DSM - point height) at the points it covers. Cost: the first call (every tile
rendered) and a second one (every tile reused), with file sizes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from birdnerf.composite import OrthoRays
from birdnerf.ortho import OrthoConfig, render_ortho
from birdnerf.partition import load_scene, read_partition


def read(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read()


def errors(pred: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    diff = pred - true
    return float(np.sqrt(np.mean(diff**2))), float(np.median(np.abs(diff)))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(max(np.mean((a - b) ** 2), 1e-20)))


def edge_displacement(roof: np.ndarray, dsm: np.ndarray, ground: np.ndarray, rise: float) -> float:
    rows, cols = np.nonzero(roof)
    win = (slice(rows.min() - 5, rows.max() + 6), slice(cols.min() - 5, cols.max() + 6))
    labels, _ = ndimage.label(ndimage.binary_opening((dsm - ground)[win] > 0.5 * rise))
    counts = np.bincount(labels[roof[win]], minlength=2)
    counts[0] = 0
    if counts.max() == 0:
        return float("inf")  # nothing raised over the roof
    found = labels == counts.argmax()
    edge_true = roof[win] & ~ndimage.binary_erosion(roof[win])
    edge_found = found & ~ndimage.binary_erosion(found)
    to_true = ndimage.distance_transform_edt(~edge_true)[edge_found]
    to_found = ndimage.distance_transform_edt(~edge_found)[edge_true]
    return 0.5 * float(to_true.mean() + to_found.mean())


def score_sample(run: Path, result, z_top: float) -> dict:
    from birdnerf.ortho.truth import true_ortho
    from birdnerf.synthetic.site import BUILDING
    from birdnerf.synthetic.truth import load_site

    partition = read_partition(run)
    site = load_site(partition.dataset)
    meta = json.loads(result.sidecar.read_text())
    x0, _, _, y1 = meta["world_bounds"]
    rays = OrthoRays(x0, y1, result.gsd, result.width, result.height, z_top)
    to_site = np.linalg.inv(np.asarray(partition.frame["load_transform"]))
    true = true_ortho(site, rays, to_site)
    rgba, dsm = read(result.orthophoto), read(result.dsm)[0] - meta["dsm_z_offset_m"]
    xy = rays.cell_centers(0, rays.height).numpy() + to_site[:2, 3]
    xmin, ymin, xmax, ymax = site.bounds
    in_site = (xy[:, 0] > xmin) & (xy[:, 0] < xmax) & (xy[:, 1] > ymin) & (xy[:, 1] < ymax)
    in_site = in_site.reshape(dsm.shape)
    valid = in_site & (rgba[3] == 255)
    buildings = np.flatnonzero(site.objects.kind == BUILDING)
    roofs = valid & np.isin(true.hit, buildings)
    flat = np.full_like(dsm, float(partition.frame["ground_z"]))
    out = {"cells_in_site": int(in_site.sum()), "coverage": float(valid.sum() / in_site.sum())}
    for name, mask in (("all", valid), ("roofs", roofs)):
        out[f"dsm_rmse_{name}"], out[f"dsm_median_abs_{name}"] = errors(dsm[mask], true.height[mask])
        out[f"flat_rmse_{name}"], out[f"flat_median_abs_{name}"] = errors(flat[mask], true.height[mask])
    colour = np.moveaxis(rgba[:3], 0, -1)[valid] / 255.0
    out["ortho_psnr"] = psnr(colour, true.rgb[valid])
    mean_colour = np.broadcast_to(true.rgb[valid].mean(axis=0), colour.shape)
    out["mean_colour_psnr"] = psnr(mean_colour, true.rgb[valid])
    edges = []
    h, w = dsm.shape
    for k in np.unique(true.hit[np.isin(true.hit, buildings)]):
        roof = true.hit == k
        rows, cols = np.nonzero(roof)
        whole = rows.min() > 6 and cols.min() > 6 and rows.max() < h - 7 and cols.max() < w - 7
        if roof.sum() >= 20 and whole and valid[roof].all():
            rise = float(np.median(true.height[roof] - true.ground[roof]))
            edges.append(edge_displacement(roof, dsm, true.ground, rise))
    out["buildings_scored"] = len(edges)
    out["edge_px_median"] = float(np.median(edges)) if edges else float("nan")
    out["edge_px_mean"] = float(np.mean(edges)) if edges else float("nan")
    return out


def score_points(run: Path, result) -> dict:
    """Median (DSM - point height) at the sparse points of the run's dataset that the DSM covers."""
    import rasterio

    scene = load_scene(read_partition(run))
    if scene.points is None:
        raise SystemExit("the run's dataset has no sparse points")
    meta = json.loads(result.sidecar.read_text())
    x0, _, _, y1 = meta["world_bounds"]
    col = np.floor((scene.points[:, 0] - x0) / result.gsd).astype(int)
    row = np.floor((y1 - scene.points[:, 1]) / result.gsd).astype(int)
    inside = (col >= 0) & (col < result.width) & (row >= 0) & (row < result.height)
    with rasterio.open(result.dsm) as ds:
        dsm = ds.read(1)
    height = np.full(len(col), np.nan)
    height[inside] = dsm[row[inside], col[inside]]
    ok = inside & (height != -9999.0)
    diff = height[ok] - meta["dsm_z_offset_m"] - scene.points[ok, 2]
    flat = meta["ground_z"] - scene.points[ok, 2]  # the flat plane at the run's ground height
    return {
        "points": int(len(col)),
        "points_covered": int(ok.sum()),
        "median_dsm_minus_points_m": float(np.median(diff)),
        "median_abs_dsm_minus_points_m": float(np.median(np.abs(diff))),
        "median_abs_flat_minus_points_m": float(np.median(np.abs(flat))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, required=True, help="a trained run")
    parser.add_argument("--gsd", type=float, default=None, help="cell size, metres (default: the photos')")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: a temporary one)")
    parser.add_argument("--points", action="store_true", help="score against the dataset's sparse points")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_ortho_"))
    shutil.rmtree(out / "blocks", ignore_errors=True)  # the first call renders every tile
    config = OrthoConfig(gsd=args.gsd, out_dir=out)
    start, cpu = time.perf_counter(), time.process_time()
    first = render_ortho(args.run, config)
    first_s, first_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    again = render_ortho(args.run, config)
    assert not again.rendered, again.rendered
    again_s, again_cpu = time.perf_counter() - start, time.process_time() - cpu
    tiles = sum(p.stat().st_size for p in (out / "blocks").glob("*.npz"))
    figures = {
        "raster": f"{first.width} x {first.height} cells at {first.gsd:.3f} m ({first.frame})",
        "crs": first.crs if first.frame == "UTM" else "LOCAL_CS (run world frame)",
        "first_call_s": round(first_s, 1),
        "first_call_cpu_s": round(first_cpu, 1),
        "rays": first.rays,
        "rays_per_s": round(first.rays / first_s),
        "second_call_s (tiles reused)": round(again_s, 1),
        "second_call_cpu_s": round(again_cpu, 1),
        "reuse_speedup (cpu)": round(first_cpu / max(again_cpu, 1e-9), 1),
        "orthophoto_bytes": first.orthophoto.stat().st_size,
        "dsm_bytes": first.dsm.stat().st_size,
        "tile_cache_bytes": tiles,
    }
    partition = read_partition(args.run)
    if args.points:
        figures.update(score_points(args.run, first))
    elif (Path(partition.dataset) / "sample.json").exists():
        z_top = max(b.box[5] for b in partition.blocks) + 1.0
        scores = score_sample(args.run, first, z_top)
        figures.update(scores)
        for name in ("all", "roofs"):
            ratio = scores[f"dsm_rmse_{name}"] / max(scores[f"flat_rmse_{name}"], 1e-9)
            figures[f"dsm_rmse_{name} / flat plane"] = round(ratio, 3)
    for key, value in figures.items():
        print(f"{key:32s} {value:.4g}" if isinstance(value, float) else f"{key:32s} {value}")


if __name__ == "__main__":
    main()
