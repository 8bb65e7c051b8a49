"""Figures of a run for notebooks and reports: each function returns a matplotlib ``Figure``.

Nothing is shown and nothing is written unless ``save`` names a file (written atomically, format
from its suffix). The figures are bare ``matplotlib.figure.Figure`` objects, so no backend is
chosen or switched: Jupyter displays a returned Figure inline, and ``fig.savefig`` works anywhere.

- :func:`partition_map`: photo footprints and centres, block cores and overlaps (bird view);
- :func:`block_metrics_map`: held-out PSNR per block and its margin over the mean colour, on the
  block grid (from ``RUN/eval.json``);
- :func:`training_curves`: each block's training PSNR and loss by step (``metrics.jsonl``), with
  its held-out score (``done.json``);
- :func:`view_panel`: one photo rendered: render, ground truth, error, depth, block ids;
- :func:`update_comparison`: one photo rendered before and after an update, the difference, and
  which blocks were retrained.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from birdnerf import atomic, formats
from birdnerf.block import checkpoint as ckpt
from birdnerf.errors import BirdnerfError
from birdnerf.eval.metrics import psnr
from birdnerf.partition import Partition, compute_footprints, load_scene, read_partition
from birdnerf.partition.plot import partition_figure
from birdnerf.runlayout import RunLayout
from birdnerf.scene.images import load_rgb

__all__ = ["block_metrics_map", "partition_map", "training_curves", "update_comparison", "view_panel"]


def _finish(fig: Figure, save: str | Path | None) -> Figure:
    if save is not None:
        save = Path(save)
        with atomic.atomic_path(save) as tmp:
            fig.savefig(tmp, format=save.suffix.lstrip(".") or "png")
    return fig


def _partition(run: str | Path | Partition) -> Partition:
    return run if isinstance(run, Partition) else read_partition(run)


def partition_map(run_dir: str | Path | Partition, *, save: str | Path | None = None) -> Figure:
    """The run's partition over its photos' ground footprints (as ``RUN/partition.png``)."""
    partition = _partition(run_dir)
    scene = load_scene(partition)
    footprints = compute_footprints(scene, max_range_factor=partition.config.max_range_factor)
    return _finish(partition_figure(partition, scene, footprints), save)


def _grid_axes(ax, partition: Partition, values: dict[str, float], cmap: str, label: str, fig: Figure):
    """Each block's core filled with the colour of its value (grey when it has none)."""
    known = [v for v in values.values() if v is not None and np.isfinite(v)]
    lo, hi = (min(known), max(known)) if known else (0.0, 1.0)
    norm = matplotlib.colors.Normalize(lo, hi if hi > lo else lo + 1e-6)
    colours = matplotlib.colormaps[cmap]
    for b in partition.blocks:
        x0, y0, x1, y1 = b.core
        value = values.get(b.id)
        face = colours(norm(value)) if value is not None else (0.85, 0.85, 0.85, 1.0)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fc=face, ec="black", lw=1.0))
        text = f"{b.id}\n{value:.2f}" if value is not None else f"{b.id}\n-"
        ax.text((x0 + x1) / 2, (y0 + y1) / 2, text, ha="center", va="center", fontsize=8)
    ax.set_xlim(partition.x_edges[0], partition.x_edges[-1])
    ax.set_ylim(partition.y_edges[0], partition.y_edges[-1])
    ax.set_aspect("equal")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=colours), ax=ax, label=label, shrink=0.8)


def block_metrics_map(run_dir: str | Path, *, save: str | Path | None = None) -> Figure:
    """Held-out PSNR (dB) of each block's pixels and its margin over each photo's mean colour,
    on the block grid (bird view), from ``RUN/eval.json`` (run ``evaluate_run`` first)."""
    run_dir = Path(run_dir)
    path = RunLayout(run_dir).eval
    if not path.is_file():
        raise BirdnerfError("no eval.json: evaluate the run first", path)
    scores = formats.read_record(path, formats.EVAL)
    partition = read_partition(run_dir)
    per_block = scores.get("per_block", {})
    fig = Figure(figsize=(11, 5), dpi=100)
    left, right = fig.subplots(1, 2)
    block_psnr = {k: v["psnr"] for k, v in per_block.items() if v.get("psnr") is not None}
    margin = {k: v["margin_db"] for k, v in per_block.items() if v.get("margin_db") is not None}
    _grid_axes(left, partition, block_psnr, "viridis", "PSNR (dB)", fig)
    _grid_axes(right, partition, margin, "RdYlGn", "dB above the mean colour", fig)
    left.set_title("held-out PSNR per block")
    right.set_title("margin over the mean colour")
    fig.suptitle(
        f"run: {scores['psnr']:.2f} dB, SSIM {scores['ssim']:.3f}; "
        f"mean colour {scores['baseline_psnr']:.2f} dB ({scores['margin_db']:+.2f} dB)"
    )
    fig.tight_layout()
    return _finish(fig, save)


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def training_curves(run_dir: str | Path, *, save: str | Path | None = None) -> Figure:
    """Training PSNR (dB, on each logged batch) and loss of every block by step; a marker at the
    last step shows the block's held-out PSNR, and a cross its mean-colour baseline."""
    run_dir = Path(run_dir)
    partition = read_partition(run_dir)
    fig = Figure(figsize=(11, 4.5), dpi=100)
    psnr_ax, loss_ax = fig.subplots(1, 2)
    palette = matplotlib.colormaps["tab10"]
    plotted = 0
    for k, block in enumerate(partition.blocks):
        folder = ckpt.block_dir(run_dir, block.id, block.revision)
        if not (folder / "metrics.jsonl").is_file():
            continue
        rows = _read_jsonl(folder / "metrics.jsonl")
        if not rows:
            continue
        colour = palette(k % 10)
        steps = [r["step"] for r in rows]
        psnr_ax.plot(steps, [r["psnr"] for r in rows], color=colour, label=block.id)
        loss_ax.plot(steps, [r["loss"] for r in rows], color=colour, label=block.id)
        plotted += 1
        done = folder / "done.json"
        quality = json.loads(done.read_text()).get("quality") if done.is_file() else None
        if quality:
            psnr_ax.plot(steps[-1], quality["psnr"], "o", color=colour, ms=7)
            psnr_ax.plot(steps[-1], quality["baseline_psnr"], "x", color=colour, ms=7)
    if plotted == 0:
        raise BirdnerfError("no block has a training log yet: train the run first", run_dir)
    psnr_ax.set_xlabel("step")
    psnr_ax.set_ylabel("PSNR (dB)")
    psnr_ax.set_title("training batches (o held out, x mean colour)")
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("loss")
    loss_ax.set_yscale("log")
    loss_ax.set_title("loss")
    psnr_ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return _finish(fig, save)


def _photo_index(names: list[str], photo: int | str) -> int:
    if isinstance(photo, str):
        if photo not in names:
            raise BirdnerfError(f"no photo named {photo!r} in these versions of the run")
        return names.index(photo)
    return photo


def _render(run_dir: Path, partition: Partition, scene, index: int):
    from birdnerf.composite import BlockCache, render_view

    with torch.inference_mode():
        return render_view(partition, BlockCache(run_dir), scene.cameras[index], scene.c2w[index])


def _show_blocks(ax, ids: np.ndarray) -> None:
    """Block indices as ten repeating colours (pixels of no block left blank)."""
    shown = np.ma.masked_less(ids, 0) % 10
    ax.imshow(shown, cmap=matplotlib.colormaps["tab10"], vmin=0, vmax=9, interpolation="nearest")


def _block_id_image(ax, view, partition: Partition) -> None:
    ids = view.block_map.numpy()
    _show_blocks(ax, ids)
    shown = sorted(set(ids.ravel().tolist()))
    ax.set_title(
        "block: " + ", ".join(partition.blocks[i].id for i in shown if 0 <= i < len(partition.blocks))
    )


def view_panel(
    run_dir: str | Path, photo: int | str | None = None, *, save: str | Path | None = None
) -> Figure:
    """One photo of the run rendered from its blocks: render, ground truth, absolute error, depth
    (metres along the camera axis) and the block owning each pixel.

    ``photo`` is an index into the run's photos or a photo name (default: the first test photo).
    """
    run_dir = Path(run_dir)
    partition = read_partition(run_dir)
    scene = load_scene(partition)
    index = _photo_index(scene.names, scene.indices("test")[0] if photo is None else photo)
    view = _render(run_dir, partition, scene, index)
    truth = load_rgb(scene.image_paths[index], scene.cameras[index]).astype(np.float32) / 255
    rgb = view.rgb.clamp(0, 1).numpy()
    error = np.abs(rgb - truth).mean(axis=-1)
    fig = Figure(figsize=(16, 3.6), dpi=100)
    axes = fig.subplots(1, 5)
    axes[0].imshow(rgb)
    axes[0].set_title(f"render ({psnr(torch.from_numpy(rgb), torch.from_numpy(truth)):.2f} dB)")
    axes[1].imshow(truth)
    axes[1].set_title(f"photo {scene.names[index]} ({scene.split[index]})")
    shown = axes[2].imshow(error, cmap="magma", vmin=0, vmax=max(float(error.max()), 1e-6))
    axes[2].set_title("|error| (mean over RGB)")
    fig.colorbar(shown, ax=axes[2], shrink=0.8)
    depth = axes[3].imshow(view.depth.numpy(), cmap="viridis")
    axes[3].set_title("depth (m)")
    fig.colorbar(depth, ax=axes[3], shrink=0.8)
    _block_id_image(axes[4], view, partition)
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    return _finish(fig, save)


def update_comparison(
    run_dir: str | Path,
    photo: int | str,
    *,
    before: int | None = None,
    after: int | None = None,
    save: str | Path | None = None,
) -> Figure:
    """One photo rendered from two versions of the run (default: the one before the current, and
    the current), their difference, and the blocks the later version retrained (outlined on its
    block map).

    ``photo`` is an index into the photos of version ``after``, or the name of a photo of either
    version (photos added by an update are named ``<prefix>/<name>``).
    """
    from birdnerf.update.versions import read_version

    run_dir = Path(run_dir)
    current = read_partition(run_dir)
    after_p = read_version(run_dir, current.version if after is None else after)
    before_p = read_version(run_dir, after_p.version - 1 if before is None else before)
    scene = load_scene(after_p)
    if isinstance(photo, str) and photo not in scene.names:
        scene = load_scene(before_p)  # e.g. a photo of an update that a rollback undid
    index = _photo_index(scene.names, photo)
    old = _render(run_dir, before_p, scene, index)
    new = _render(run_dir, after_p, scene, index)
    truth = load_rgb(scene.image_paths[index], scene.cameras[index]).astype(np.float32) / 255
    old_rgb, new_rgb = old.rgb.clamp(0, 1).numpy(), new.rgb.clamp(0, 1).numpy()
    scores = [psnr(torch.from_numpy(x), torch.from_numpy(truth)) for x in (old_rgb, new_rgb)]
    retrained = {  # blocks whose model differs between the versions
        b.id for b in after_p.blocks if b.revision != getattr(_find(before_p, b.id), "revision", None)
    }
    fig = Figure(figsize=(16, 3.6), dpi=100)
    axes = fig.subplots(1, 5)
    axes[0].imshow(old_rgb)
    axes[0].set_title(f"version {before_p.version} ({scores[0]:.2f} dB)")
    axes[1].imshow(new_rgb)
    axes[1].set_title(f"version {after_p.version} ({scores[1]:.2f} dB)")
    axes[2].imshow(truth)
    axes[2].set_title(f"photo {scene.names[index]}")
    diff = np.abs(new_rgb - old_rgb).mean(axis=-1)
    shown = axes[3].imshow(diff, cmap="magma", vmin=0, vmax=max(float(diff.max()), 1e-6))
    axes[3].set_title("|after - before|")
    fig.colorbar(shown, ax=axes[3], shrink=0.8)
    ids = new.block_map.numpy()
    mask = np.isin(ids, [i for i, b in enumerate(after_p.blocks) if b.id in retrained])
    _show_blocks(axes[4], ids)
    axes[4].contour(mask.astype(float), levels=[0.5], colors="white", linewidths=1.5)
    axes[4].set_title("blocks changed: " + (", ".join(sorted(retrained)) or "none"))
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    return _finish(fig, save)


def _find(partition: Partition, block_id: str):
    return next((b for b in partition.blocks if b.id == block_id), None)
