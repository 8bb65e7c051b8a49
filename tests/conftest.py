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
