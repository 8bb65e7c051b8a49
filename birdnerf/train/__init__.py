"""Per-block training: block pixels, the loop, its records and the block runner.

Training produces trained blocks (:mod:`birdnerf.block`); ``RenderConfig``, the block's marching
settings that :class:`TrainConfig` carries, is re-exported here for convenience.
"""

from birdnerf.block.model import RenderConfig
from birdnerf.train.loop import TrainConfig, train_block
from birdnerf.train.ray_pool import RayOptions
from birdnerf.train.runner import train_run

__all__ = ["RayOptions", "RenderConfig", "TrainConfig", "train_block", "train_run"]
