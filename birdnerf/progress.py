"""One rich console and one progress helper for the whole package.

Library loops never print: they take an optional ``progress`` callback
``(done: int, total: int, info: dict) -> None``. The CLI passes :func:`bar` callbacks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
ProgressFn = Callable[[int, int, dict], None]


def bars() -> Progress:
    """A rich progress display with the package's columns; add one task per bar."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
    )


@contextlib.contextmanager
def bar(description: str, total: int | None = None) -> Iterator[ProgressFn]:
    """A progress bar; yields a callback that library loops call as ``progress(done, total, info)``.

    ``info`` values (loss, PSNR, rays/s ...) are shown after the bar.
    """
    progress = bars()
    with progress:
        task = progress.add_task(description, total=total, info="")

        def update(done: int, total_: int, info: dict | None = None) -> None:
            progress.update(task, completed=done, total=total_, info=format_info(info))

        yield update


def format_info(info: dict | None) -> str:
    """``{"psnr": 21.3, "photo": "a.png"}`` -> ``"psnr 21.3  photo a.png"``."""
    return "  ".join(f"{k} {_fmt(v)}" for k, v in (info or {}).items())


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)
