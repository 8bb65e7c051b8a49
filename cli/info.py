"""``birdnerf info``: a run's datasets, blocks and version history."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from birdnerf.progress import console
from birdnerf.update import run_info
from birdnerf_cli.app import app, run


@app.command("info")
def info_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the information as JSON."),
) -> None:
    """Show a run's current version, datasets, blocks and the history of its updates."""
    info = run(run_info, run_dir)
    if as_json:
        print(json.dumps(info, indent=2))
        return
    console.print(f"[bold]{info['run']}[/]: version {info['version']}", highlight=False)
    for path in info["datasets"]:
        console.print(f"  dataset {path}", highlight=False)
    blocks = Table("block", "photos", "test", "version", "status", title="Blocks")
    for b in info["blocks"]:
        blocks.add_row(b["id"], str(b["images"]), str(b["test_images"]), str(b["revision"]), b["status"])
    console.print(blocks)
    history = Table("version", "time (UTC)", "change", "seconds", title="History")
    for h in info["history"]:
        mark = " (current)" if h["version"] == info["version"] else ""
        seconds = "" if h["seconds"] is None else f"{h['seconds']:.0f}"
        history.add_row(f"{h['version']}{mark}", h["time"] or "", h["summary"], seconds)
    console.print(history)
    if info["interrupted_update"]:
        console.print("[yellow]an interrupted update is staged: run the same update again to finish it[/]")
