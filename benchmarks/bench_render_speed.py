"""Composited rendering speed: the fast inference path against the reference paths, in one run.

Renders the held-out photos of a trained run (views at survey altitude) and the demo's fly-over
frames, each view with every path back to back (after one warm-up view each):

- ``fast``: the default path (``render_view(..., fast=True)``) on the run's own field backend;
- ``reference``: the reference compositing and marching (``fast=False``) on the same field
  backend, so the ratio isolates what the compositor's fast path does;
- ``ref-fp32``: the reference compositing and marching on the ``compiled`` field backend with
  float32 MLPs (``torch.compile``, no C++ kernel, no bfloat16): the CPU's default field before
  the fused backend existed;
- ``twins``: the reference compositing and marching on the reference field (the eager ``torch``
  hash grid, float32 MLPs): every stage on its reference twin.

It prints rays/s and CPU seconds per frame of each (CPU time is steadier than wall time on a
shared machine), the fast path's ratio to each reference, and the PSNR between the fast and
each reference image (the parity test asks >= 40 dB). Field samples per pixel are counted too:
they, not the machine's load, say where the time goes.

    python benchmarks/bench_render_speed.py --run /tmp/demo/run        # a trained run
    python benchmarks/bench_render_speed.py --out /tmp/demo            # runs `birdnerf demo` first
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, help="a trained run directory")
    parser.add_argument("--out", type=Path, default=Path("/tmp/birdnerf-demo"), help="demo folder (no --run)")
    parser.add_argument("--views", type=int, default=6, help="held-out photos to render")
    parser.add_argument("--path-frames", type=int, default=6, help="fly-over frames to render")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's birdnerf

    import torch

    from birdnerf.block.model import BlockModel
    from birdnerf.composite import BlendIndex, BlockCache, flyover_path, render_view
    from birdnerf.partition import load_scene, read_partition

    torch.set_flush_denormal(True)
    run = args.run
    if run is None:
        from birdnerf.demo import run_demo

        run = run_demo(args.out).run_dir
    partition = read_partition(run)
    scene = load_scene(partition)
    index = BlendIndex(partition)
    paths = {  # name: (fast, cache)
        "reference": (False, BlockCache(run)),
        "fast": (True, BlockCache(run)),
        "ref-fp32": (False, BlockCache(run, backend="compiled", precision="fp32")),
        "twins": (False, BlockCache(run, backend="torch", precision="fp32")),
    }
    altitude = float(scene.centers[:, 2].mean() - partition.frame["ground_z"])
    path = flyover_path(partition, scene.cameras[0], altitude, frames=args.path_frames)
    views = {
        "held-out photos": [(scene.cameras[i], scene.c2w[i]) for i in scene.indices("test")[: args.views]],
        "fly-over": [(path.camera, c2w) for c2w in path.c2w],
    }
    samples = [0]
    query = BlockModel.query

    def counting_query(self, points, *rest, **kw):
        samples[0] += points.shape[0]
        return query(self, points, *rest, **kw)

    BlockModel.query = counting_query
    cam, c2w = views["held-out photos"][0]
    for fast, cache in paths.values():  # warm-up: compile the field, load the blocks
        render_view(partition, cache, cam, c2w, fast=fast, index=index)

    print(f"{'views':16} {'path':9} {'rays/s':>9} {'s/frame':>8} {'CPU s/frame':>11} {'samples/px':>10}")
    for name, jobs in views.items():
        seconds = dict.fromkeys(paths, 0.0)
        cpu = dict.fromkeys(paths, 0.0)
        counts = dict.fromkeys(paths, 0)
        psnr: dict[str, list[float]] = {"reference": [], "ref-fp32": [], "twins": []}
        rays = sum(cam.width * cam.height for cam, _ in jobs)
        for cam, c2w in jobs:
            images = {}
            for path_name, (fast, cache) in paths.items():
                samples[0] = 0
                t0, c0 = time.perf_counter(), time.process_time()
                images[path_name] = render_view(partition, cache, cam, c2w, fast=fast, index=index).rgb
                seconds[path_name] += time.perf_counter() - t0
                cpu[path_name] += time.process_time() - c0
                counts[path_name] += samples[0]
            for ref in psnr:
                mse = float(((images["fast"] - images[ref]) ** 2).mean())
                psnr[ref].append(-10 * np.log10(max(mse, 1e-20)))
        for path_name in paths:
            print(
                f"{name:16} {path_name:9} {rays / seconds[path_name]:9,.0f} "
                f"{seconds[path_name] / len(jobs):8.3f} {cpu[path_name] / len(jobs):11.3f} "
                f"{counts[path_name] / rays:10.1f}"
            )
        for ref in psnr:
            print(
                f"{name:16} fast/{ref:9} {seconds[ref] / seconds['fast']:.2f}x rays/s "
                f"({cpu[ref] / cpu['fast']:.2f}x by CPU time); "
                f"parity PSNR min {min(psnr[ref]):.1f} dB over {len(jobs)} views"
            )


if __name__ == "__main__":
    main()
