"""Evaluation: image metrics and the held-out scoring of a run.

The metrics import nothing else of birdnerf, so training can score its blocks with them; the
scoring of runs (which renders through :mod:`birdnerf.composite`, itself built on training) is
imported on first use to keep that chain free of cycles.
"""

from __future__ import annotations

import importlib
from typing import Any

from birdnerf.eval.metrics import mean_color_baseline, psnr, psnr_vs_baseline, ssim

_LAZY = {
    "AppearanceFit": "birdnerf.eval.appearance",
    "fit_appearance": "birdnerf.eval.appearance",
    "evaluate_run": "birdnerf.eval.stage",
    "score_dataset": "birdnerf.eval.stage",
}

__all__ = [
    "AppearanceFit",
    "evaluate_run",
    "fit_appearance",
    "mean_color_baseline",
    "psnr",
    "psnr_vs_baseline",
    "score_dataset",
    "ssim",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'birdnerf.eval' has no attribute {name!r}")
