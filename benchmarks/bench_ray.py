"""Blocks on Ray versus the local process pool, on one machine (a script, not a test).

A small synthetic survey is partitioned into a grid of blocks and trained three times with the
same settings, one torch thread per block:

1. in-process, one block after another: the blocks' own training time, with no scheduling;
2. the local process pool with 2 worker processes (``train --jobs 2``);
3. Ray with 2 worker processes (a local Ray instance with 2 CPUs, ``train --ray``), its start-up
   timed apart.

For 2 and 3 it prints the total time and the per-block overhead, ``(2 x wall - sequential) /
blocks``: what each block costs beyond its own training when two run at once (process start,
imports, scheduling, progress, and the two blocks sharing the machine's memory bandwidth, which
both executors pay alike), with the ratio of Ray's to the pool's.

    python benchmarks/bench_ray.py --blocks 2x2 --steps 60
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's birdnerf


def small_config(steps: int):
    from birdnerf.field import FieldConfig, HashGridConfig
    from birdnerf.train import TrainConfig

    field = FieldConfig(
        grid=HashGridConfig(n_levels=12, log2_hashmap_size=16), hidden_dim=64, appearance_dim=8
    )
    return dataclasses.replace(
        TrainConfig(),
        steps=steps,
        rays_per_batch=1024,
        samples_per_batch=1 << 15,
        field=field,
        backend="torch",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", default="2x2", help="Grid ROWSxCOLS (default 2x2).")
    parser.add_argument("--steps", type=int, default=60, help="Steps per block (default 60).")
    parser.add_argument("--out", type=Path, default=None, help="Work folder (default: a temp folder).")
    args = parser.parse_args()

    import ray

    from birdnerf.partition import PartitionConfig, partition_dataset
    from birdnerf.synthetic import SamplePreset, SiteConfig, SurveyConfig, generate_sample_scene
    from birdnerf.train import RayOptions, train_run

    out = args.out or Path(tempfile.mkdtemp(prefix="birdnerf-bench-ray-"))
    data = out / "data"
    if not data.exists():
        preset = SamplePreset(
            "bench", SiteConfig(extent_m=120.0), SurveyConfig(width=120, height=90, focal_px=96.0)
        )
        generate_sample_scene(data, preset, seed=5)
    rows, cols = (int(v) for v in args.blocks.lower().split("x"))
    config = small_config(args.steps)

    def fresh(name: str) -> Path:
        run = out / name
        shutil.rmtree(run, ignore_errors=True)
        partition_dataset(data, run, PartitionConfig(blocks=(rows, cols)))
        return run

    timings = {}
    start = time.perf_counter()
    results = train_run(fresh("sequential"), config, threads=1)
    timings["sequential"] = time.perf_counter() - start
    n = len(results)

    start = time.perf_counter()
    train_run(fresh("pool"), config, jobs=2, threads=1)
    timings["pool"] = time.perf_counter() - start

    start = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    timings["ray start"] = time.perf_counter() - start
    try:
        start = time.perf_counter()
        train_run(fresh("ray"), config, threads=1, ray=RayOptions())
        timings["ray"] = time.perf_counter() - start
    finally:
        ray.shutdown()

    seq = timings["sequential"]
    print(
        f"{n} blocks x {args.steps} steps, 1 thread per block, 2 workers; sequential in-process: {seq:.1f} s"
    )
    print(f"{'executor':<28}{'total s':>10}{'per-block overhead s':>24}")
    overhead = {}
    for name in ("pool", "ray"):
        overhead[name] = (2 * timings[name] - seq) / n
        print(f"{name:<28}{timings[name]:>10.1f}{overhead[name]:>24.2f}")
    print(f"{'ray start (once per command)':<28}{timings['ray start']:>10.1f}")
    print(
        f"ray / pool: total {timings['ray'] / timings['pool']:.2f}x, overhead per block "
        f"{overhead['ray'] - overhead['pool']:+.2f} s"
    )
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
