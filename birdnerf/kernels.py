"""C++/OpenMP CPU kernels, compiled on first use and cached.

Each kernel is one C++ source compiled by ``torch.utils.cpp_extension.load`` and cached in torch's
extensions folder (``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``) under a
name keyed on the source, the flags and the torch version, so an edited kernel or another torch
rebuilds and an unchanged one loads in about a second. Kernels are built for this CPU's
instructions (``-march=native``), with the CPU's model and flags in the key, so a cache shared by
other CPUs builds their own; where the compiler refuses ``-march=native`` the portable flags are
used. ``-ffp-contract=off`` keeps every product and sum rounded as its torch twin rounds it.

If a build fails (no compiler, no ninja), :func:`load_kernel` returns None and logs one warning
saying why; callers then use their torch twin.

Kernels: ``birdnerf/field/csrc/hashgrid.cpp`` (:mod:`birdnerf.field.fused`) and
``birdnerf/render/csrc/march.cpp`` (:mod:`birdnerf.render.fast`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from types import ModuleType

import torch

from birdnerf.resources import cpu_info

logger = logging.getLogger("birdnerf.kernels")

CFLAGS = ("-O3", "-ffp-contract=off", "-fopenmp")
NATIVE = ("-march=native",)
"""Added to :data:`CFLAGS` first; a build without them is the fallback."""

STALE_LOCK_S = 600.0
"""A build lock older than this is left by a killed process (a build takes about a minute)."""


def _cpu_signature() -> str:
    """This CPU's model and instruction-set flags, for the native build's cache key."""
    return "\n".join(f"{k}: {v}" for k, v in sorted(cpu_info().items()))


def build(name: str, source: Path, native: bool = True) -> ModuleType:
    """Compile (or load the cached build of) ``source`` as ``birdnerf_<name>_<key>``, for this CPU
    when ``native``; raises on any failure."""
    from torch.utils import cpp_extension

    flags = (*CFLAGS, *NATIVE) if native else CFLAGS
    salt = " ".join((*flags, torch.__version__, _cpu_signature() if native else "")).encode()
    key = hashlib.sha256(source.read_bytes() + salt).hexdigest()[:12]
    module = f"birdnerf_{name}_{key}"
    _remove_stale_lock(Path(cpp_extension._get_build_directory(module, verbose=False)) / "lock")
    return cpp_extension.load(
        name=module,
        sources=[str(source)],
        extra_cflags=list(flags),
        extra_ldflags=["-fopenmp"],
        verbose=False,
    )


def load_kernel(name: str, source: Path, fallback: str) -> ModuleType | None:
    """The kernel built for this CPU, else the portable build, else None with one warning
    ``"<name> kernel unavailable, <fallback>: <the compiler's first error>"``."""
    logger.info("loading the %s kernel (compiled on first use: about a minute)", name)
    try:
        return build(name, source, native=True)
    except Exception as err:  # e.g. a compiler without -march=native: try the portable flags
        logger.debug(
            "%s kernel: the build for this CPU failed, trying portable flags: %s", name, _reason(err)
        )
    try:
        return build(name, source, native=False)
    except Exception as err:  # compiler missing, ninja missing, build error: all mean "unavailable"
        logger.warning("%s kernel unavailable, %s: %s", name, fallback, _reason(err))
        return None


def _remove_stale_lock(lock: Path) -> None:
    """torch's build lock holds no PID: a process killed while building leaves it, and every later
    process would wait on it for ever. One older than :data:`STALE_LOCK_S` is removed."""
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > STALE_LOCK_S:
        logger.warning("removing a stale build lock of a CPU kernel (%.0f s old): %s", age, lock)
        lock.unlink(missing_ok=True)


def _reason(err: BaseException) -> str:
    """One line of a build failure: the compiler's first error when there is one."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line and not line.startswith("[")]
    return (errors or lines or [type(err).__name__])[0][:300]
