"""Per-block training: block rays, the block model, the loop, checkpoints and the block runner."""

from birdnerf.train.loop import TrainConfig, train_block
from birdnerf.train.model import BlockModel, RenderConfig
from birdnerf.train.runner import train_run

__all__ = ["BlockModel", "RenderConfig", "TrainConfig", "train_block", "train_run"]
