"""Block training: time to reach a held-out PSNR, and 2x2 blocks versus one monolithic model.

Run ``python benchmarks/bench_train.py`` (about 12 minutes on 2 idle cores with the defaults, 8 of
them training; ``--budget 20 --steps-probe 20 --eval-every 10`` checks the script in a few
minutes). The ``small`` sample scene is generated into ``--out`` when absent and partitioned there.
On a machine shared with other work, ``--threads 1`` avoids the slowdown of oversubscribed threads.

1. **Time to PSNR.** The block of the 2x2 partition with the most test photos is trained for
   ``--steps-probe`` steps in segments of ``--eval-every`` steps (each segment resumes the last
   checkpoint, which continues the same trajectory as an uninterrupted run). After each segment
   the block model alone renders the block's held-out pixels: the pixels of its test photos whose
   ray meets the ground inside the block's core, i.e. the pixels the block owns when views are
   composited (``--eval-pixels`` of them, a fixed random subset; 0 for all). Seconds are training
   time only: loading rays, checkpoints between segments and evaluation are not counted.
2. **Blocks versus monolithic at equal total parameters and wall time.** (a) 2x2 blocks, 2^T
   hash-table rows per level, each trained for W/4 seconds; (b) the whole scene as one 1x1
   block with 2^(T+2) rows per level (4x the hashed rows; the coarse levels that are stored
   densely do not grow, so the totals are printed) trained for W seconds. Training stops by
   wall time (``TrainConfig.max_seconds``; the learning rate decays over the second half of each
   block's time), and both runs are scored by ``evaluate_run`` on every test photo. Everything
   but the table size is the same configuration.

The hash-grid graphs are compiled once for both table sizes before anything is timed.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from birdnerf.block import checkpoint as ckpt
from birdnerf.block.model import BlockModel
from birdnerf.eval import evaluate_run
from birdnerf.eval.metrics import psnr
from birdnerf.field import BlockField, FieldConfig, HashGridConfig
from birdnerf.partition import Block, Partition, PartitionConfig, partition_dataset
from birdnerf.scene.scene import Scene
from birdnerf.synthetic import generate_sample_scene
from birdnerf.train import TrainConfig, train_block, train_run
from birdnerf.train.data import BlockRays, block_rays
from birdnerf.train.runner import plan_blocks

UNLIMITED_STEPS = 10**9
"""``steps`` of the time-limited runs: the wall-time budget alone ends them."""


def ensure_scene(out: Path, scene: str, seed: int) -> Path:
    """The sample dataset in ``out/data``, generated if absent."""
    data = out / "data"
    if not (data / "transforms.json").exists():
        start = time.perf_counter()
        generate_sample_scene(data, scene, seed=seed, overwrite=data.exists())
        print(f"generated the {scene} sample scene in {time.perf_counter() - start:.0f} s", flush=True)
    return data


def fresh_run(data: Path, run_dir: Path, blocks: tuple[int, int]) -> tuple[Partition, Scene]:
    """Partition ``data`` into ``run_dir``, dropping whatever an earlier benchmark left there."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return partition_dataset(data, run_dir, PartitionConfig(blocks=blocks))


def train_config(args: argparse.Namespace, log2_size: int) -> TrainConfig:
    """The demo's training settings with a table of 2^``log2_size`` rows per level."""
    field = FieldConfig(grid=HashGridConfig(log2_hashmap_size=log2_size))
    return dataclasses.replace(
        TrainConfig(),
        rays_per_batch=args.rays,
        samples_per_batch=32 * args.rays,
        seed=args.seed,
        lr=args.lr,
        mlp_lr=args.mlp_lr,
        backend=args.backend,
        precision=args.precision,
        field=field,
    )


def warm_up(field_config: FieldConfig, backend: str, precision: str, batch: int) -> float:
    """Compile the field's graphs (training step, occupancy density, inference) for this table
    size at the training batch size, so that no timed run pays for it; returns the seconds spent."""
    start = time.perf_counter()
    field = BlockField(dataclasses.replace(field_config, num_images=4), backend=backend, precision=precision)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, generator=g)
    dirs = torch.nn.functional.normalize(torch.randn(batch, 3, generator=g), dim=-1)
    rgb, sigma = field(x, dirs, torch.randint(0, 4, (batch,), generator=g))
    (rgb.mean() + sigma.mean()).backward()
    with torch.no_grad():
        field.density(x)
        field(x, dirs)
    return time.perf_counter() - start


def count_parameters(run_dir: Path, block_id: str) -> int:
    """Learned values of a trained block (field and appearance codes; not the occupancy grid)."""
    state = ckpt.load_tensors(ckpt.block_dir(run_dir, block_id) / "model.pt")["model"]
    return sum(t.numel() for k, t in state.items() if k.startswith("field."))


# --- 1. time to PSNR ---------------------------------------------------------------------------


def held_out_rays(scene: Scene, block: Block, max_pixels: int, seed: int) -> BlockRays:
    """The block's test pixels whose ground point lies in its core (a fixed subset if asked)."""
    rays = block_rays(scene, dataclasses.replace(block, expanded=list(block.core)), block.test_images)
    if 0 < max_pixels < len(rays):
        keep = torch.randperm(len(rays), generator=torch.Generator().manual_seed(seed))[:max_pixels]
        fields = {f.name: getattr(rays, f.name) for f in dataclasses.fields(rays)}
        rays = BlockRays(**{k: v[keep] if isinstance(v, torch.Tensor) else v for k, v in fields.items()})
    return rays


def checkpoint_psnr(run_dir: Path, block_id: str, rays: BlockRays) -> float:
    """PSNR of the block's last checkpoint on ``rays`` (mean appearance code, as for novel views)."""
    folder = ckpt.block_dir(run_dir, block_id)
    model = BlockModel.from_config_dict(ckpt.read_config(folder)["model"])
    model.load_state_dict(ckpt.load_tensors(folder / "checkpoint.pt")["model"])
    model.eval()
    return psnr(model.render_eval(rays.origins, rays.dirs).rgb, rays.rgb)


def time_to_psnr(args: argparse.Namespace, data: Path) -> tuple[Block, int, list[dict]]:
    """Train the block with the most test photos, scoring it every ``eval_every`` steps."""
    run_dir = args.out / "runs" / "time_to_psnr"
    partition, scene = fresh_run(data, run_dir, (2, 2))
    block = max(partition.blocks, key=lambda b: len(b.test_images))
    rays = held_out_rays(scene, block, args.eval_pixels, args.seed)
    config = dataclasses.replace(train_config(args, args.log2_size), steps=args.steps_probe)
    rows = []
    for stop in range(args.eval_every, args.steps_probe + args.eval_every, args.eval_every):
        result = train_block(run_dir, scene, block, config, stop_after=min(stop, args.steps_probe))
        seconds = ckpt.load_tensors(ckpt.block_dir(run_dir, block.id) / "checkpoint.pt")["seconds"]
        rows.append(
            {"step": result["step"], "seconds": seconds, "psnr": checkpoint_psnr(run_dir, block.id, rays)}
        )
        print(f"  step {rows[-1]['step']}: {seconds:.0f} s, {rows[-1]['psnr']:.2f} dB", flush=True)
    return block, len(rays), rows


def first_reaching(rows: list[dict], target: float) -> dict | None:
    return next((r for r in rows if r["psnr"] >= target), None)


def print_time_to_psnr(block: Block, n_pixels: int, rows: list[dict], targets: list[float]) -> None:
    print(
        f"\n1. time to PSNR: block {block.id} ({len(block.images)} training photos), held-out PSNR on "
        f"{n_pixels:,} pixels of its {len(block.test_images)} test photos (block core), block model alone"
    )
    print(f"{'step':>6} {'train s':>8} {'PSNR dB':>8}")
    for r in rows:
        print(f"{r['step']:>6} {r['seconds']:>8.1f} {r['psnr']:>8.2f}")
    for target in targets:
        hit = first_reaching(rows, target)
        where = "not reached" if hit is None else f"{hit['seconds']:.0f} s (step {hit['step']})"
        print(f"  {target:g} dB: {where}")
    print("  (training seconds at the first evaluation at or above the target)")


# --- 2. blocks versus monolithic -----------------------------------------------------------------


def train_layout(
    args: argparse.Namespace, data: Path, name: str, blocks: tuple[int, int], log2_size: int, budget: float
) -> dict:
    """Partition the scene as ``blocks``, share ``budget`` seconds of training among the blocks
    (one after the other, all cores each), evaluate the run; returns the table row."""
    run_dir = args.out / "runs" / name
    fresh_run(data, run_dir, blocks)
    ids = [p.block_id for p in plan_blocks(run_dir, None, False, True) if p.action == "train"]
    config = dataclasses.replace(
        train_config(args, log2_size), steps=UNLIMITED_STEPS, max_seconds=budget / len(ids)
    )
    start = time.perf_counter()
    results = train_run(run_dir, config, block_ids=ids, threads=args.threads or None)
    total = time.perf_counter() - start
    scores = evaluate_run(run_dir, save_renders=False)
    seconds = sum(r["seconds"] for r in results.values())
    return {
        "layout": f"{name} {blocks[0]}x{blocks[1]}",
        "T": log2_size,
        "params": sum(count_parameters(run_dir, b) for b in ids),
        "steps": sum(r["step"] for r in results.values()),
        "seconds": seconds,
        "total_s": total,
        "rays_per_s": sum(r["rays_trained"] for r in results.values()) / seconds,
        "psnr": scores["psnr"],
        "ssim": scores["ssim"],
        "eval_s": scores["seconds"],
    }


def print_comparison(rows: list[dict], budget: float) -> None:
    print(f"\n2. blocks vs monolithic: {budget:.0f} s of training in all, PSNR/SSIM over every test photo")
    print(
        f"{'layout':<16} {'T':>3} {'params':>11} {'steps':>6} {'train s':>8} {'incl. load s':>12} "
        f"{'rays/s':>8} {'PSNR dB':>8} {'SSIM':>6}"
    )
    for r in rows:
        print(
            f"{r['layout']:<16} {r['T']:>3} {r['params']:>11,} {r['steps']:>6} {r['seconds']:>8.1f} "
            f"{r['total_s']:>12.1f} {r['rays_per_s']:>8,.0f} {r['psnr']:>8.2f} {r['ssim']:>6.3f}"
        )
    blocks, mono = rows
    r = {
        k: blocks[k] / mono[k]
        for k in ("params", "steps", "seconds", "total_s", "rays_per_s", "psnr", "ssim")
    }
    print(
        f"{'blocks / mono':<16} {'':>3} {r['params']:>11.2f} {r['steps']:>6.2f} {r['seconds']:>8.2f} "
        f"{r['total_s']:>12.2f} {r['rays_per_s']:>8.2f} {r['psnr']:>8.3f} {r['ssim']:>6.3f}"
    )
    print(
        f"  blocks - mono: {blocks['psnr'] - mono['psnr']:+.2f} dB PSNR, "
        f"{blocks['ssim'] - mono['ssim']:+.3f} SSIM; "
        f"evaluation {blocks['eval_s']:.0f} s vs {mono['eval_s']:.0f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "birdnerf-bench-train",
        help="folder for the sample data (kept) and the runs (replaced)",
    )
    parser.add_argument("--scene", default="small", help="sample scene preset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=float, default=240.0, help="W: training seconds per layout (part 2)")
    parser.add_argument("--log2-size", type=int, default=16, help="T: table rows per level of a block, 2^T")
    parser.add_argument("--rays", type=int, default=2048, help="rays per step")
    parser.add_argument("--lr", type=float, default=TrainConfig.lr, help="hash-table learning rate")
    parser.add_argument("--mlp-lr", type=float, default=TrainConfig.mlp_lr, help="MLP learning rate")
    parser.add_argument("--steps-probe", type=int, default=250, help="steps of the time-to-PSNR run")
    parser.add_argument("--eval-every", type=int, default=50, help="steps between PSNR evaluations")
    parser.add_argument("--eval-pixels", type=int, default=16384, help="held-out pixels scored (0: all)")
    parser.add_argument("--targets", default="20,22,25", help="comma-separated PSNR targets in dB")
    parser.add_argument("--backend", default="auto", help="field backend: auto, torch, compiled, fused, tcnn")
    parser.add_argument("--precision", default="auto", help="MLP precision: auto, fp32, bf16 (fused only)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: one per core)")
    parser.add_argument("--skip", choices=("none", "time-to-psnr", "comparison"), default="none")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    start = time.perf_counter()
    data = ensure_scene(args.out, args.scene, args.seed)
    base = train_config(args, args.log2_size).field
    for log2_size in (args.log2_size, args.log2_size + 2):
        field = dataclasses.replace(base, grid=dataclasses.replace(base.grid, log2_hashmap_size=log2_size))
        seconds = warm_up(field, args.backend, args.precision, 32 * args.rays)
        print(f"warm-up (compile) for 2^{log2_size}: {seconds:.0f} s", flush=True)
    parts = []
    if args.skip != "time-to-psnr":
        print("1. time to PSNR", flush=True)
        block, n_pixels, rows = time_to_psnr(args, data)
        targets = [float(t) for t in args.targets.split(",") if t]
        parts.append(lambda: print_time_to_psnr(block, n_pixels, rows, targets))
    if args.skip != "comparison":
        print("2. blocks vs monolithic", flush=True)
        rows2 = [
            train_layout(args, data, "blocks", (2, 2), args.log2_size, args.budget),
            train_layout(args, data, "mono", (1, 1), args.log2_size + 2, args.budget),
        ]
        parts.append(lambda: print_comparison(rows2, args.budget))
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"\n{args.scene} scene, {args.rays} rays/step, field backend {args.backend}, MLP precision "
        f"{args.precision}, "
        f"torch threads {torch.get_num_threads()}; {time.perf_counter() - start:.0f} s in all; "
        f"load average at the end {load}"
    )
    for show in parts:
        show()


if __name__ == "__main__":
    main()
