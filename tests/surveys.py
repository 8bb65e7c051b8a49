"""Posed-camera surveys built in memory for tests (no images are read)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from birdnerf.scene.camera import Camera
from birdnerf.scene.scene import Scene

NADIR = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])  # OpenCV camera looking down


def lawnmower(
    nx: int = 10,
    ny: int = 8,
    spacing: float = 10.0,
    altitude: float = 50.0,
    width: int = 160,
    height: int = 120,
    focal: float = 120.0,
    jitter: float = 0.0,
    seed: int = 0,
) -> Scene:
    """A nadir grid survey over flat ground at z = 0, in the world frame; every 8th photo is test."""
    rng = np.random.default_rng(seed)
    cam = Camera(width=width, height=height, fx=focal, fy=focal, cx=width / 2, cy=height / 2)
    poses = []
    for j in range(ny):
        for i in range(nx):
            c2w = np.eye(4)
            c2w[:3, :3] = NADIR
            c2w[:3, 3] = [i * spacing, j * spacing, altitude]
            c2w[:2, 3] += rng.normal(0, jitter, 2) if jitter else 0.0
            poses.append(c2w)
    n = len(poses)
    root = Path("/nonexistent-survey")
    return Scene(
        root=root,
        image_paths=[root / f"img_{i:05d}.png" for i in range(n)],
        cameras=[cam] * n,
        c2w=np.stack(poses),
        split=["test" if i % 8 == 4 else "train" for i in range(n)],
        ground_z=0.0,
        is_world_frame=True,
    )
