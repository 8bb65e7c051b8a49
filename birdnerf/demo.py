"""The end-to-end demo: sample scene -> partition -> train -> render -> eval, with defaults that
finish in minutes on a 2-core CPU."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from birdnerf.composite import flyover_path, render_run
from birdnerf.eval import evaluate_run
from birdnerf.field import FieldConfig, HashGridConfig
from birdnerf.partition import PartitionConfig, partition_dataset
from birdnerf.runlayout import RENDERS, RunLayout
from birdnerf.synthetic import (
    SAMPLE_SEED,
    SamplePreset,
    generate_sample_scene,
    resolve_preset,
    sample_dataset,
)
from birdnerf.train import RenderConfig, TrainConfig, train_run


@dataclass
class DemoConfig:
    """Demo settings; the defaults are what `birdnerf demo` runs."""

    scene: str | SamplePreset = "hills"
    """Sample scene preset (name or :class:`SamplePreset`)."""
    seed: int = 0
    steps: int = 400
    """Training steps per block (2048 rays each): about 65 s a block on 2 cores (AVX-512 EPYC);
    the hills scene passes 25 dB held out at 400 steps (24.2 dB at 250)."""
    rays_per_batch: int = 2048
    jobs: int = 1
    video_frames: int = 24
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    """Everything else about training (field, learning rates ...); ``steps``, ``seed`` and the
    batch sizes above replace its own."""

    def train_config(self) -> TrainConfig:
        """The training settings the demo runs: ``train`` with this config's steps, seed and batch."""
        return dataclasses.replace(
            self.train,
            steps=self.steps,
            seed=self.seed,
            rays_per_batch=self.rays_per_batch,
            samples_per_batch=32 * self.rays_per_batch,
        )


QUICK_STEPS = 150
"""Training steps per block of ``birdnerf demo --quick``."""


def quick_config(steps: int = QUICK_STEPS, seed: int = SAMPLE_SEED) -> DemoConfig:
    """``birdnerf demo --quick``: the survey committed in ``sample_data/`` (no scene to render),
    2 x 2 blocks, a small eager-torch field (no compile warm-up) and brief training."""
    small_field = FieldConfig(
        grid=HashGridConfig(n_levels=8, log2_hashmap_size=14, max_resolution=256),
        hidden_dim=32,
        appearance_dim=8,
    )
    train = dataclasses.replace(
        TrainConfig(),
        backend="torch",
        field=small_field,
        render=RenderConfig(occupancy_resolution=32),
        log_every=10,
    )
    return DemoConfig(
        scene="sample",
        seed=seed,
        steps=steps,
        rays_per_batch=512,
        video_frames=8,
        partition=PartitionConfig(blocks=(2, 2)),
        train=train,
    )


@dataclass
class DemoResult:
    run_dir: Path
    data_dir: Path
    renders: Path
    video: Path | None
    depth_video: Path | None
    eval_json: Path
    psnr: float
    ssim: float
    baseline_psnr: float
    """Held-out PSNR (dB) of each test photo's own mean colour, averaged like ``psnr``."""
    baseline_ssim: float
    seconds: dict[str, float]
    trained: dict[str, dict] = field(default_factory=dict)
    """Figures of the blocks trained by this call (each with its ``quality``); empty when every
    block was already trained."""


def run_demo(
    out: str | Path,
    config: DemoConfig | None = None,
    *,
    on_stage: Callable[[str], Callable | None] | None = None,
) -> DemoResult:
    """Run every stage into ``out`` (``out/data`` for the dataset, ``out/run`` for the run).

    Finished stages are reused when the demo runs again, so an interrupted demo resumes.
    ``on_stage(name)`` is called as each stage starts and may return a progress callback.
    """
    config = config or DemoConfig()
    out = Path(out)
    data, run_dir = out / "data", out / "run"
    seconds: dict[str, float] = {}

    def stage(name: str):
        start = time.perf_counter()
        callback = on_stage(name) if on_stage else None
        return callback, lambda: seconds.__setitem__(name, time.perf_counter() - start)

    progress, done = stage("sample data")
    if not (data / "transforms.json").exists():
        preset = resolve_preset(config.scene)
        if preset.name == "sample" and config.seed == SAMPLE_SEED:
            sample_dataset(data)  # the committed copy: nothing to render
        else:
            generate_sample_scene(data, preset, seed=config.seed, progress=progress)
    done()

    _, done = stage("partition")
    partition, scene = partition_dataset(data, run_dir, config.partition)
    done()

    progress, done = stage("train")
    trained = train_run(run_dir, config.train_config(), jobs=config.jobs, on_progress=progress)
    done()

    progress, done = stage("eval")
    result = evaluate_run(run_dir, progress=progress)
    done()

    progress, done = stage("video")
    altitude = float(scene.centers[:, 2].mean() - partition.frame["ground_z"])
    path = flyover_path(partition, scene.cameras[0], altitude, frames=config.video_frames)
    summary = render_run(run_dir, camera_path=path, video="mp4", progress=progress)
    done()
    return DemoResult(
        run_dir=run_dir,
        data_dir=data,
        renders=RunLayout(run_dir).root / RENDERS,
        video=summary.animation,
        depth_video=summary.depth_animation,
        eval_json=RunLayout(run_dir).eval,
        psnr=result["psnr"],
        ssim=result["ssim"],
        baseline_psnr=result["baseline_psnr"],
        baseline_ssim=result["baseline_ssim"],
        seconds=seconds,
        trained=trained,
    )
