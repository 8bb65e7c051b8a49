"""The ``fused`` CPU backend: a C++/OpenMP hash-grid kernel and a lazy (row-sparse) Adam step.

The source, ``csrc/hashgrid.cpp``, is compiled by ``torch.utils.cpp_extension.load`` on first use
and cached in torch's extensions folder (``TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``) under a name keyed on the source, the flags and the torch version,
so an edited kernel or another torch rebuilds and an unchanged one loads in about a second. It is
built for this CPU's instructions (``-march=native``: AVX-512 gathers and arithmetic where the CPU
has them, 10-25 % faster than a portable build here), with the CPU's model and flags in the key,
so a cache shared by other CPUs builds their own; where the compiler refuses ``-march=native`` the
portable flags are used. If the build fails (no compiler, no ninja), :func:`fused_kernel` returns
None and one warning says why; callers then use the compiled torch backend.

The kernel reads the same table layout as :func:`birdnerf.field.hashgrid.encode_reference`, so
checkpoints move freely between the ``torch``, ``compiled`` and ``fused`` backends. With this
backend the field's MLP heads run under ``torch.compile`` (see :mod:`birdnerf.field.field`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from birdnerf.resources import cpu_info

logger = logging.getLogger("birdnerf.field")

SOURCE = Path(__file__).with_name("csrc") / "hashgrid.cpp"
CFLAGS = ("-O3", "-ffp-contract=off", "-fopenmp")
NATIVE = ("-march=native",)
"""Added to :data:`CFLAGS` first; a build without them is the fallback."""


def _cpu_signature() -> str:
    """This CPU's model and instruction-set flags, for the native build's cache key."""
    return "\n".join(f"{k}: {v}" for k, v in sorted(cpu_info().items()))


def _build(native: bool = True) -> ModuleType:
    """Compile (or load the cached build of) the extension, for this CPU when ``native``; raises
    on any failure."""
    from torch.utils import cpp_extension

    flags = (*CFLAGS, *NATIVE) if native else CFLAGS
    salt = " ".join((*flags, torch.__version__, _cpu_signature() if native else "")).encode()
    key = hashlib.sha256(SOURCE.read_bytes() + salt).hexdigest()[:12]
    name = f"birdnerf_hashgrid_{key}"
    _remove_stale_lock(Path(cpp_extension._get_build_directory(name, verbose=False)) / "lock")
    return cpp_extension.load(
        name=name,
        sources=[str(SOURCE)],
        extra_cflags=list(flags),
        extra_ldflags=["-fopenmp"],
        verbose=False,
    )


STALE_LOCK_S = 600.0
"""A build lock older than this is left by a killed process (a build takes about a minute)."""


def _remove_stale_lock(lock: Path) -> None:
    """torch's build lock holds no PID: a process killed while building leaves it, and every later
    process would wait on it for ever. One older than :data:`STALE_LOCK_S` is removed."""
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > STALE_LOCK_S:
        logger.warning("removing a stale build lock of the fused kernel (%.0f s old): %s", age, lock)
        lock.unlink(missing_ok=True)


def _reason(err: BaseException) -> str:
    """One line of a build failure: the compiler's first error when there is one."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line and not line.startswith("[")]
    return (errors or lines or [type(err).__name__])[0][:300]


@functools.cache
def fused_kernel() -> ModuleType | None:
    """The compiled extension, or None (with one logged warning) when it cannot be built here."""
    logger.info("loading the fused hash-grid kernel (compiled on first use: about a minute)")
    try:
        return _build(native=True)
    except Exception as err:  # e.g. a compiler without -march=native: try the portable flags
        logger.debug("fused kernel: the build for this CPU failed, trying portable flags: %s", _reason(err))
    try:
        return _build(native=False)
    except Exception as err:  # compiler missing, ninja missing, build error: all mean "unavailable"
        logger.warning(
            "fused hash-grid kernel unavailable, using the compiled torch backend: %s", _reason(err)
        )
        return None


def fused_available() -> bool:
    """Whether the ``fused`` backend can run (builds the kernel on the first call)."""
    return fused_kernel() is not None


class FusedEncode(torch.autograd.Function):
    """Hash-grid features of ``x`` (N, 3) from ``table`` (R, F): (N, L * F), level-major.

    Backward gives the table gradient (non-zero only on the rows the batch touched, accumulated
    level by level without atomics) and, when ``x`` requires it, the position gradient.
    ``levels`` is ``(resolutions, offsets, dense flags, mask)`` as plain Python lists and an int.
    """

    @staticmethod
    def forward(ctx, x: Tensor, table: Tensor, levels: tuple) -> Tensor:
        kernel = fused_kernel()
        x = x.to(table.dtype).contiguous()
        ctx.save_for_backward(x, table)
        ctx.levels = levels
        return kernel.encode_forward(x, table.detach(), *levels)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        kernel = fused_kernel()
        x, table = ctx.saved_tensors
        grad_x = grad_table = None
        if ctx.needs_input_grad[1]:
            grad_table = kernel.encode_backward_table(grad_out, x, table.shape[0], *ctx.levels)
        if ctx.needs_input_grad[0]:
            grad_x = kernel.encode_backward_x(grad_out, x, table.detach(), *ctx.levels)
        return grad_x, grad_table, None


def fused_encode(x: Tensor, table: Tensor, levels: tuple) -> Tensor:
    """:class:`FusedEncode` applied; the kernel must be available (see :func:`fused_available`)."""
    return FusedEncode.apply(x, table, levels)
