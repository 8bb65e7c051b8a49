"""Choosing the field backend once; compiled fast paths live in :mod:`birdnerf.field.compile`.

Backends (all read a hash table of the same shape, except ``tcnn`` whose layout is its own):

- ``torch``: readable eager reference implementation; any device.
- ``compiled``: the same parameters run through ``torch.compile`` (Inductor).
- ``fused``: the same parameters through a C++/OpenMP kernel (:mod:`birdnerf.field.fused`), built
  on first use; the fast CPU path. Where it cannot be built, ``compiled`` runs instead.
- ``tcnn``: tiny-cuda-nn's fused CUDA hash grid; CUDA only, half precision inside.

Precision of the MLP heads (:func:`resolve_precision`): ``fp32``, or ``bf16`` on the ``fused``
backend (bfloat16 inputs and weights, float32 accumulation; the hash table, the optimiser's state
and every output stay float32), which ``auto`` picks where the CPU multiplies bfloat16 natively.
"""

from __future__ import annotations

import functools
import logging

import torch

from birdnerf.field.compile import compile_available
from birdnerf.resources import cpu_info

logger = logging.getLogger("birdnerf.field")

BACKENDS = ("torch", "compiled", "fused", "tcnn")
PRECISIONS = ("fp32", "bf16")


def tcnn_available() -> bool:
    """Whether the ``tcnn`` backend can run: tinycudann imports and CUDA is available."""
    from birdnerf.field.tcnn_backend import tcnn_import_error

    return tcnn_import_error() is None and torch.cuda.is_available()


def _fused_available() -> bool:
    from birdnerf.field.fused import fused_available

    return fused_available()


def _cpu_fallback() -> tuple[str, str]:
    """The CPU backend used without the fused kernel, and why."""
    if compile_available():
        return "compiled", "CPU with a working torch.compile, no fused kernel"
    return "torch", "CPU without torch.compile or the fused kernel"


@functools.cache
def _resolve(name: str, device_type: str) -> str:
    if name not in ("auto", *BACKENDS):
        raise ValueError(f"unknown field backend {name!r}; choose one of auto, {', '.join(BACKENDS)}")
    if name == "auto":
        if device_type == "cuda":
            chosen, why = ("tcnn", "CUDA with tinycudann") if tcnn_available() else ("torch", "CUDA")
        elif _fused_available():
            chosen, why = "fused", "CPU with the fused kernel built"
        else:
            chosen, why = _cpu_fallback()
        logger.info("field backend: %s (auto: %s)", chosen, why)
        return chosen
    if name == "fused" and not _fused_available():
        chosen, why = _cpu_fallback()
        logger.info("field backend: %s (fused requested: %s)", chosen, why)
        return chosen
    if name == "tcnn" and not tcnn_available():
        from birdnerf.field.tcnn_backend import tcnn_import_error

        reason = tcnn_import_error() or RuntimeError("CUDA is not available")
        raise RuntimeError(f"field backend 'tcnn' needs tinycudann and CUDA: {reason}") from reason
    logger.info("field backend: %s", name)
    return name


def resolve_backend(name: str = "auto", device: str | torch.device | None = None) -> str:
    """Pick the field backend; the choice is logged once per (name, device type).

    ``auto`` -> ``tcnn`` on CUDA when tinycudann imports, ``torch`` on CUDA otherwise, ``fused``
    on CPU when its kernel builds, else ``compiled`` when torch.compile can work, else ``torch``.
    ``device`` defaults to CUDA when available. An explicit name is returned as is, except
    ``fused`` where the kernel cannot be built (the CPU fallback above is returned; the build
    failure was logged once) and ``tcnn``, which raises here, with the reason, when unusable.
    """
    if device is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device_type = torch.device(device).type
    return _resolve(name, device_type)


@functools.cache
def bf16_native() -> bool:
    """Whether this CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX-BF16), so that
    bfloat16 matrix products run at about 3x float32 instead of being emulated (Linux only)."""
    flags = cpu_info().get("flags", "").split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(name: str, backend: str) -> str:
    """The MLP heads' precision on a resolved ``backend``: ``fp32`` or ``bf16``.

    ``auto`` -> ``bf16`` on the ``fused`` backend where :func:`bf16_native`, else ``fp32``.
    ``bf16`` is refused on other backends (the reference stays float32; tcnn has its own half
    precision). Raises ValueError for an unknown name.
    """
    if name not in ("auto", *PRECISIONS):
        raise ValueError(f"unknown MLP precision {name!r}; choose one of auto, {', '.join(PRECISIONS)}")
    if name == "auto":
        return "bf16" if backend == "fused" and bf16_native() else "fp32"
    if name == "bf16" and backend != "fused":
        raise ValueError(f"bf16 MLPs run on the fused backend only, not on {backend}")
    return name
