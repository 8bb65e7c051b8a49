"""A small least-recently-used cache of trained block models, loaded on demand."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch

from birdnerf.block import checkpoint as ckpt
from birdnerf.block.model import BlockModel, load_trained_model
from birdnerf.errors import BirdnerfError
from birdnerf.partition.manifest import Block


def load_block_model(
    run_dir: str | Path,
    block_id: str,
    device: torch.device | str = "cpu",
    revision: int = 1,
    backend: str = "auto",
    precision: str = "auto",
) -> BlockModel:
    """The finished model of one block (``config.json`` + ``model.pt``, tensors only), on the field
    ``backend`` with MLPs in ``precision`` (see :func:`birdnerf.block.model.load_trained_model`)."""
    folder = ckpt.block_dir(run_dir, block_id, revision)
    if not (folder / "done.json").exists():
        raise BirdnerfError(f"block {block_id} is not trained yet (run `birdnerf train`)", folder)
    return load_trained_model(folder, device, backend, precision=precision)


class BlockCache:
    """Keeps at most ``capacity`` block models in memory; ``loads`` counts every load from disk.

    ``backend`` is the field backend the models load with (``auto``: the fastest that reads them),
    ``precision`` their MLPs' (``auto``, ``fp32``, ``bf16``).
    """

    def __init__(
        self,
        run_dir: str | Path,
        capacity: int = 8,
        device: torch.device | str = "cpu",
        backend: str = "auto",
        precision: str = "auto",
    ):
        self.run_dir = Path(run_dir)
        self.capacity = max(1, capacity)
        self.device = device
        self.backend = backend
        self.precision = precision
        self.loads: list[str] = []
        self._models: OrderedDict[str, BlockModel] = OrderedDict()

    def get(self, block: Block | str) -> BlockModel:
        """The model of ``block`` (a manifest block, or an id: revision 1)."""
        block_id, revision = (block, 1) if isinstance(block, str) else (block.id, block.revision)
        key = (block_id, revision)
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        model = load_block_model(self.run_dir, block_id, self.device, revision, self.backend, self.precision)
        self.loads.append(block_id)
        self._models[key] = model
        if len(self._models) > self.capacity:
            self._models.popitem(last=False)
        return model

    def __contains__(self, block_id: str) -> bool:
        return any(key[0] == block_id for key in self._models)
