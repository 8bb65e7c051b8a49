"""The ``fused`` CPU backend: a C++/OpenMP hash-grid kernel and a lazy (row-sparse) Adam step.

The source, ``csrc/hashgrid.cpp``, is compiled on first use for this CPU and cached (see
:mod:`birdnerf.kernels`: about a minute the first time, a second afterwards). If it cannot be
built, :func:`fused_kernel` returns None and one warning says why; callers then use the compiled
torch backend.

The kernel reads the same table layout as :func:`birdnerf.field.hashgrid.encode_reference`, so
checkpoints move freely between the ``torch``, ``compiled`` and ``fused`` backends. With this
backend the field's MLP heads run under ``torch.compile`` (see :mod:`birdnerf.field.field`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from birdnerf.kernels import load_kernel

SOURCE = Path(__file__).with_name("csrc") / "hashgrid.cpp"


@functools.cache
def fused_kernel() -> ModuleType | None:
    """The compiled extension, or None (with one logged warning) when it cannot be built here."""
    return load_kernel("hashgrid", SOURCE, "using the compiled torch backend")


def fused_available() -> bool:
    """Whether the ``fused`` backend can run (builds the kernel on the first call)."""
    return fused_kernel() is not None


class FusedEncode(torch.autograd.Function):
    """Hash-grid features of ``x`` (N, 3) from ``table`` (R, F): (N, L * F), row-major, columns
    level by level.

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
