"""Render time and memory versus site size: partitions of 4, 64 and 441 blocks (a script, not a test).

The sites are grids of 2x2, 8x8 and 21x21 blocks at the same density, built from a trained 2x2
run (the demo's, by default): block (r, c) of a grid is a copy of trained block (r mod 2, c mod 2)
moved to its place (its box, occupancy grid and core translated; the field lives in its box's unit
cube, so it moves with it). Each block is saved the way training saves it (``config.json``,
``model.pt``, ``done.json``) and the manifest with ``write_partition``; rendering loads them the
normal way, through :class:`birdnerf.composite.BlockCache`.

Every site renders the same view -- the survey's camera at its altitude, nadir, a quarter block
off a four-block corner near the site's centre, over the same four source blocks -- in a fresh
process, and prints wall and CPU time per frame (CPU time is steadier on a shared machine),
rays/s, peak RSS and the blocks loaded for the view, with the largest/smallest ratios (goal:
about 1, since only the blocks under the view are touched). A 1920x1080 frame of the largest
site is rendered last, in its own process, for its peak RSS.

    python benchmarks/bench_render_scaling.py --run /tmp/demo/run --out /tmp/birdnerf-scaling
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZES = (2, 8, 21)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's birdnerf


def build_site(source_run: Path, out: Path, n: int) -> Path:
    """An n x n site of re-anchored copies of the 2x2 source run's trained blocks."""
    import torch

    from birdnerf import atomic
    from birdnerf.block import checkpoint as ckpt
    from birdnerf.block.model import BlockModel
    from birdnerf.composite import load_block_model
    from birdnerf.partition.layout import block_id
    from birdnerf.partition.manifest import read_partition, write_partition

    run = out / f"site{n * n}"
    if (run / "partition.json").exists():
        return run
    src = read_partition(source_run)
    if len(src.x_edges) != 3 or len(src.y_edges) != 3:
        raise SystemExit(f"{source_run}: a 2x2 run is needed, got {len(src.blocks)} blocks")
    by_cell = {(b.row, b.col): b for b in src.blocks}
    widths, heights = np.diff(src.x_edges), np.diff(src.y_edges)
    # Centre the grid on the source's centre so the frame (ground height) stays meaningful.
    xw = np.array([widths[c % 2] for c in range(n)])
    yh = np.array([heights[r % 2] for r in range(n)])
    x_edges = np.r_[0.0, np.cumsum(xw)] - xw.sum() / 2 + 0.5 * (src.x_edges[0] + src.x_edges[-1])
    y_edges = np.r_[0.0, np.cumsum(yh)] - yh.sum() / 2 + 0.5 * (src.y_edges[0] + src.y_edges[-1])
    models = {cell: load_block_model(source_run, b.id, revision=b.revision) for cell, b in by_cell.items()}
    blocks = []
    for r in range(n):
        for c in range(n):
            b = by_cell[(r % 2, c % 2)]
            dx, dy = x_edges[c] - b.core[0], y_edges[r] - b.core[1]
            shift2 = [dx, dy, dx, dy]
            shift3 = [dx, dy, 0.0, dx, dy, 0.0]
            new = dataclasses.replace(
                b,
                id=block_id(r, c),
                row=r,
                col=c,
                core=[v + s for v, s in zip(b.core, shift2, strict=True)],
                expanded=[v + s for v, s in zip(b.expanded, shift2, strict=True)],
                box=[v + s for v, s in zip(b.box, shift3, strict=True)],
                revision=1,
            )
            blocks.append(new)
            source = models[(r % 2, c % 2)]
            config = source.config_dict()
            config["box"] = [v + s for v, s in zip(config["box"], shift3, strict=True)]
            moved = BlockModel.from_config_dict(config)
            state = source.state_dict()
            offset = torch.tensor(shift3, dtype=torch.float32)
            state["box"] = state["box"] + offset
            state["grid.aabb"] = state["grid.aabb"] + offset
            moved.load_state_dict(state)
            folder = ckpt.block_dir(run, new.id)
            folder.mkdir(parents=True, exist_ok=True)
            atomic.write_json(folder / "config.json", {"block": new.id, "model": moved.config_dict()})
            ckpt.save_tensors(folder / "model.pt", {"model": moved.state_dict()})
            atomic.write_json(folder / "done.json", {"block": new.id, "copied_from": b.id})
    site = dataclasses.replace(src, x_edges=x_edges.tolist(), y_edges=y_edges.tolist(), blocks=blocks)
    write_partition(run, site)
    return run


def render_once(run: Path, camera: dict, frames: int, width: int | None, fast: bool) -> dict:
    """Render the benchmark view ``frames`` times (after one warm-up frame) in this process."""
    import torch

    from birdnerf.composite import BlockCache, render_view
    from birdnerf.composite.path import look_at
    from birdnerf.partition import read_partition
    from birdnerf.scene.camera import Camera

    torch.set_flush_denormal(True)
    partition = read_partition(run)
    cam = Camera(**camera["camera"])
    if width:  # a 16:9 frame with the survey camera's horizontal field of view
        f = cam.fx * width / cam.width
        height = width * 9 // 16
        cam = Camera(width=width, height=height, fx=f, fy=f, cx=width / 2, cy=height / 2)

    # A quarter block off a four-block corner near the centre: the view straddles edges. The
    # corner has an odd index, so the four blocks around it are copies of the same four source
    # blocks, in the same places, on every site: the view sees the same content.
    def odd_middle(edges: list[float]) -> float:
        k = (len(edges) - 1) // 2
        return edges[k if k % 2 else k - 1]

    x, y = odd_middle(partition.x_edges), odd_middle(partition.y_edges)
    eye = np.array([x + 0.25 * camera["block_m"], y + 0.2 * camera["block_m"], camera["altitude"]])
    c2w = look_at(eye, eye - np.array([0.0, 0.0, 1.0]), up=np.array([0.0, 1.0, 0.0]))
    cache = BlockCache(run)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    view = render_view(partition, cache, cam, c2w, fast=fast)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(frames):
        view = render_view(partition, cache, cam, c2w, fast=fast)
    seconds = (time.perf_counter() - t0) / max(frames, 1)
    cpu_seconds = (time.process_time() - c0) / max(frames, 1)
    return {
        "blocks_total": len(partition.blocks),
        "blocks_loaded": len(set(cache.loads)),
        "blocks_used": view.blocks,
        "size": f"{cam.width}x{cam.height}",
        "seconds_per_frame": seconds,
        "cpu_seconds_per_frame": cpu_seconds,
        "rays_per_second": cam.width * cam.height / seconds,
        "rss_before_render_mb": rss_before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def camera_record(source_run: Path) -> dict:
    from birdnerf.partition import load_scene, read_partition

    partition = read_partition(source_run)
    scene = load_scene(partition)
    cam = scene.cameras[0]
    return {
        "camera": {k: getattr(cam, k) for k in ("width", "height", "fx", "fy", "cx", "cy")},
        "altitude": float(np.median(scene.centers[:, 2])),
        "block_m": float(np.diff(partition.x_edges).mean()),
    }


def in_fresh_process(run: Path, camera: dict, frames: int, width: int | None = None) -> dict:
    cmd = [sys.executable, __file__, "--render-only", str(run), "--frames", str(frames)]
    cmd += ["--camera-json", json.dumps(camera)] + (["--width", str(width)] if width else [])
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, required=False, help="a trained 2x2 run (e.g. the demo's)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/birdnerf-scaling"))
    parser.add_argument("--frames", type=int, default=3, help="timed frames per site (after a warm-up)")
    parser.add_argument("--no-1080p", action="store_true", help="skip the 1920x1080 frame")
    parser.add_argument("--render-only", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--camera-json", help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--reference", action="store_true", help="time the reference path instead")
    args = parser.parse_args()
    if args.render_only:
        camera = json.loads(args.camera_json)
        print(json.dumps(render_once(args.render_only, camera, args.frames, args.width, not args.reference)))
        return
    if args.run is None:
        parser.error("--run (a trained 2x2 run, e.g. `birdnerf demo`'s OUT/run) is required")
    camera = camera_record(args.run)
    results = {}
    for n in SIZES:
        t0 = time.perf_counter()
        run = build_site(args.run, args.out, n)
        print(f"site of {n * n} blocks ready in {time.perf_counter() - t0:.0f} s: {run}", flush=True)
        results[n * n] = in_fresh_process(run, camera, args.frames)
    print(
        f"\n{'blocks':>7} {'loaded':>7} {'s/frame':>9} {'rays/s':>9} {'peak MB':>8}  blocks used by the view"
    )
    for blocks, r in results.items():
        print(
            f"{blocks:7d} {r['blocks_loaded']:7d} {r['seconds_per_frame']:9.3f} "
            f"{r['cpu_seconds_per_frame']:7.3f} {r['rays_per_second']:9,.0f} "
            f"{r['peak_rss_mb']:8.0f}  {' '.join(r['blocks_used'])}"
        )
    small, large = results[SIZES[0] ** 2], results[SIZES[-1] ** 2]
    print(
        f"{SIZES[-1] ** 2} / {SIZES[0] ** 2} blocks: time per frame "
        f"{large['seconds_per_frame'] / small['seconds_per_frame']:.2f}x "
        f"({large['cpu_seconds_per_frame'] / small['cpu_seconds_per_frame']:.2f}x by CPU time), "
        f"peak RSS {large['peak_rss_mb'] / small['peak_rss_mb']:.2f}x (goal: <= 1.2x both)"
    )
    if not args.no_1080p:
        hd = in_fresh_process(args.out / f"site{SIZES[-1] ** 2}", camera, 1, width=1920)
        print(
            f"{hd['size']} frame over {hd['blocks_total']} blocks: {hd['seconds_per_frame']:.1f} s, "
            f"{hd['rays_per_second']:,.0f} rays/s, peak RSS {hd['peak_rss_mb']:.0f} MB "
            f"(goal: < 2048 MB), {hd['blocks_loaded']} blocks loaded"
        )


if __name__ == "__main__":
    main()
