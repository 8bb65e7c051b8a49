"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

BRIGHTON_BEACH = Path(__file__).resolve().parents[1].parent / "shared/data/brighton_beach"


@pytest.fixture
def write_test_photos() -> Callable[..., list[Path]]:
    """A function ``(folder, names, width=8, height=6) -> paths`` writing tiny distinct PNG photos."""

    def write(folder: Path, names: list[str], width: int = 8, height: int = 6) -> list[Path]:
        paths = []
        for i, name in enumerate(names):
            path = Path(folder) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (width, height), (20 * i % 256, 100, 200)).save(path)
            paths.append(path)
        return paths

    return write


@pytest.fixture
def brighton_beach_dir() -> Path:
    """The real 18-photo COLMAP dataset in ``../shared/data/brighton_beach`` (skips when absent)."""
    if not (BRIGHTON_BEACH / "sparse" / "0").is_dir():
        pytest.skip(f"real dataset not available at {BRIGHTON_BEACH}")
    return BRIGHTON_BEACH


# --- A tiny trained run, shared by the training, compositing and eval tests -------------------

MINI_STEPS = 120


def mini_train_config():
    """A small, fast field (eager torch backend: no compile warm-up in tests)."""
    import dataclasses

    from birdnerf.field import FieldConfig, HashGridConfig
    from birdnerf.train import TrainConfig

    field = FieldConfig(
        grid=HashGridConfig(n_levels=8, log2_hashmap_size=14, max_resolution=256),
        hidden_dim=32,
        appearance_dim=8,
    )
    return dataclasses.replace(
        TrainConfig(),
        steps=MINI_STEPS,
        rays_per_batch=1024,
        samples_per_batch=1 << 14,
        backend="torch",
        checkpoint_every=50,
        log_every=25,
        field=field,
    )


@pytest.fixture(scope="session")
def mini_dataset(tmp_path_factory) -> Path:
    """A 90 m x 90 m synthetic survey at 80x60 px (about 30 photos)."""
    from birdnerf.synthetic import SamplePreset, SiteConfig, SurveyConfig, generate_sample_scene

    out = tmp_path_factory.mktemp("mini") / "data"
    preset = SamplePreset(
        "mini",
        SiteConfig(extent_m=90.0),
        SurveyConfig(width=80, height=60, focal_px=64.0),
        points_per_photo=200,
    )
    generate_sample_scene(out, preset, seed=3)
    return out


@pytest.fixture(scope="session")
def mini_runs(mini_dataset, tmp_path_factory) -> dict[str, Path]:
    """The mini survey partitioned 1x2 and as a single block, every block trained."""
    from birdnerf.partition import PartitionConfig, partition_dataset
    from birdnerf.train import train_run

    runs = {}
    for name, shape in (("split", (1, 2)), ("single", (1, 1))):
        run_dir = tmp_path_factory.mktemp(name) / "run"
        partition_dataset(mini_dataset, run_dir, PartitionConfig(blocks=shape))
        train_run(run_dir, mini_train_config())
        runs[name] = run_dir
    return runs
