"""Partition throughput on large synthetic surveys (a script, not a test).

Prints the time to partition N camera poses, and compares the neighbour-only coverage test
against a brute-force test of every block, on the same poses in the same run.

    python benchmarks/bench_partition.py [--photos 100000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from birdnerf.partition import PartitionConfig, compute_footprints, partition_scene
from birdnerf.partition.layout import coverage, expanded_rects

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.surveys import lawnmower  # noqa: E402


def brute_force_coverage(samples, expanded):
    rects = expanded.reshape(-1, 4)
    out = np.empty((samples.shape[0], len(rects)))
    for b, (x0, y0, x1, y1) in enumerate(rects):
        inside = (samples[..., 0] >= x0) & (samples[..., 0] <= x1)
        inside &= (samples[..., 1] >= y0) & (samples[..., 1] <= y1)
        out[:, b] = inside.mean(axis=1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=100_000)
    args = parser.parse_args()
    side = int(np.sqrt(args.photos))
    scene = lawnmower(nx=side, ny=args.photos // side, jitter=1.0)
    t0 = time.perf_counter()
    part = partition_scene(scene, PartitionConfig(images_per_block=200))
    total = time.perf_counter() - t0
    print(f"partition: {len(scene):,} photos -> {len(part.blocks)} blocks in {total:.2f} s")

    fp = compute_footprints(scene)
    x_edges, y_edges = np.asarray(part.x_edges), np.asarray(part.y_edges)
    expanded = expanded_rects(x_edges, y_edges, 0.25, None)
    subset = fp.samples[: min(len(scene), 5000)]
    t0 = time.perf_counter()
    coverage(subset, x_edges, y_edges, expanded)
    fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    brute_force_coverage(subset, expanded)
    brute = time.perf_counter() - t0
    print(
        f"coverage of {len(subset):,} photos x {len(part.blocks)} blocks: neighbour-only {fast * 1e3:.0f} ms,"
    )
    print(f"  brute force {brute * 1e3:.0f} ms  -> {brute / fast:.1f}x faster")


if __name__ == "__main__":
    main()
