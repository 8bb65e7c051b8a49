"""Block training samples/s and rendering rays/s on CUDA against the CPU, in one run.

Run ``python benchmarks/bench_gpu.py`` on a machine with a CUDA device (``benchmarks/gpu_check.sh``
does, beside the CUDA tests); about two minutes on one GPU and 16 cores. Without CUDA it measures
the CPU alone and says so.

A synthetic survey (320x240 px photos) is generated into ``--out`` and partitioned as one block.
**Training**: the block is trained ``--cpu-steps`` steps on the CPU (``auto`` backend: compiled
where torch.compile works) and ``--cuda-steps`` on CUDA (``auto``: tcnn with tinycudann, else
the torch backend), 4096 rays and at most 65,536 samples a step; samples/s is the mean of the
logged rows after the first (which holds compilation and warm-up). **Rendering**: the CUDA-trained
model renders 262,144 rays of the test photos (``render_eval``: early termination, no gradients)
on each device, after one warm-up pass.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from birdnerf.block.checkpoint import block_dir
from birdnerf.block.model import load_trained_model
from birdnerf.field import FieldConfig, HashGridConfig
from birdnerf.partition import PartitionConfig, partition_dataset
from birdnerf.synthetic import SamplePreset, SiteConfig, SurveyConfig, generate_sample_scene
from birdnerf.train import TrainConfig, train_block
from birdnerf.train.pixels import held_out_pixels


def train_rate(run: Path, scene, block, device: str, steps: int, log_every: int) -> dict:
    config = dataclasses.replace(
        TrainConfig(),
        steps=steps,
        rays_per_batch=4096,
        samples_per_batch=1 << 16,
        device=device,
        log_every=log_every,
        checkpoint_every=steps,
        field=FieldConfig(grid=HashGridConfig(log2_hashmap_size=17)),
    )
    t0 = time.perf_counter()
    result = train_block(run, scene, block, config, resume=False)
    rows = [
        json.loads(line) for line in (block_dir(run, block.id) / "metrics.jsonl").read_text().splitlines()
    ]
    steady = rows[1:] or rows
    backend = json.loads((block_dir(run, block.id) / "config.json").read_text())["backend"]
    return {
        "backend": backend,
        "samples_per_s": sum(r["samples_per_s"] for r in steady) / len(steady),
        "rays_per_s": sum(r["rays_per_s"] for r in steady) / len(steady),
        "psnr": result["quality"]["psnr"],
        "wall_s": time.perf_counter() - t0,
    }


def render_rate(folder: Path, rays, device: str, repeats: int = 2) -> float:
    model = load_trained_model(folder, device)
    origins, dirs = rays.origins.to(device), rays.dirs.to(device)
    model.render_eval(origins[:4096], dirs[:4096])  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        model.render_eval(origins, dirs, chunk=1 << 16)
    if device == "cuda":
        torch.cuda.synchronize()
    return repeats * origins.shape[0] / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/birdnerf_bench_gpu"))
    parser.add_argument("--cpu-steps", type=int, default=40)
    parser.add_argument("--cuda-steps", type=int, default=300)
    parser.add_argument("--render-rays", type=int, default=1 << 18)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    gpu = torch.cuda.get_device_name(0) if cuda else "unavailable"
    print(f"torch {torch.__version__}, CUDA device: {gpu}")
    print(f"CPU threads: {torch.get_num_threads()}", flush=True)
    data = args.out / "data"
    if not (data / "transforms.json").exists():
        preset = SamplePreset(
            "gpu", SiteConfig(extent_m=120.0), SurveyConfig(width=320, height=240, focal_px=256.0)
        )
        t0 = time.perf_counter()
        generate_sample_scene(data, preset, seed=0, overwrite=data.exists())
        print(f"generated the survey in {time.perf_counter() - t0:.0f} s", flush=True)
    partition, scene = partition_dataset(data, args.out / "run", PartitionConfig(blocks=(1, 1)))
    block = partition.blocks[0]
    results = {}
    for device, steps in [("cpu", args.cpu_steps)] + ([("cuda", args.cuda_steps)] if cuda else []):
        run = args.out / f"run_{device}"
        partition_dataset(data, run, PartitionConfig(blocks=(1, 1)))
        results[device] = train_rate(run, scene, block, device, steps, log_every=max(5, steps // 6))
        r = results[device]
        print(
            f"train {device:>4} ({r['backend']}): {r['samples_per_s']:,.0f} samples/s, "
            f"{r['rays_per_s']:,.0f} rays/s ({steps} steps, {r['wall_s']:.0f} s with indexing and "
            f"scoring; held-out PSNR {r['psnr']:.2f} dB)",
            flush=True,
        )
    trained = block_dir(args.out / ("run_cuda" if cuda else "run_cpu"), block.id)
    pixels = held_out_pixels(scene, block, block.test_images or block.images)
    pick = torch.randint(len(pixels), (args.render_rays,), generator=torch.Generator().manual_seed(0))
    rays = pixels.batch(pick)
    renders = {device: render_rate(trained, rays, device) for device in results}
    for device, rate in renders.items():
        print(f"render {device:>4}: {rate:,.0f} rays/s ({args.render_rays:,} rays, render_eval)", flush=True)
    if cuda:
        print(
            f"cuda / cpu: training {results['cuda']['samples_per_s'] / results['cpu']['samples_per_s']:.1f}x "
            f"samples/s, rendering {renders['cuda'] / renders['cpu']:.1f}x rays/s"
        )


if __name__ == "__main__":
    main()
