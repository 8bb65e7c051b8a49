"""Choosing the torch device once: ``auto`` is CUDA when available, else the CPU."""

from __future__ import annotations

import functools
import logging

import torch

from birdnerf.errors import BirdnerfError

logger = logging.getLogger("birdnerf")

DEVICE_HELP = "Torch device: auto (cuda if available, else cpu), cpu, cuda or cuda:N. Default: auto."


@functools.cache
def _resolve(name: str, cuda: bool) -> torch.device:
    if name == "auto":
        device = torch.device("cuda" if cuda else "cpu")
        logger.info("device: %s (auto)", device)
        return device
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BirdnerfError(f"unknown device {name!r}; choose auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise BirdnerfError(f"unsupported device {name!r}; choose auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not cuda:
        raise BirdnerfError(f"device {name!r} was asked for but this torch sees no CUDA device")
    return device


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The device for ``name`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``); BirdnerfError when unusable."""
    if isinstance(name, torch.device):
        return name
    return _resolve(str(name), torch.cuda.is_available())
