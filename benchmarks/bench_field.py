"""Throughput of the block field per backend: training (forward + backward + Adam) and inference.

Run ``python benchmarks/bench_field.py`` (``--quick`` for a short run). Every backend gets the same
config and batch; the table reports the median of the timed steps after warm-up (the first call,
which includes compilation for ``compiled`` and the kernel build or load for ``fused``, is shown
separately) and the ratios to ``torch`` and to ``compiled``. The optimiser is the one training
uses (:func:`birdnerf.train.loop.make_optimizer`'s :class:`LazyAdam`: lazy rows for the table);
``--dense-adam`` times plain dense Adam instead (the optimiser before the fused backend). The
batch is a training step's sample budget (``TrainConfig.samples_per_batch``) unless
``--batch-log2`` says otherwise. ``fused`` runs twice where the CPU has bfloat16 instructions:
with float32 MLPs (``fused/fp32``) and with bfloat16 ones (``fused/bf16``, what ``auto`` picks).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time

import torch
import torch.nn.functional as F

from birdnerf.field import (
    BlockField,
    FieldConfig,
    HashGridConfig,
    bf16_native,
    compile_available,
    fused_available,
    tcnn_available,
)
from birdnerf.train import TrainConfig
from birdnerf.train.optim import LazyAdam


def make_batch(n: int, mode: str, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """x (n, 3) in [0, 1]^3, unit dirs (n, 3), image ids (n,), target rgb (n, 3).

    ``uniform``: independent random points (worst case for caches). ``rays``: 64 ordered samples
    along each of n / 64 random chords of the cube, as a renderer produces them.
    """
    g = torch.Generator().manual_seed(seed)
    if mode == "uniform":
        x = torch.rand(n, 3, generator=g)
        dirs = F.normalize(torch.randn(n, 3, generator=g), dim=-1)
    else:
        n_rays, per_ray = n // 64, 64
        start, end = torch.rand(n_rays, 3, generator=g), torch.rand(n_rays, 3, generator=g)
        t = torch.linspace(0.0, 1.0, per_ray)[None, :, None]
        x = (start[:, None] + t * (end - start)[:, None]).reshape(-1, 3)
        dirs = F.normalize(end - start, dim=-1).repeat_interleave(per_ray, dim=0)
    ids = torch.randint(0, 100, (x.shape[0],), generator=g)
    target = torch.rand(x.shape[0], 3, generator=g)
    return x.to(device), dirs.to(device), ids.to(device), target.to(device)


def _timed(fn, steps: int, device: torch.device) -> tuple[float, list[float]]:
    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    first = once()
    return first, [once() for _ in range(steps)]


def make_optimizer(field: BlockField, dense: bool) -> torch.optim.Optimizer:
    """Training's optimiser (lazy rows for the table), or dense Adam over everything."""
    if dense:
        return torch.optim.Adam(field.parameters(), lr=1e-2, eps=1e-15)
    table = list(field.encoding.parameters())
    rest = [p for n, p in field.named_parameters() if not n.startswith("encoding.")]
    groups = [{"params": table, "lazy": True}, {"params": rest, "weight_decay": 1e-6}]
    return LazyAdam(groups, lr=1e-2, betas=(0.9, 0.99), eps=1e-15)


def bench_one(name: str, log2_size: int, batch: tuple[torch.Tensor, ...], steps: int, dense: bool) -> dict:
    """One backend (``torch``, ``compiled``, ``fused/fp32``, ``fused/bf16``, ``tcnn``) timed."""
    backend, _, precision = name.partition("/")
    x, dirs, ids, target = batch
    device = x.device
    config = FieldConfig(grid=HashGridConfig(log2_hashmap_size=log2_size), num_images=100)
    field = BlockField(config, backend=backend, device=device, precision=precision or "auto")
    if field.backend != backend:
        raise SystemExit(f"backend {backend} is not available here (got {field.backend})")
    opt = make_optimizer(field, dense or backend == "tcnn")

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        rgb, sigma = field(x, dirs, ids)
        loss = F.mse_loss(rgb, target) + 1e-4 * sigma.mean()
        loss.backward()
        opt.step()

    def infer() -> None:
        with torch.no_grad():
            field(x, dirs)

    n = x.shape[0]
    train_first, train_times = _timed(train_step, steps, device)
    infer_first, infer_times = _timed(infer, steps, device)
    return {
        "backend": name,
        "T": log2_size,
        "params": field.num_parameters(),
        "warmup_s": train_first + infer_first,
        "train": n / statistics.median(train_times),
        "train_best": n / min(train_times),
        "infer": n / statistics.median(infer_times),
        "infer_best": n / min(infer_times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2^16 samples, 3 timed steps, T=16 only")
    parser.add_argument(
        "--batch-log2",
        type=int,
        default=TrainConfig.samples_per_batch.bit_length() - 1,
        help="samples per step = 2^this (default: a training step's sample budget)",
    )
    parser.add_argument("--steps", type=int, default=7, help="timed steps after the warm-up step")
    parser.add_argument("--log2-sizes", default="19,16", help="comma-separated table sizes T to compare")
    parser.add_argument("--samples", choices=("uniform", "rays"), default="uniform")
    parser.add_argument(
        "--backends", default="", help="comma-separated, e.g. torch,fused/fp32,fused/bf16 (default: all here)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--dense-adam", action="store_true", help="dense Adam for every backend")
    args = parser.parse_args()
    if args.quick:
        args.batch_log2, args.steps, args.log2_sizes = 16, 3, "16"
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    backends = [b for b in args.backends.split(",") if b]
    if not backends:
        backends = (
            ["torch"]
            + (["compiled"] if compile_available() else [])
            + (["fused/fp32"] + (["fused/bf16"] if bf16_native() else []) if fused_available() else [])
            + (["tcnn"] if tcnn_available() else [])
        )
    sizes = [int(s) for s in args.log2_sizes.split(",")]
    rows = []
    for backend in backends:
        device = torch.device("cuda" if backend == "tcnn" else "cpu")
        batch = make_batch(2**args.batch_log2, args.samples, device)
        for log2_size in sizes:
            rows.append(bench_one(backend, log2_size, batch, args.steps, args.dense_adam))
            print(f"  done {backend} T={log2_size}", flush=True)

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"\nbatch 2^{args.batch_log2} ({args.samples}), 16 levels x 2 features, 64-wide MLPs, SH degree 4, "
        f"{torch.get_num_threads()} threads, {args.steps} timed steps; load average at the end {load}"
    )
    optimiser = "dense Adam" if args.dense_adam else "lazy Adam on the table, dense on the MLPs"
    print(f"optimiser: {optimiser}")
    print(
        "samples/s: median (best) of the timed steps; x torch, x compiled: ratios of medians to the "
        "torch and compiled backends"
    )
    print(
        f"{'backend':<10} {'T':>3} {'params':>11} {'warm-up s':>9} {'train samples/s':>21} {'x torch':>7} "
        f"{'x comp.':>7} {'infer samples/s':>23} {'x torch':>7} {'x comp.':>7}"
    )

    def ratio(r: dict, key: str, backend: str) -> str:
        ref = next((o for o in rows if o["backend"] == backend and o["T"] == r["T"]), None)
        return f"{r[key] / ref[key]:.2f}" if ref else "-"

    for r in rows:
        train = f"{r['train']:,.0f} ({r['train_best']:,.0f})"
        infer = f"{r['infer']:,.0f} ({r['infer_best']:,.0f})"
        print(
            f"{r['backend']:<10} {r['T']:>3} {r['params']:>11,} {r['warmup_s']:>9.1f} "
            f"{train:>21} {ratio(r, 'train', 'torch'):>7} {ratio(r, 'train', 'compiled'):>7} "
            f"{infer:>23} {ratio(r, 'infer', 'torch'):>7} {ratio(r, 'infer', 'compiled'):>7}"
        )


if __name__ == "__main__":
    main()
