"""Peak memory of training one block against photo size: rays streamed from disk vs held in RAM.

Run ``PYTHONPATH=. python benchmarks/bench_stream_rss.py`` from the repository root (defaults:
100 photos at 0.3, 1.2, 3 and 12 MP, 5 training steps; most of the time goes to writing and
indexing the 12 MP photos; ``--sizes 0.3,1.2 --photos 30`` checks the script in a minute).

The sample generator renders a 100-photo survey of the procedural site at 160x120 px; each
larger size is a stand-in written from it: every photo upsampled (bilinear, JPEG q90) with its
camera's intrinsics scaled to match, the poses, points and ground unchanged, so the block
partition and every pixel's ray are those of a real survey at that size (the photos are
smoother than rendered ones, which changes nothing here: memory depends on pixel counts).

For each size, a fresh process partitions the survey 2x2, and trains the block with the most
photos for ``--steps`` steps with the streamed pixels (``birdnerf.train.pixels``: index + colour
file behind a memory map, ``--budget-mb`` of it resident at most), scoring included; another
fresh process builds the same block's rays the old way (:func:`birdnerf.train.data.block_rays`,
every pixel's ray in RAM: the old path's first step, so its peak is a lower bound of the old
training's). The old path is skipped where its rays alone would take more than ``--old-max-gb``.
Peak RSS is the process's ``ru_maxrss``; a bare interpreter with torch and birdnerf imported is
measured the same way as the baseline.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

BASE_WIDTH, BASE_HEIGHT = 160, 120
THREADS = None
"""Torch threads of the measured processes (``--threads``; None: torch's default)."""

CHILD = r"""
import json, resource, sys, time
import birdnerf.train.loop  # noqa: F401 (imported by both modes: the baseline counts it)
args = json.loads(sys.argv[1])
if args.get("threads"):
    import torch
    torch.set_num_threads(args["threads"])
t0 = time.perf_counter()
out = {}
if args["mode"] != "bare":
    import dataclasses
    from birdnerf.partition import load_scene, read_partition
    from birdnerf.field import FieldConfig, HashGridConfig
    from birdnerf.train import TrainConfig, train_block
    from birdnerf.train.data import block_rays

    partition = read_partition(args["run"])
    scene = load_scene(partition)
    block = max(partition.blocks, key=lambda b: len(b.images))
    out["photos_in_block"] = len(block.images)
    if args["mode"] == "stream":
        config = dataclasses.replace(
            TrainConfig(), steps=args["steps"], rays_per_batch=4096, backend="torch", device="cpu",
            checkpoint_every=args["steps"], pixel_budget_mb=args["budget_mb"],
            field=FieldConfig(grid=HashGridConfig(log2_hashmap_size=16)),
        )
        result = train_block(args["run"], scene, block, config, resume=False)
        out["pixels"] = result["n_rays"]
    else:
        rays = block_rays(scene, block, block.images)
        out["pixels"] = len(rays)
out["seconds"] = time.perf_counter() - t0
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def child(mode: str, **kwargs) -> dict:
    res = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps({"mode": mode, "threads": THREADS, **kwargs})],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def base_survey(out: Path, photos: int) -> Path:
    """The sample generator's survey of about ``photos`` photos at 160x120 (generated if absent)."""
    from birdnerf.synthetic import SamplePreset, SiteConfig, SurveyConfig, generate_sample_scene

    data = out / "base"
    if not (data / "transforms.json").exists():
        extent = 200.0 * (photos / 100) ** 0.5  # 100 photos at 200 m with the default overlaps
        preset = SamplePreset(
            "rss",
            SiteConfig(extent_m=extent),
            SurveyConfig(width=BASE_WIDTH, height=BASE_HEIGHT, focal_px=128.0),
        )
        t0 = time.perf_counter()
        generate_sample_scene(data, preset, seed=0, overwrite=data.exists())
        print(f"generated the base survey in {time.perf_counter() - t0:.0f} s", flush=True)
    return data


def upsampled_survey(base: Path, out: Path, megapixels: float) -> tuple[Path, int, int]:
    """A stand-in of ``base`` at about ``megapixels`` per photo (see the module docstring)."""
    factor = (megapixels * 1e6 / (BASE_WIDTH * BASE_HEIGHT)) ** 0.5
    width, height = round(BASE_WIDTH * factor), round(BASE_HEIGHT * factor)
    data = out / f"survey_{width}x{height}"
    meta = json.loads((base / "transforms.json").read_text())
    if (data / "transforms.json").exists():
        return data, width, height
    (data / "images").mkdir(parents=True, exist_ok=True)
    scale = width / BASE_WIDTH

    def rescale(d: dict) -> None:
        for key in ("fl_x", "fl_y", "cx", "cy"):
            if key in d:
                d[key] = d[key] * scale
        if "w" in d:
            d["w"], d["h"] = width, height

    rescale(meta)
    renamed = {}
    t0 = time.perf_counter()
    for frame in meta["frames"]:
        rescale(frame)
        frame.pop("depth_file_path", None)
        name = Path(frame["file_path"]).with_suffix(".jpg").name
        with Image.open(base / frame["file_path"]) as im:
            im.convert("RGB").resize((width, height), Image.BILINEAR).save(data / "images" / name, quality=90)
        renamed[frame["file_path"]] = frame["file_path"] = f"images/{name}"
    for key in ("train_filenames", "val_filenames", "test_filenames"):
        if key in meta:
            meta[key] = [renamed.get(n, n) for n in meta[key]]
    for extra in base.iterdir():
        if extra.suffix == ".npz":
            shutil.copy(extra, data / extra.name)
    (data / "transforms.json").write_text(json.dumps(meta))
    print(
        f"wrote {len(meta['frames'])} photos at {width}x{height} in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return data, width, height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/birdnerf_bench_rss"))
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--sizes", default="0.3,1.2,3,12", help="Photo sizes in megapixels.")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--budget-mb", type=int, default=256)
    parser.add_argument("--old-max-gb", type=float, default=6.0)
    parser.add_argument("--keep", action="store_true", help="Keep the written surveys.")
    parser.add_argument(
        "--threads", type=int, default=None, help="Torch threads (1 on a machine shared with other work)."
    )
    args = parser.parse_args()
    global THREADS
    THREADS = args.threads
    from birdnerf.partition import PartitionConfig, partition_dataset

    args.out.mkdir(parents=True, exist_ok=True)
    base = base_survey(args.out, args.photos)
    bare = child("bare")["peak_rss_mb"]
    print(f"baseline: interpreter with torch and birdnerf imported, peak RSS {bare:.0f} MB", flush=True)
    columns = ("photo size", "MP", "block px", "streamed MB", "old MB", "old/streamed")
    header = " ".join(f"{c:>{w}}" for c, w in zip(columns, (14, 5, 12, 12, 10, 13), strict=True))
    rows = []
    for mp in [float(s) for s in args.sizes.split(",")]:
        data, width, height = upsampled_survey(base, args.out, mp)
        run = args.out / f"run_{width}x{height}"
        if run.exists():
            shutil.rmtree(run)
        partition_dataset(data, run, PartitionConfig(blocks=(2, 2)))
        new = child("stream", run=str(run), steps=args.steps, budget_mb=args.budget_mb)
        old_gb = new["pixels"] * 40 / 1e9  # 10 float32 (origin, direction, colour) + 2 int64 ids per pixel
        if old_gb <= args.old_max_gb:
            old = child("old", run=str(run))
            old_text, ratio = f"{old['peak_rss_mb']:.0f}", f"{old['peak_rss_mb'] / new['peak_rss_mb']:.2f}x"
        else:
            old_text, ratio = f">{old_gb * 1000:.0f}", "(skipped)"
        row = (
            f"{f'{width}x{height}':>14} {width * height / 1e6:5.1f} {new['pixels']:12,d} "
            f"{new['peak_rss_mb']:12.0f} {old_text:>10} {ratio:>13}"
        )
        rows.append(row)
        if len(rows) == 1:
            print(header)
        print(row, flush=True)
        print(
            f"   streamed: {new['photos_in_block']} photos in the block, {new['seconds']:.0f} s "
            f"(indexing, {args.steps} steps, scoring)",
            flush=True,
        )
        if not args.keep:
            shutil.rmtree(run)
            shutil.rmtree(data)
    print("\n" + header + "\n" + "\n".join(rows))
    print(
        f"(old: rays held in RAM, building them alone; baseline interpreter {bare:.0f} MB; "
        "figures taken on a shared machine)"
    )


if __name__ == "__main__":
    main()
