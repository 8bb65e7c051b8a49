"""What a per-block update saves (a script, not a test).

Partitions the ``medium`` sample scene (about 3 x 3 blocks) and trains it; then a "changed"
variant adds new buildings in one corner, with photos of that corner. In the same run it times

1. ``update``: the new photos retrain only the blocks they touch (fine-tuning where the block's
   box still fits, from scratch where the new buildings outgrow it);
2. a full retrain: every block of the updated manifest trained from scratch, in a copy,

and prints both times with their ratio, and the held-out PSNR of the changed corner (its new
test photos) before the update, after it, and after the full retrain.

    python benchmarks/bench_update.py --out /tmp/birdnerf-update      # about 20 min on 2 cores
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from birdnerf.eval import score_dataset
from birdnerf.partition import partition_dataset, read_partition, write_partition
from birdnerf.synthetic import generate_sample_scene
from birdnerf.train import TrainConfig, train_run
from birdnerf.update import UpdateOptions, update_run


def changed_area_psnr(run: Path, changed: Path) -> float:
    """Mean PSNR of the changed corner's held-out photos, rendered from the run's current blocks."""
    return float(np.mean(score_dataset(run, changed)))


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/birdnerf-update"))
    parser.add_argument("--scene", default="medium")
    parser.add_argument("--steps", type=int, default=150, help="training steps per block")
    parser.add_argument("--rays", type=int, default=1024, help="rays per step")
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()
    torch.set_flush_denormal(True)

    base, changed = args.out / "base", args.out / "changed"
    for path, variant in ((base, "base"), (changed, "changed")):
        if not (path / "transforms.json").exists():
            seconds = timed(generate_sample_scene, path, args.scene, variant=variant)
            print(f"{variant}: generated in {seconds:.0f} s", flush=True)
    run = args.out / "run"
    shutil.rmtree(run, ignore_errors=True)
    partition, _ = partition_dataset(base, run)
    config = dataclasses.replace(
        TrainConfig(), steps=args.steps, rays_per_batch=args.rays, backend=args.backend
    )
    t_train = timed(train_run, run, config)
    print(f"trained {len(partition.blocks)} blocks in {t_train:.0f} s", flush=True)
    before = changed_area_psnr(run, changed)

    # Fine-tuning runs half the steps (the default); the full retrain below runs them all.
    t_update = timed(update_run, run, changed, UpdateOptions())
    updated = read_partition(run)
    after = changed_area_psnr(run, changed)
    retrained = updated.change["blocks_retrained"]

    full = args.out / "full"
    shutil.rmtree(full, ignore_errors=True)
    full.mkdir()
    scratch = dataclasses.replace(updated, version=1)
    for block in scratch.blocks:
        block.revision = 1
    write_partition(full, scratch)
    t_full = timed(train_run, full, config)
    full_psnr = changed_area_psnr(full, changed)

    print(f"\nmedium scene: {len(updated.blocks)} blocks, {updated.change['photos_added']} new photos")
    print("update retrained: " + ", ".join(f"{b} ({m})" for b, m in retrained.items()))
    print(f"\n{'':24} {'seconds':>8} {'changed-area PSNR':>18}")
    print(f"{'before the update':24} {'':>8} {before:18.2f}")
    print(f"{'update':24} {t_update:8.0f} {after:18.2f}")
    print(f"{'full retrain':24} {t_full:8.0f} {full_psnr:18.2f}")
    print(f"update / full retrain: {t_update / t_full:.2f}x the time")


if __name__ == "__main__":
    main()
