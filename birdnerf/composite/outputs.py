"""Writing rendered views: RGB, depth and block-id PNGs, raw depth, and animations."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image

from birdnerf import atomic
from birdnerf.composite.view import ViewRender
from birdnerf.scene.images import save_rgb


def colorize_depth(depth: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """(H, W) depth in metres -> (H, W, 3) uint8 with the turbo colour map (near = red)."""
    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        return np.zeros((*depth.shape, 3), dtype=np.uint8)
    lo = float(np.quantile(depth[valid], 0.01)) if lo is None else lo
    hi = float(np.quantile(depth[valid], 0.99)) if hi is None else hi
    x = np.clip((depth - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
    rgb = matplotlib.colormaps["turbo"](1.0 - x)[..., :3]
    rgb[~valid] = 0.0
    return (rgb * 255 + 0.5).astype(np.uint8)


def colorize_blocks(block_map: np.ndarray) -> np.ndarray:
    """(H, W) block indices -> (H, W, 3) uint8, one tab20 colour per block."""
    palette = (np.asarray(matplotlib.colormaps["tab20"].colors) * 255).astype(np.uint8)
    return palette[block_map % len(palette)]


def save_view(out_dir: Path, stem: str, view: ViewRender) -> dict[str, Path]:
    """Write ``stem.png`` (RGB), ``stem.depth.png`` / ``.npy`` (metres) and ``stem.blocks.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "rgb": out_dir / f"{stem}.png",
        "depth": out_dir / f"{stem}.depth.png",
        "depth_npy": out_dir / f"{stem}.depth.npy",
        "blocks": out_dir / f"{stem}.blocks.png",
    }
    save_rgb(paths["rgb"], view.rgb.numpy())
    depth = view.depth.numpy().astype(np.float32)
    save_rgb(paths["depth"], colorize_depth(depth))
    with atomic.atomic_path(paths["depth_npy"]) as tmp, open(tmp, "wb") as f:
        np.save(f, depth)
    save_rgb(paths["blocks"], colorize_blocks(view.block_map.numpy()))
    return paths


def mp4_available() -> bool:
    """Whether MP4 can be written: the ``imageio-ffmpeg`` package and its bundled ffmpeg."""
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError, OSError):
        return False
    return True


def save_mp4(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    """Write (H, W, 3) uint8 frames as H.264 MP4 (yuv420p, plays everywhere) with the ffmpeg
    that ``imageio-ffmpeg`` ships. Odd sizes are padded by one row/column (H.264 needs even)."""
    import imageio_ffmpeg

    h, w = frames[0].shape[:2]
    pad = ((0, h % 2), (0, w % 2), (0, 0))
    with atomic.atomic_path(path) as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp),
            (w + w % 2, h + h % 2),
            fps=fps,
            codec="libx264",
            pix_fmt_out="yuv420p",
            quality=8,
            macro_block_size=1,
            output_params=["-f", "mp4"],
            ffmpeg_log_level="error",
        )
        writer.send(None)
        try:
            for frame in frames:
                writer.send(np.ascontiguousarray(np.pad(frame, pad, mode="edge")))
        finally:
            writer.close()
    return path


def save_animation(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    """Write (H, W, 3) uint8 frames as MP4 (H.264) or an animated GIF, by ``path``'s suffix.

    Returns the path written: a ``.mp4`` request falls back to a ``.gif`` beside it when no
    H.264 encoder is available.
    """
    if path.suffix.lower() == ".mp4":
        if mp4_available():
            return save_mp4(path, frames, fps)
        path = path.with_suffix(".gif")
    images = [Image.fromarray(f) for f in frames]
    with atomic.atomic_path(path) as tmp:
        images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0
        )
    return path
