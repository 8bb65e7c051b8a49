"""Torch's process-wide settings, saved and restored around the stages that change them.

Training flushes denormal floats, seeds torch's global generator and sets the thread count; a
notebook that trains a block and then goes on with its own work must find them as they were.
:func:`keep_torch_globals` (a context manager, also usable as a decorator) restores every one of
them on the way out, errors included.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch


def flush_denormal_enabled() -> bool:
    """Whether torch flushes denormal floats to zero on this thread (torch has no getter)."""
    return torch.tensor([1e-323], dtype=torch.float64).item() == 0.0


@dataclass(frozen=True)
class TorchGlobals:
    """A snapshot of the torch settings birdnerf's stages may touch."""

    flush_denormal: bool
    num_threads: int
    grad_enabled: bool
    deterministic: bool
    deterministic_warn_only: bool
    default_dtype: torch.dtype
    cpu_rng_state: torch.Tensor
    cuda_rng_states: tuple[torch.Tensor, ...]
    """Empty unless CUDA was initialised when the snapshot was taken."""

    @classmethod
    def capture(cls) -> TorchGlobals:
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        return cls(
            flush_denormal=flush_denormal_enabled(),
            num_threads=torch.get_num_threads(),
            grad_enabled=torch.is_grad_enabled(),
            deterministic=torch.are_deterministic_algorithms_enabled(),
            deterministic_warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
            default_dtype=torch.get_default_dtype(),
            cpu_rng_state=torch.get_rng_state(),
            cuda_rng_states=tuple(torch.cuda.get_rng_state_all()) if cuda else (),
        )

    def restore(self) -> None:
        """Put every setting back as it was captured."""
        torch.set_flush_denormal(self.flush_denormal)
        if torch.get_num_threads() != self.num_threads:
            torch.set_num_threads(self.num_threads)
        torch.set_grad_enabled(self.grad_enabled)
        torch.use_deterministic_algorithms(self.deterministic, warn_only=self.deterministic_warn_only)
        torch.set_default_dtype(self.default_dtype)
        torch.set_rng_state(self.cpu_rng_state)
        if self.cuda_rng_states:
            torch.cuda.set_rng_state_all(self.cuda_rng_states)

    def differences(self, other: TorchGlobals) -> list[str]:
        """Names of the settings that differ between two snapshots (empty when all agree)."""
        names = []
        for name in self.__dataclass_fields__:
            a, b = getattr(self, name), getattr(other, name)
            if isinstance(a, torch.Tensor):
                same = torch.equal(a, b)
            elif name == "cuda_rng_states":
                same = len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
            else:
                same = a == b
            if not same:
                names.append(name)
        return names


@contextlib.contextmanager
def keep_torch_globals() -> Iterator[TorchGlobals]:
    """Restore torch's global settings (see :class:`TorchGlobals`) when the block or call ends.

    Use as ``with keep_torch_globals(): ...`` or as the decorator ``@keep_torch_globals()``.
    """
    saved = TorchGlobals.capture()
    try:
        yield saved
    finally:
        saved.restore()
