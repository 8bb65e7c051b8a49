"""The state of one block's training between steps: its clock, what its checkpoint holds, and the
sums behind each row of ``metrics.jsonl`` (see :func:`birdnerf.train.loop.train_block`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from birdnerf.block.model import BlockModel
from birdnerf.eval.metrics import psnr_from_mse


class TrainingClock:
    """Training seconds and rays, carried across resumes, against an optional time budget."""

    def __init__(self, max_seconds: float | None) -> None:
        self.max_seconds = max_seconds
        self.before, self.seconds, self.rays = 0.0, 0.0, 0
        self.t0 = time.perf_counter()

    def resume(self, seconds: float, rays: int) -> None:
        self.before, self.seconds, self.rays = seconds, seconds, rays

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def tick(self, rays: int) -> None:
        self.seconds = self.before + time.perf_counter() - self.t0
        self.rays += rays

    @property
    def progress(self) -> float:
        """Share of the time budget spent (0 without a budget)."""
        return 0.0 if self.max_seconds is None else self.seconds / max(self.max_seconds, 1e-9)

    @property
    def out_of_time(self) -> bool:
        return self.max_seconds is not None and self.seconds >= self.max_seconds


@dataclass
class TrainingRun:
    """What a block's training carries from step to step, and saves in its checkpoint."""

    model: BlockModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    generator: torch.Generator
    """Draws the pixels, on the CPU (the index lives there)."""
    on_device: torch.Generator
    """Draws marching and occupancy samples on the model's device (``generator`` on the CPU)."""
    clock: TrainingClock
    step: int = 0
    """Steps done."""
    samples_per_ray: float | None = None
    """Measured by the last step; sizes the next draw."""

    def state(self) -> dict:
        """The checkpoint of the run after ``step`` steps."""
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            **({} if self.on_device is self.generator else {"device_generator": self.on_device.get_state()}),
            "seconds": self.clock.seconds,
            "rays": self.clock.rays,
            "samples_per_ray": self.samples_per_ray,
        }

    def load(self, state: dict) -> None:
        """Continue from a checkpoint written by :meth:`state`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        if self.on_device is not self.generator and "device_generator" in state:
            self.on_device.set_state(state["device_generator"])
        self.step = int(state["step"])
        self.samples_per_ray = state.get("samples_per_ray")
        self.clock.resume(float(state.get("seconds", 0.0)), int(state.get("rays", 0)))


class MetricsLog:
    """Figures summed over the steps since the last ``metrics.jsonl`` row."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.t0, self.steps, self.mse, self.samples, self.rays = time.perf_counter(), 0, 0.0, 0, 0

    def add(self, mse: float, samples: int, rays: int) -> None:
        self.steps += 1
        self.mse += mse
        self.samples += samples
        self.rays += rays

    def row(self, run: TrainingRun) -> dict:
        """The row for the steps up to ``run.step``; starts the next sums."""
        elapsed = time.perf_counter() - self.t0
        row = {
            "step": run.step,
            "loss": self.mse / self.steps,
            "psnr": psnr_from_mse(self.mse / self.steps),
            "rays_per_s": self.rays / elapsed,
            "samples_per_s": self.samples / elapsed,
            "samples_per_ray": self.samples / max(self.rays, 1),
            "occupied": run.model.grid.occupied_fraction,
            "lr": run.scheduler.get_last_lr()[0],
        }
        self.reset()
        return row
