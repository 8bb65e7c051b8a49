"""Render time versus site size (a script, not a test).

Builds the ``small`` (2x2 blocks) and ``large`` (8x8 blocks, 22x the area) sample scenes at the
same ground density, trains every block briefly (timing needs real checkpoints, not quality),
then renders the same camera -- nadir, at the survey altitude, over the site centre -- in a
fresh process per scene, and prints time per frame, rays/s and peak memory, with the
large/small ratios. The goal is a ratio near 1: only the blocks a view sees are loaded.

    python benchmarks/bench_render_scaling.py --out /tmp/birdnerf-scaling
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


def prepare(out: Path, scene: str, steps: int) -> Path:
    from birdnerf.partition import partition_dataset
    from birdnerf.synthetic import generate_sample_scene
    from birdnerf.train import TrainConfig, train_run

    data, run = out / scene / "data", out / scene / "run"
    if not (data / "transforms.json").exists():
        t0 = time.perf_counter()
        generate_sample_scene(data, scene)
        print(f"{scene}: generated in {time.perf_counter() - t0:.0f} s", flush=True)
    partition, _ = partition_dataset(data, run)
    config = dataclasses.replace(TrainConfig(), steps=steps, rays_per_batch=256, backend="torch")
    t0 = time.perf_counter()
    train_run(run, config)
    print(f"{scene}: {len(partition.blocks)} blocks ready ({time.perf_counter() - t0:.0f} s)", flush=True)
    return run


def render_once(run: Path, frames: int) -> dict:
    """Render the centre camera ``frames`` times (after one warm-up frame) in this process."""
    import torch

    from birdnerf.composite import BlockCache, render_view
    from birdnerf.composite.path import look_at, site_extent
    from birdnerf.partition import load_scene, read_partition

    torch.set_flush_denormal(True)
    partition = read_partition(run)
    scene = load_scene(partition)
    center, _ = site_extent(partition)
    altitude = float(np.median(scene.centers[:, 2]))
    # Offset by a quarter block so the view straddles block edges in both scenes.
    eye = np.array([center[0] + 7.0, center[1] + 5.0, altitude])
    c2w = look_at(eye, eye - np.array([0.0, 0.0, 1.0]), up=np.array([0.0, 1.0, 0.0]))
    cam = scene.cameras[0]
    cache = BlockCache(run)
    render_view(partition, cache, cam, c2w)
    t0 = time.perf_counter()
    for _ in range(frames):
        view = render_view(partition, cache, cam, c2w)
    seconds = (time.perf_counter() - t0) / frames
    return {
        "blocks_total": len(partition.blocks),
        "blocks_loaded": len(cache.loads),
        "blocks_used": view.blocks,
        "seconds_per_frame": seconds,
        "rays_per_second": cam.width * cam.height / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/birdnerf-scaling"))
    parser.add_argument("--steps", type=int, default=30, help="training steps per block")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--render-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render_only:
        print(json.dumps(render_once(args.render_only, args.frames)))
        return
    results = {}
    for scene in ("small", "large"):
        run = prepare(args.out, scene, args.steps)
        cmd = [sys.executable, __file__, "--render-only", str(run), "--frames", str(args.frames)]
        results[scene] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    print(f"\n{'scene':8} {'blocks':>7} {'loaded':>7} {'s/frame':>9} {'rays/s':>9} {'peak MB':>8}")
    for scene, r in results.items():
        print(
            f"{scene:8} {r['blocks_total']:7d} {r['blocks_loaded']:7d} {r['seconds_per_frame']:9.3f} "
            f"{r['rays_per_second']:9,.0f} {r['peak_rss_mb']:8.0f}"
        )
    small, large = results["small"], results["large"]
    print(
        f"large/small: time per frame {large['seconds_per_frame'] / small['seconds_per_frame']:.2f}x, "
        f"peak memory {large['peak_rss_mb'] / small['peak_rss_mb']:.2f}x "
        f"(site area {large['blocks_total'] / small['blocks_total']:.0f}x blocks)"
    )


if __name__ == "__main__":
    main()
