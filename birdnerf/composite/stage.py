"""The render stage: dataset views or a camera path, composited from the trained blocks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from birdnerf.composite.blend import BlendIndex
from birdnerf.composite.cache import BlockCache
from birdnerf.composite.outputs import colorize_depth, save_animation, save_view
from birdnerf.composite.path import CameraPath
from birdnerf.composite.view import render_view
from birdnerf.device import resolve_device
from birdnerf.errors import BirdnerfError
from birdnerf.partition import load_scene, read_partition
from birdnerf.progress import ProgressFn
from birdnerf.resources import check_fits
from birdnerf.runlayout import RunLayout
from birdnerf.runlock import locks_run, writes_inside
from birdnerf.torch_globals import keep_torch_globals


@dataclass
class RenderSummary:
    """What the render stage wrote, and how fast it went."""

    out_dir: Path
    views: list[str] = field(default_factory=list)
    animation: Path | None = None
    depth_animation: Path | None = None
    seconds: float = 0.0
    rays: int = 0
    blocks_loaded: list[str] = field(default_factory=list)

    @property
    def rays_per_second(self) -> float:
        return self.rays / max(self.seconds, 1e-9)


@locks_run("render", when=writes_inside)
@keep_torch_globals()
def render_run(
    run_dir: str | Path,
    *,
    split: str = "test",
    camera_path: CameraPath | None = None,
    out_dir: str | Path | None = None,
    video: str | None = None,
    cache_size: int = 8,
    depth_guided: bool = True,
    fast: bool = True,
    progress: ProgressFn | None = None,
    device: str = "auto",
) -> RenderSummary:
    """Render the photos of ``split`` ("test", "train", "all") or the frames of ``camera_path``.

    Views go to ``out_dir`` (default ``RUN/renders/<split or "path">``) as PNGs; with ``video``
    ("mp4": H.264, or "gif") the frames are also assembled into an animation of RGB and depth
    (MP4 falls back to GIF where no encoder is installed). ``fast`` picks the fast inference
    path (False: the reference path, see :mod:`birdnerf.composite.view`). ``progress`` gets
    frames/s and rays/s. ``device``: where the block models run (``auto``: CUDA when available);
    images stay on the CPU.
    """
    run_dir = Path(run_dir)
    partition = read_partition(run_dir)
    if camera_path is None:
        scene = load_scene(partition)
        indices = scene.indices(split)
        if not indices:
            raise BirdnerfError(f"the dataset has no {split!r} photos", partition.dataset)
        names = [scene.names[i] for i in indices]
        jobs = [(scene.cameras[i], scene.c2w[i], view_stem(n)) for i, n in zip(indices, names, strict=True)]
        label = split
    else:
        jobs = [(camera_path.camera, c2w, f"frame_{k:04d}") for k, c2w in enumerate(camera_path.c2w)]
        label = "path"
    out = Path(out_dir) if out_dir else RunLayout(run_dir).renders(label)
    if video not in (None, "mp4", "gif"):
        raise BirdnerfError(f"video must be mp4 or gif, not {video!r}")
    check_render_fits(jobs, out, video)
    cache = BlockCache(run_dir, capacity=cache_size, device=resolve_device(device))
    index = BlendIndex(partition)
    summary = RenderSummary(out_dir=out)
    frames, depth_frames = [], []
    start = time.perf_counter()
    for k, (cam, c2w, stem) in enumerate(jobs):
        view = render_view(
            partition, cache, cam, np.asarray(c2w), depth_guided=depth_guided, fast=fast, index=index
        )
        save_view(out, stem, view)
        summary.views.append(stem)
        summary.rays += cam.width * cam.height
        if video:
            frames.append((view.rgb.numpy() * 255 + 0.5).astype(np.uint8))
            depth_frames.append(view.depth.numpy())
        if progress:
            elapsed = time.perf_counter() - start
            rate = max(elapsed, 1e-9)
            progress(k + 1, len(jobs), {"frames/s": (k + 1) / rate, "rays/s": summary.rays / rate})
    summary.seconds = time.perf_counter() - start
    summary.blocks_loaded = list(cache.loads)
    if video:
        fps = camera_path.fps if camera_path else 4.0
        summary.animation = save_animation(out / f"{label}.{video}", frames, fps)
        lo = float(np.quantile(np.stack(depth_frames), 0.01))
        hi = float(np.quantile(np.stack(depth_frames), 0.99))
        depth_rgb = [colorize_depth(d, lo, hi) for d in depth_frames]
        summary.depth_animation = save_animation(out / f"{label}.depth.{video}", depth_rgb, fps)
    return summary


FRAME_BYTES_PER_PIXEL = 64
"""Memory a frame takes while it renders and saves: its blended images and each slot's weights,
the owner map, and the copies written to disk (measured peak, rounded up)."""
DISK_BYTES_PER_PIXEL = 13
"""Most bytes a frame's files take: RGB, depth and block-map PNGs (3 each, uncompressed) and
depth as float32."""


def check_render_fits(jobs: list, out: Path, video: str | None) -> None:
    """One line, before anything renders, when the largest frame does not fit in memory or the
    frames' files (and a video's frames, held until the end) do not fit."""
    pixels = [cam.width * cam.height for cam, _, _ in jobs]
    biggest = max(jobs, key=lambda job: job[0].width * job[0].height)[0]
    held = sum(pixels) * 7 if video else 0  # RGB bytes and float32 depth of every frame
    check_fits(
        f"rendering {len(jobs)} frame(s) of up to {biggest.width}x{biggest.height} px",
        memory=max(pixels) * FRAME_BYTES_PER_PIXEL + held,
        disk=sum(pixels) * DISK_BYTES_PER_PIXEL,
        folder=out,
        hint="render fewer or smaller frames (the camera path's size)" + (", or no video" if video else ""),
    )


def view_stem(name: str) -> str:
    """A flat file stem for a dataset-relative photo name ("images/a.png" -> "images_a")."""
    return Path(name).with_suffix("").as_posix().replace("/", "_")
