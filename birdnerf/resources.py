"""Checking that what a command is asked to do fits the machine, before any of it is spent."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

from birdnerf.errors import BirdnerfError, free_space


@functools.cache
def cpu_info() -> dict[str, str]:
    """This CPU's model and instruction-set flags: the first ``model name``, ``flags`` (x86) or
    ``Features``/``CPU part`` (Arm) of ``/proc/cpuinfo``; elsewhere ``platform``'s machine and
    processor."""
    wanted = ("model name", "flags", "Features", "CPU part")
    found: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in wanted and key not in found:
                    found[key] = value.strip()
    except OSError:
        pass
    return found or {"machine": platform.machine(), "processor": platform.processor()}


def available_memory() -> int | None:
    """Bytes of memory the kernel says new work can use (``MemAvailable``); None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def size_text(n: float) -> str:
    """Bytes as MB, GB or TB (binary units), for messages."""
    if n >= 2**40:
        return f"{n / 2**40:.1f} TB"
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def shortfall(memory: int = 0, disk: int = 0, folder: str | Path | None = None) -> float:
    """The largest ratio of what is needed to what there is (memory available, disk free under
    ``folder``); at most 1 when both fit, 0 when neither is known."""
    ratios = [0.0]
    have = available_memory()
    if memory and have:
        ratios.append(memory / have)
    free = free_space(folder) if disk and folder is not None else None
    if disk and free:
        ratios.append(disk / free)
    return max(ratios)


def check_fits(
    what: str,
    *,
    memory: int = 0,
    disk: int = 0,
    folder: str | Path | None = None,
    hint: str = "",
    state_all: bool = False,
) -> None:
    """Refuse ``what`` (e.g. "rendering 1 frame of up to 16384x16384 px") with one line when the
    most ``memory`` it can take (bytes) exceeds what is available, or the most ``disk`` it writes
    under ``folder`` exceeds the free space there; ``hint`` says what to change. The line names
    the resources that do not fit, or with ``state_all`` both figures (when either does not)."""
    have = available_memory()
    free = free_space(folder) if disk and folder is not None else None
    short_memory = bool(memory and have is not None and memory > have)
    short_disk = bool(disk and free is not None and disk > free)
    if not (short_memory or short_disk):
        return
    problems = []
    if short_memory or (state_all and memory):
        problems.append(
            f"{size_text(memory)} of memory" + (f" ({size_text(have)} available)" if have else "")
        )
    if short_disk or (state_all and disk):
        problems.append(f"{size_text(disk)} of disk" + (f" ({size_text(free)} free there)" if free else ""))
    tail = f": {hint}" if hint else ""
    raise BirdnerfError(f"{what} needs up to {' and '.join(problems)}{tail}", folder)
