"""Peak memory of training steps against :func:`birdnerf.train.budget.step_memory`'s estimate.

Run ``PYTHONPATH=. python benchmarks/bench_train_memory.py`` from the repository root (a few
minutes on 2 cores; ``--quick`` checks the script with two small settings). The sample survey
(``sample_data/survey``) is partitioned as one block into a temporary run; for each setting of
rays per step and sample budget, a fresh process loads the scene, notes its resident set, trains
the block for ``--steps`` steps (the first one draws every ray: later ones draw fewer) and reports
its peak RSS (``ru_maxrss``) above that. Printed: measured growth, the estimate, and their ratio
(the estimate should stay above 1x, and not far above). The occupancy grid is left open
(``--no-surface-prior`` equivalent) so that every ray samples its whole box, the worst case.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import dataclasses, json, resource, sys
import torch
from birdnerf.partition import load_scene, read_partition
from birdnerf.train import TrainConfig, train_block
from birdnerf.train.budget import step_memory
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
partition = read_partition(args["run"])
scene = load_scene(partition)
block = max(partition.blocks, key=lambda b: len(b.images))
config = dataclasses.replace(
    TrainConfig(), rays_per_batch=args["rays"], samples_per_batch=args["samples"], backend=args["backend"],
    surface_prior=False, steps=args["steps"], checkpoint_every=10**6, pixel_budget_mb=args["budget_mb"],
)
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
before = rss()
train_block(args["out"], scene, block, config, stop_after=args["steps"])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"growth": peak - before, "estimate": step_memory(config, len(block.images))}))
"""

SETTINGS = [(4096, 1 << 12), (4096, 1 << 14), (4096, 1 << 16), (4096, 1 << 18), (4096, 1 << 20),
            (1 << 20, 1 << 14), (1 << 22, 1 << 14), (1 << 20, 1 << 18)]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("sample_data/survey"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="torch", help="torch (reference, the most memory) or fused")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    from birdnerf.partition import PartitionConfig, partition_dataset

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        partition_dataset(args.data, run, PartitionConfig(blocks=(1, 1)))
        print(f"{'rays':>8} {'samples':>8} {'measured MB':>12} {'estimate MB':>12} {'ratio':>6}")
        for k, (rays, samples) in enumerate(SETTINGS[:2] if args.quick else SETTINGS):
            child = dict(run=str(run), out=str(Path(tmp) / f"out{k}"), rays=rays, samples=samples)
            child.update(steps=args.steps, threads=args.threads, backend=args.backend, budget_mb=16)
            done = subprocess.run(
                [sys.executable, "-c", CHILD, json.dumps(child)], capture_output=True, text=True
            )
            if done.returncode:
                sys.exit(done.stderr)
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            got, est = figures["growth"] / 2**20, figures["estimate"] / 2**20
            print(f"{rays:>8} {samples:>8} {got:>12.0f} {est:>12.0f} {est / got:>5.2f}x", flush=True)


if __name__ == "__main__":
    main()
