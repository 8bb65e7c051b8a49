"""pycolmap, the optional structure-from-motion backend: imported on first use, kept quiet.

pycolmap is the ``colmap`` extra; without it everything but raw-photo import works, and raw-photo
import says how to install it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from birdnerf.errors import BirdnerfError

PYCOLMAP_HINT = "pip install 'birdnerf[colmap]' (or: pip install 'pycolmap>=4.0')"
PYCOLMAP_NEEDS = (
    "FeatureExtractionOptions",
    "ImportedPairingOptions",
    "match_image_pairs",
    "bundle_adjustment",
)


def require_pycolmap() -> ModuleType:
    """The pycolmap module, or a BirdnerfError saying how to install it."""
    try:
        import pycolmap
    except ImportError:
        raise BirdnerfError(
            f"importing raw photos runs structure from motion with pycolmap: {PYCOLMAP_HINT}"
        ) from None
    if not all(hasattr(pycolmap, name) for name in PYCOLMAP_NEEDS):
        version = getattr(pycolmap, "__version__", "?")
        raise BirdnerfError(f"pycolmap {version} is too old for birdnerf: {PYCOLMAP_HINT}")
    return pycolmap


@contextlib.contextmanager
def quiet(pycolmap: ModuleType) -> Iterator[None]:
    """Keep COLMAP's INFO and WARNING log off the terminal (errors still show)."""
    logging_ = getattr(pycolmap, "logging", None)
    old = getattr(logging_, "minloglevel", None)
    if logging_ is not None and old is not None:
        logging_.minloglevel = max(old, 2)
    try:
        yield
    finally:
        if logging_ is not None and old is not None:
            logging_.minloglevel = old


@contextlib.contextmanager
def sfm_errors(images_dir: Path) -> Iterator[None]:
    """Report a failure inside COLMAP as a BirdnerfError about the photo folder."""
    try:
        yield
    except (RuntimeError, ValueError) as err:
        raise BirdnerfError(f"structure from motion failed ({err})", images_dir) from None


@contextlib.contextmanager
def no_stderr() -> Iterator[None]:
    """Silence file descriptor 2: pycolmap's bundle_adjustment logs INFO lines whatever minloglevel says."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
