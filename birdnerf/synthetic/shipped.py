"""The small survey committed in ``sample_data/``, and where to find (or remake) it.

``sample_data/survey`` is the ``sample`` preset flown over the whole site and
``sample_data/corner`` the same site with new buildings in its +x/+y corner (the ``changed``
variant), both at :data:`SAMPLE_SEED`; ``sample_data/README.md`` gives the commands that
regenerate them byte for byte. An installed copy of birdnerf without the repository regenerates
them on demand (about 2 s).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from birdnerf.synthetic.generate import VARIANTS, generate_sample_scene
from birdnerf.synthetic.presets import SAMPLE

SAMPLE_SEED = 5
SAMPLE_DATA = Path(__file__).resolve().parents[2] / "sample_data"
"""The repository's ``sample_data/`` folder (absent from a plain wheel install)."""
SAMPLE_FOLDERS = {"base": "survey", "changed": "corner"}
"""Folder of each variant under ``sample_data/``."""


def shipped_sample(variant: str = "base") -> Path | None:
    """The committed dataset of ``variant`` ("base" or "changed"), or None when it is not here."""
    folder = SAMPLE_DATA / SAMPLE_FOLDERS[variant]
    return folder if (folder / "transforms.json").is_file() else None


def sample_dataset(out: str | Path, variant: str = "base") -> Path:
    """Put the sample survey's ``variant`` at ``out`` (a new folder) and return it.

    Copies the committed files when the repository is here, else renders the same files.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} (choose from {', '.join(VARIANTS)})")
    out = Path(out)
    source = shipped_sample(variant)
    if source is None:
        generate_sample_scene(out, SAMPLE, seed=SAMPLE_SEED, variant=variant)
    else:
        shutil.copytree(source, out)
    return out
