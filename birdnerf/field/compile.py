"""``torch.compile`` with batch padding and an eager fallback, for the field's fast paths.

The lowest layer of :mod:`birdnerf.field`: the hash grid and the MLPs use it, the backend chooser
(:mod:`birdnerf.field.backends`) asks it whether compiling can work here.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch
from torch import Tensor

logger = logging.getLogger("birdnerf.field")

PAD_MULTIPLE = 1024
"""Compiled calls pad the batch to a multiple of this (zeros), so sizes 0 and 1 never reach the
compiler (it specialises them) and vector loops have no ragged tail."""


RECOMPILE_LIMIT = 64
"""Graphs one compiled function may hold (torch's default is 8). Each field configuration, MLP
precision, grad mode and kind of appearance input is a graph of its own, and a process that builds
fields of many configurations (a notebook, the test suite) needs more than 8; a call past the
limit runs eagerly (see :class:`LazyCompile`)."""


def _compile_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the compiler could not build this", as opposed to bad inputs."""
    from torch._dynamo.exc import BackendCompilerFailed

    errors: list[type[BaseException]] = [BackendCompilerFailed]
    try:
        from torch._dynamo.exc import FailOnRecompileLimitHit

        errors.append(FailOnRecompileLimitHit)
    except ImportError:  # older torch without this class
        pass
    try:
        from torch._inductor.exc import CppCompileError, InvalidCxxCompiler

        errors += [CppCompileError, InvalidCxxCompiler]
    except ImportError:  # older torch without these classes
        pass
    return tuple(errors)


@functools.lru_cache(maxsize=1)
def compile_available() -> bool:
    """Whether ``torch.compile`` can build CPU kernels here: dynamo supports this Python and a C++
    compiler is found. Cheap (no compilation); a later failure still falls back to eager."""
    try:
        from torch._dynamo.eval_frame import is_inductor_supported
        from torch._inductor.cpp_builder import get_cpp_compiler

        if not is_inductor_supported():
            return False
        get_cpp_compiler()
    except Exception as err:  # any failure of the probe means "do not try"
        logger.debug("torch.compile unavailable: %s", err)
        return False
    return True


CHUNK_ROWS = 1 << 14
CHUNK_PAD = 1 << 12
"""Bounded calls (``LazyCompile(..., bounded=True)``) see batches of 4,096, 8,192, 12,288 or
16,384 rows only. oneDNN, which runs bfloat16 matrix products, keeps kernels and buffers for
every matrix shape it has seen, about 7 MB per batch size for the MLP heads' inference and 14 MB
with training's backward: with a batch size that changes on every call, as in rendering and
training, memory grew by about 1.5 GB over 200 calls."""


def _pad_rows(t: Tensor, n: int) -> Tensor:
    """``t`` with zero rows appended up to ``n``, row-major (contiguous) either way, so that the
    compiled code always sees one layout (a caller may pass a transposed view)."""
    if t.shape[0] == n:
        return t.contiguous()
    return torch.cat([t, t.new_zeros((n - t.shape[0], *t.shape[1:]))])


class LazyCompile:
    """``fn`` compiled by ``torch.compile`` at its first call, with batch padding and eager fallback.

    Call as ``lazy(batched, rest)``: ``batched`` is a tuple of tensors sharing the leading batch size
    N, ``rest`` the other arguments (parameters, constants). The batch is zero-padded to a multiple
    of :data:`PAD_MULTIPLE` and marked dynamic, so one compiled graph serves every batch size (per
    grad mode); outputs are tensors with the padded batch first and come back cut to N, as a tuple.
    ``bounded=True`` runs the batch in chunks of :data:`CHUNK_ROWS` rows, each padded to a
    multiple of :data:`CHUNK_PAD`, so that only a few batch sizes ever reach the
    compiled code (see :data:`CHUNK_ROWS`). If compilation fails (e.g. no C++ compiler, or more
    than :data:`RECOMPILE_LIMIT` graphs) ``fn`` runs eagerly from then on; the first such failure
    in the process logs one warning. Compiled code depends only on shapes and dtypes, so fields of
    one config share it.
    """

    _warned = False

    def __init__(self, fn: Callable[..., Tensor | tuple[Tensor, ...]], name: str):
        self.fn = fn
        self.name = name
        self._compiled: Callable[..., Tensor | tuple[Tensor, ...]] | None = None
        self.failed = False

    def _as_tuple(self, out: Tensor | tuple[Tensor, ...], n: int) -> tuple[Tensor, ...]:
        outs = (out,) if isinstance(out, Tensor) else tuple(out)
        return tuple(o[:n] for o in outs)

    def _fall_back(self, err: BaseException, batched: tuple[Tensor, ...], rest: tuple) -> tuple[Tensor, ...]:
        self.failed = True
        # One warning per process: the other compiled functions fail for the same reason.
        log = logger.debug if LazyCompile._warned else logger.warning
        LazyCompile._warned = True
        log("torch.compile failed for the %s; running it eagerly instead: %s", self.name, err)
        return self._as_tuple(self.fn(*batched, *rest), batched[0].shape[0])

    def __call__(
        self, batched: tuple[Tensor, ...], rest: tuple = (), bounded: bool = False
    ) -> tuple[Tensor, ...]:
        n = batched[0].shape[0]
        if self.failed or n == 0:
            return self._as_tuple(self.fn(*batched, *rest), n)
        if not bounded:
            return self._call(batched, rest, PAD_MULTIPLE)
        # split, not slices: its backward joins the chunks' gradients once, where every slice's
        # would write a zero tensor of the whole batch.
        pieces = [t.split(CHUNK_ROWS) for t in batched]
        parts = [self._call(chunk, rest, CHUNK_PAD) for chunk in zip(*pieces, strict=True)]
        return parts[0] if len(parts) == 1 else tuple(torch.cat(outs) for outs in zip(*parts, strict=True))

    def _call(self, batched: tuple[Tensor, ...], rest: tuple, multiple: int) -> tuple[Tensor, ...]:
        n = batched[0].shape[0]
        if self.failed:
            return self._as_tuple(self.fn(*batched, *rest), n)
        if self._compiled is None:
            try:
                self._compiled = torch.compile(self.fn, fullgraph=True)
            except RuntimeError as err:  # torch.compile unsupported on this Python / platform
                return self._fall_back(err, batched, rest)
        padded_n = -(-n // multiple) * multiple
        padded = tuple(_pad_rows(t, padded_n) for t in batched)
        for t in padded:
            torch._dynamo.mark_dynamic(t, 0)
        try:
            with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
                out = self._compiled(*padded, *rest)
        except _compile_errors() as err:
            return self._fall_back(err, batched, rest)
        return self._as_tuple(out, n)
