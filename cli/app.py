"""The ``birdnerf`` Typer app and :func:`run`, which every command module uses.

Commands register on ``app`` when :mod:`birdnerf_cli.main` imports them; this module imports none
of them, so any command module can be imported on its own.
"""

from __future__ import annotations

import typer

from birdnerf.errors import BirdnerfError, file_system_error
from birdnerf.progress import console

app = typer.Typer(
    name="birdnerf",
    help="Large-scale aerial NeRF: partition a drone survey into blocks, train one hash-grid "
    "NeRF per block, and render novel views by projection-guided compositing.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
state = {"debug": False}


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    state["debug"] = debug


def run(fn, *args, **kwargs):
    """Call a library function; turn a :class:`BirdnerfError` or a file-system error into one red
    line and exit 1 (``--debug`` keeps the traceback)."""
    try:
        return fn(*args, **kwargs)
    except BirdnerfError as err:
        if state["debug"]:
            raise
        console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except OSError as err:  # a file-system error no stage turned into a BirdnerfError
        if state["debug"]:
            raise
        line = file_system_error(err, err.filename or "(no file named)", "using")
        console.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
