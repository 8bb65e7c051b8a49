"""The trained block: what training produces and compositing, eval, update and the products read.

- :mod:`~birdnerf.block.model`: :class:`BlockModel` (field, occupancy grid, box, appearance codes)
  and :func:`load_trained_model`;
- :mod:`~birdnerf.block.checkpoint`: a block's folder in the run, its tensor files (loaded with
  ``weights_only=True``), JSON records and metrics log;
- :mod:`~birdnerf.block.prior`: the surface prior that limits samples to a shell around the
  sparse points.
"""

from birdnerf.block.model import BlockModel, RenderConfig, load_trained_model

__all__ = ["BlockModel", "RenderConfig", "load_trained_model"]
