"""The scene: photos, their cameras and poses, splits, and the world frame."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from birdnerf.errors import BirdnerfError
from birdnerf.scene.camera import Camera

SPLITS = ("train", "val", "test")
HOLDOUT_EVERY = 8


def holdout_split(names: list[str]) -> list[str]:
    """The default split when a dataset names none: "test" for every 8th photo, else "train".

    Photos are ranked by name; ranks 4, 12, 20, ... are held out, so any dataset of five or
    more photos has a test photo, and the rule does not depend on the order of the input file.
    """
    order = sorted(range(len(names)), key=lambda i: names[i])
    split = ["train"] * len(names)
    for rank, i in enumerate(order):
        if rank % HOLDOUT_EVERY == HOLDOUT_EVERY // 2:
            split[i] = "test"
    return split


@dataclass
class Scene:
    """A set of posed photos of one site.

    Attributes:
        root: dataset directory; every image path lies inside it.
        image_paths: absolute path of each photo.
        cameras: intrinsics of each photo (objects may be shared between photos).
        c2w: (N, 4, 4) float64 camera-to-world matrices, OpenCV axes, in the scene's frame.
        split: "train", "val" or "test" for each photo.
        world_from_input: (4, 4) similarity mapping the reader's input frame to this frame
            (identity until :func:`birdnerf.scene.frame.to_world_frame` is applied).
        points: optional (M, 3) sparse points in this frame, with optional (M, 3) uint8 colours.
        depth_paths: optional ground-truth z-depth files (metres, .npy) per photo.
        ground_z: ground height in this frame, once known.
        is_world_frame: True when the frame is z-up with the ground on x/y (bird view).
        geo: optional geographic reference (e.g. {"lat": .., "lon": .., "alt": ..}).
        source: which reader produced the scene.
        image_names: stable ids of the photos, when they are not their paths relative to
            ``root`` (a scene merged from several datasets, see :func:`merge_scenes`).
    """

    root: Path
    image_paths: list[Path]
    cameras: list[Camera]
    c2w: np.ndarray
    split: list[str]
    world_from_input: np.ndarray = field(default_factory=lambda: np.eye(4))
    points: np.ndarray | None = None
    point_colors: np.ndarray | None = None
    depth_paths: list[Path] | None = None
    ground_z: float | None = None
    is_world_frame: bool = False
    geo: dict | None = None
    source: str = ""
    image_names: list[str] | None = None

    def __post_init__(self) -> None:
        self.c2w = np.asarray(self.c2w, dtype=np.float64)
        n = len(self.image_paths)
        if self.c2w.shape != (n, 4, 4):
            raise ValueError(f"c2w must be ({n}, 4, 4), got {self.c2w.shape}")
        if len(self.cameras) != n or len(self.split) != n:
            raise ValueError("image_paths, cameras and split must have the same length")

    def __len__(self) -> int:
        return len(self.image_paths)

    @property
    def names(self) -> list[str]:
        """Image paths relative to the dataset root, with forward slashes (stable ids)."""
        if self.image_names is not None:
            return list(self.image_names)
        prefix = str(self.root).rstrip("/") + "/"
        paths = [str(p) for p in self.image_paths]
        if all(p.startswith(prefix) for p in paths):  # fast path: string slicing, no pathlib
            return [p[len(prefix) :] for p in paths]
        return [p.relative_to(self.root).as_posix() for p in self.image_paths]

    @property
    def centers(self) -> np.ndarray:
        """(N, 3) camera centres."""
        return self.c2w[:, :3, 3]

    def indices(self, split: str) -> list[int]:
        """Indices of the photos in ``split`` ("train", "val", "test" or "all")."""
        if split == "all":
            return list(range(len(self)))
        return [i for i, s in enumerate(self.split) if s == split]

    def subset(self, indices: list[int]) -> Scene:
        """A scene with only the given photos (same frame, points and root)."""
        return replace(
            self,
            image_paths=[self.image_paths[i] for i in indices],
            cameras=[self.cameras[i] for i in indices],
            c2w=self.c2w[indices],
            split=[self.split[i] for i in indices],
            depth_paths=[self.depth_paths[i] for i in indices] if self.depth_paths else None,
            image_names=[self.image_names[i] for i in indices] if self.image_names else None,
        )

    def transformed(self, transform: np.ndarray) -> Scene:
        """The scene in another frame: ``x_new = transform @ x`` (a similarity, scale allowed).

        Camera rotations stay orthonormal; the scale moves into positions (and points).
        """
        transform = np.asarray(transform, dtype=np.float64)
        scale = float(np.cbrt(np.linalg.det(transform[:3, :3])))
        rot = transform[:3, :3] / scale
        c2w = self.c2w.copy()
        c2w[:, :3, :3] = rot @ self.c2w[:, :3, :3]
        c2w[:, :3, 3] = self.c2w[:, :3, 3] @ transform[:3, :3].T + transform[:3, 3]
        points = None if self.points is None else self.points @ transform[:3, :3].T + transform[:3, 3]
        return replace(
            self,
            c2w=c2w,
            points=points,
            world_from_input=transform @ self.world_from_input,
            ground_z=None,
            is_world_frame=False,
        )

    def validate(self) -> None:
        """Raise :class:`BirdnerfError` naming the first photo with a bad pose or camera."""
        for i, path in enumerate(self.image_paths):
            m = self.c2w[i]
            if not np.all(np.isfinite(m)):
                raise BirdnerfError("camera pose contains NaN or infinity", path)
            r = m[:3, :3]
            if abs(np.linalg.det(r) - 1.0) > 1e-3 or not np.allclose(r.T @ r, np.eye(3), atol=1e-3):
                raise BirdnerfError("camera rotation is not orthonormal (degenerate pose)", path)
            problem = self.cameras[i].validate()
            if problem:
                raise BirdnerfError(problem, path)
        if not self.indices("train"):
            raise BirdnerfError("the dataset has no training photos", self.root)


def merge_scenes(base: Scene, added: list[tuple[Scene, str]]) -> Scene:
    """One scene of ``base``'s photos followed by each added scene's, all in ``base``'s frame.

    Photos of an added scene are named ``<prefix>/<name>`` so that names stay unique; the frame,
    root, ground and geographic reference are ``base``'s; sparse points are pooled.
    """
    scenes = [base] + [scene for scene, _ in added]
    names = base.names + [f"{prefix}/{n}" for scene, prefix in added for n in scene.names]
    if len(set(names)) != len(names):
        raise ValueError("merged scenes have duplicate photo names")
    points = [s.points for s in scenes if s.points is not None and len(s.points)]
    colors = [s.point_colors for s in scenes if s.points is not None and len(s.points)]
    return replace(
        base,
        image_paths=[p for s in scenes for p in s.image_paths],
        cameras=[c for s in scenes for c in s.cameras],
        c2w=np.concatenate([s.c2w for s in scenes]),
        split=[x for s in scenes for x in s.split],
        points=np.concatenate(points) if points else None,
        point_colors=np.concatenate(colors) if colors and all(c is not None for c in colors) else None,
        depth_paths=[p for s in scenes for p in s.depth_paths]
        if all(s.depth_paths for s in scenes)
        else None,
        image_names=names,
    )


def resolve_inside(root: Path, relative: str, source: Path) -> Path:
    """Resolve a path from a data file, refusing any that escapes the dataset directory.

    The check is on the path as written (``..`` and absolute paths), not on where symbolic links
    inside the dataset lead: a dataset whose ``images/`` folder links elsewhere is the user's own
    layout, while a data file cannot name a file outside it.
    """
    root = root.resolve()
    candidate = Path(os.path.normpath(root / relative))
    if not candidate.is_relative_to(root):
        raise BirdnerfError(f"path {relative!r} points outside the dataset directory {root}", source)
    return candidate
