"""Evaluation: image metrics and the held-out scoring of a run."""

from birdnerf.eval.appearance import AppearanceFit, fit_appearance
from birdnerf.eval.metrics import psnr, ssim
from birdnerf.eval.stage import evaluate_run, score_dataset

__all__ = ["AppearanceFit", "evaluate_run", "fit_appearance", "psnr", "score_dataset", "ssim"]
