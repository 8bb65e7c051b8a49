"""A block's ``config.json`` record: what it holds, the checks a resume or a fine-tune makes
against it, and starting a model from an earlier version of its block."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from birdnerf.block import checkpoint as ckpt
from birdnerf.block.model import REFERENCE_LAYOUT, BlockModel
from birdnerf.errors import BirdnerfError
from birdnerf.formats import build as from_fields
from birdnerf.partition.manifest import Block
from birdnerf.train.pixels import BlockPixels

if TYPE_CHECKING:
    from birdnerf.train.loop import TrainConfig

APPEARANCE = "field.appearance_embedding.weight"


def init_from_model(model: BlockModel, folder: Path, images: list[str]) -> None:
    """Start ``model`` from the finished model in ``folder`` (an earlier version of its block).

    The field's weights are copied; each photo keeps its appearance code, and new photos start
    from the mean code; the occupancy grid and surface prior stay fresh (the scene changed).
    Raises BirdnerfError when the old model has another box or architecture.
    """
    old = ckpt.read_config(folder)
    if _architecture(old["model"]) != _architecture(model.config_dict()):
        raise BirdnerfError("cannot fine-tune: the model there has another box or architecture", folder)
    _check_layout(folder / "config.json", old, model)
    weights = ckpt.load_tensors(folder / "model.pt")["model"]
    state = model.state_dict()
    for key, value in weights.items():
        if key.startswith("grid.") or key == "prior" or key == APPEARANCE:
            continue
        state[key] = value
    if APPEARANCE in weights and APPEARANCE in state:
        codes, old_rows = weights[APPEARANCE], {n: i for i, n in enumerate(old["images"])}
        new = codes.mean(dim=0).expand_as(state[APPEARANCE]).clone()
        for i, name in enumerate(images):
            if name in old_rows:
                new[i] = codes[old_rows[name]]
        state[APPEARANCE] = new
    model.load_state_dict(state)


def _architecture(config: dict) -> dict:
    """A model configuration without its photo count (fine-tuning may add photos)."""
    config = json.loads(json.dumps(config))
    config["num_images"] = config["field"]["num_images"] = 0
    return config


RESUMABLE = (
    "steps",
    "max_seconds",
    "checkpoint_every",
    "log_every",
    "backend",
    "precision",
    "device",
    "pixel_budget_mb",
)
"""Training settings a resume may change (each change is recorded in ``config.json``'s
``resumed``); any other change would train the rest of the block differently from its start."""


def check_resume(config_path: Path, model: BlockModel, config: TrainConfig, step: int) -> list[dict]:
    """Refuse to resume a checkpoint made for another architecture, box or training settings
    (other than :data:`RESUMABLE`), naming what differs; return the block's resume history with
    this resume (``step``, the settings it changed as ``[old, new]``, often none) added."""
    from birdnerf.train.loop import TrainConfig

    if not config_path.exists():
        return []
    record = ckpt.read_config(config_path.parent)
    _check_layout(config_path, record, model)
    if record.get("model") != json.loads(json.dumps(model.config_dict())):
        raise BirdnerfError(
            "the checkpoint was made with another model configuration; use --force to start over",
            config_path,
        )
    old = _plain(
        from_fields(
            TrainConfig.from_dict, record.get("train", {}), config_path, "training settings"
        ).to_dict()
    )
    new = _plain(config.to_dict())
    changed = {k: [old[k], new[k]] for k in new if old.get(k) != new[k]}
    fixed = [f"{k} {a} -> {b}" for k, (a, b) in changed.items() if k not in RESUMABLE]
    if fixed:
        raise BirdnerfError(
            f"the checkpoint was trained with other settings ({'; '.join(fixed)}); resume with the "
            "same settings, or use --force to start over",
            config_path,
        )
    history = list(record.get("resumed", []))
    return history + [{"step": step, "changed": changed}]


def _plain(data: dict) -> dict:
    return json.loads(json.dumps(data))


def _check_layout(config_path: Path, record: dict, model: BlockModel) -> None:
    """Refuse weights saved in another hash-table layout than ``model``'s (records without one
    are in the reference layout), naming both backends."""
    layout = record.get("layout", REFERENCE_LAYOUT)
    if layout != model.layout:
        saved = record.get("backend", "torch/compiled")
        raise BirdnerfError(
            f"the weights there were saved by the {saved} backend ({layout} layout) and this model "
            f"runs the {model.backend} backend ({model.layout} layout); pass --backend to match, "
            "or --force to start over",
            config_path,
        )


def config_record(model: BlockModel, config: TrainConfig, block: Block, rays: BlockPixels) -> dict:
    """What ``config.json`` records for a block trained by ``config`` on ``rays``."""
    return {
        "block": block.id,
        "backend": model.backend,
        "layout": model.layout,
        "precision": model.precision,
        "device": str(model.device),
        "model": model.config_dict(),
        "train": config.to_dict(),
        "images": block.images,
        "n_rays": len(rays),
    }
