"""Choosing the field backend once, and compiling fast paths lazily with an eager fallback.

Backends (all read a hash table of the same shape, except ``tcnn`` whose layout is its own):

- ``torch``: readable eager reference implementation; any device.
- ``compiled``: the same parameters run through ``torch.compile`` (Inductor).
- ``fused``: the same parameters through a C++/OpenMP kernel (:mod:`birdnerf.field.fused`), built
  on first use; the fast CPU path. Where it cannot be built, ``compiled`` runs instead.
- ``tcnn``: tiny-cuda-nn's fused CUDA hash grid; CUDA only, half precision inside.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch
from torch import Tensor

logger = logging.getLogger("birdnerf.field")

BACKENDS = ("torch", "compiled", "fused", "tcnn")
PAD_MULTIPLE = 1024
"""Compiled calls pad the batch to a multiple of this (zeros), so sizes 0 and 1 never reach the
compiler (it specialises them) and vector loops have no ragged tail."""


def _compile_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the compiler could not build this", as opposed to bad inputs."""
    from torch._dynamo.exc import BackendCompilerFailed

    errors: list[type[BaseException]] = [BackendCompilerFailed]
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


def _pad_rows(t: Tensor, n: int) -> Tensor:
    if t.shape[0] == n:
        return t
    return torch.cat([t, t.new_zeros((n - t.shape[0], *t.shape[1:]))])


class LazyCompile:
    """``fn`` compiled by ``torch.compile`` at its first call, with batch padding and eager fallback.

    Call as ``lazy(batched, rest)``: ``batched`` is a tuple of tensors sharing the leading batch size
    N, ``rest`` the other arguments (parameters, constants). The batch is zero-padded to a multiple
    of :data:`PAD_MULTIPLE` and marked dynamic, so one compiled graph serves every batch size (per
    grad mode); outputs are tensors with the padded batch first and come back cut to N, as a tuple.
    If compilation fails (e.g. no C++ compiler) ``fn`` runs eagerly from then on; the first such
    failure in the process logs one warning. Compiled code depends only on shapes and dtypes, so
    fields of one config share it.
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

    def __call__(self, batched: tuple[Tensor, ...], rest: tuple = ()) -> tuple[Tensor, ...]:
        n = batched[0].shape[0]
        if self.failed or n == 0:
            return self._as_tuple(self.fn(*batched, *rest), n)
        if self._compiled is None:
            try:
                self._compiled = torch.compile(self.fn, fullgraph=True)
            except RuntimeError as err:  # torch.compile unsupported on this Python / platform
                return self._fall_back(err, batched, rest)
        padded_n = -(-n // PAD_MULTIPLE) * PAD_MULTIPLE
        padded = tuple(_pad_rows(t, padded_n) for t in batched)
        for t in padded:
            torch._dynamo.mark_dynamic(t, 0)
        try:
            out = self._compiled(*padded, *rest)
        except _compile_errors() as err:
            return self._fall_back(err, batched, rest)
        return self._as_tuple(out, n)
