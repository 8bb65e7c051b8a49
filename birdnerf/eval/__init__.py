"""Evaluation: image metrics and the held-out scoring of a run."""

from birdnerf.eval.metrics import psnr, ssim
from birdnerf.eval.stage import evaluate_run

__all__ = ["evaluate_run", "psnr", "ssim"]
