"""Checking that what a command is asked to do fits the machine, before any of it is spent."""

from __future__ import annotations

from pathlib import Path

from birdnerf.errors import BirdnerfError, free_space


def available_memory() -> int | None:
    """Bytes of memory the kernel says new work can use (``MemAvailable``); None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gb(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def check_fits(
    what: str, *, memory: int = 0, disk: int = 0, folder: str | Path | None = None, hint: str = ""
) -> None:
    """Refuse ``what`` (e.g. "rendering 1 frame of up to 16384x16384 px") with one line when the
    most ``memory`` it can take (bytes) exceeds what is available, or the most ``disk`` it writes
    under ``folder`` exceeds the free space there; ``hint`` says what to change."""
    problems = []
    have = available_memory()
    if memory and have is not None and memory > have:
        problems.append(f"{_gb(memory)} of memory ({_gb(have)} available)")
    free = free_space(folder) if disk and folder is not None else None
    if disk and free is not None and disk > free:
        problems.append(f"{_gb(disk)} of disk ({_gb(free)} free there)")
    if problems:
        tail = f": {hint}" if hint else ""
        raise BirdnerfError(f"{what} needs up to {' and '.join(problems)}{tail}", folder)
