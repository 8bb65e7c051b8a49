"""Open a dataset of any supported layout, detected from what is on disk.

The scene is returned in the reader's input frame; moving it into the bird-view world frame is
a separate step.
"""

from __future__ import annotations

from pathlib import Path

from birdnerf.errors import BirdnerfError
from birdnerf.scene.colmap import MODEL_PARTS, SUFFIXES, detect_model_format, read_colmap
from birdnerf.scene.nerfstudio import read_transforms
from birdnerf.scene.scene import Scene

TRANSFORMS_FILE = "transforms.json"
IMAGES_FOLDER = "images"
# Where a COLMAP model sits inside a dataset folder, most specific first.
MODEL_SUBFOLDERS = ("sparse/0", "sparse", ".")

LOOKED_FOR = (
    f"{TRANSFORMS_FILE} (nerfstudio), or a COLMAP model (cameras + images + points3D, .bin or .txt) "
    f"in {', '.join(d for d in MODEL_SUBFOLDERS if d != '.')}, the folder itself or its 0/, "
    f"with an {IMAGES_FOLDER}/ folder beside it"
)


def load_dataset(path: str | Path) -> Scene:
    """Read the dataset at ``path``, whichever supported layout it has.

    Recognised, in this order:

    - a ``transforms.json`` file, or a folder containing one: nerfstudio
      (:func:`~birdnerf.scene.nerfstudio.read_transforms`);
    - a COLMAP dataset folder with ``sparse/0/`` (or ``sparse/``) holding a model, and
      ``images/``: :func:`~birdnerf.scene.colmap.read_colmap`;
    - a COLMAP model folder itself (or one of its files, or the ``sparse`` folder above model
      ``0``), with the images in ``images/`` in the model folder or one or two levels above it
      (``<dataset>/sparse/0`` -> ``<dataset>/images``).

    Raises:
        BirdnerfError: when ``path`` does not exist or matches none of these layouts (the message
            lists what was looked for), or from the reader.
    """
    path = Path(path)
    if not path.exists():
        raise BirdnerfError("no such file or folder", path)
    if path.is_file():
        if path.suffix == ".json":
            return read_transforms(path)
        if path.stem in MODEL_PARTS and path.suffix in SUFFIXES.values():
            return _read_colmap_model_folder(path.parent)
        raise BirdnerfError(f"not a dataset file (looked for {LOOKED_FOR})", path)
    if (path / TRANSFORMS_FILE).is_file():
        return read_transforms(path / TRANSFORMS_FILE)
    if (path / IMAGES_FOLDER).is_dir():
        for sub in MODEL_SUBFOLDERS:
            model_dir = path / sub
            if model_dir.is_dir() and detect_model_format(model_dir):
                return read_colmap(model_dir, path / IMAGES_FOLDER)
    # A model folder itself, or the ``sparse`` folder above model ``0``.
    for model_dir in (path, path / "0"):
        if detect_model_format(model_dir):
            return _read_colmap_model_folder(model_dir)
    raise BirdnerfError(f"no dataset found (looked for {LOOKED_FOR})", path)


def _read_colmap_model_folder(model_dir: Path) -> Scene:
    """Read the model in ``model_dir`` with the nearest ``images/`` folder at or above it."""
    model_dir = model_dir.resolve()
    candidates = [model_dir / IMAGES_FOLDER, model_dir.parent / IMAGES_FOLDER]
    candidates.append(model_dir.parent.parent / IMAGES_FOLDER)
    for images_dir in candidates:
        if images_dir.is_dir():
            return read_colmap(model_dir, images_dir)
    looked = ", ".join(str(c) for c in candidates)
    message = f"found a COLMAP model but no {IMAGES_FOLDER}/ folder (looked in {looked})"
    raise BirdnerfError(message, model_dir)
