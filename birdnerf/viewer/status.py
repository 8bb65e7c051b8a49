"""Per-block training status and figures, read (never written) from a run's folders.

A viewer keeps running while the run trains, so an unreadable file here is shown as such in
the panel rather than raised: the viewer must not fall over because a figure is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from birdnerf import formats
from birdnerf.block import checkpoint as ckpt
from birdnerf.errors import BirdnerfError
from birdnerf.partition.manifest import Partition
from birdnerf.runlayout import RunLayout

DONE, PARTIAL, UNTRAINED, EMPTY = "done", "partial", "untrained", "empty"


@dataclass(frozen=True)
class BlockStatus:
    """What a block's folder says about it.

    Attributes:
        id: block id.
        status: ``done`` (``done.json``), ``partial`` (a checkpoint, no ``done.json``),
            ``untrained`` (nothing yet) or ``empty`` (too few photos to train).
        step: last logged training step, when any.
        loss, psnr: training loss (MSE) and PSNR (dB) of the last ``metrics.jsonl`` row.
        heldout_psnr, heldout_margin_db: held-out PSNR (dB) and its margin over the mean-colour
            baseline of the same pixels: the block's pixels of the test photos in ``eval.json``
            when the run was evaluated, else the block's own held-out pixels (``done.json``).
        heldout_source: ``eval`` or ``done`` (where the two figures come from), or None.
        problem: a file that could not be read, when one could not.
    """

    id: str
    status: str
    step: int | None = None
    loss: float | None = None
    psnr: float | None = None
    heldout_psnr: float | None = None
    heldout_margin_db: float | None = None
    heldout_source: str | None = None
    problem: str | None = None


def _read(path: Path, fmt: formats.Format) -> tuple[dict | None, str | None]:
    """A run file's record, or the one-line problem that stops it being read (shown in the panel)."""
    if not path.exists():
        return None, None
    try:
        return formats.read_record(path, fmt), None
    except BirdnerfError as err:
        return None, f"{path.name}: {err.message}"


def _last_metrics(path: Path) -> tuple[dict | None, str | None]:
    """The last complete row of ``metrics.jsonl`` (a torn last line, mid-write, is skipped)."""
    if not path.exists():
        return None, None
    try:
        rows = ckpt.read_jsonl(path)
    except BirdnerfError as err:
        return None, f"{path.name}: {err.message}"
    return (rows[-1] if rows else None), None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def block_statuses(run_dir: str | Path, partition: Partition) -> list[BlockStatus]:
    """The status and latest figures of every block of ``partition`` (its current revisions)."""
    run_dir = Path(run_dir)
    evaluation, eval_problem = _read(RunLayout(run_dir).eval, formats.EVAL)
    per_block = (evaluation or {}).get("per_block")
    per_block = per_block if isinstance(per_block, dict) else {}
    out = []
    for block in partition.blocks:
        folder = ckpt.block_dir(run_dir, block.id, block.revision)
        if not block.trainable:
            status = EMPTY
        elif (folder / "done.json").exists():
            status = DONE
        elif (folder / "checkpoint.pt").exists():
            status = PARTIAL
        else:
            status = UNTRAINED
        row, problem = _last_metrics(folder / "metrics.jsonl")
        row = row or {}
        figures, source = per_block.get(block.id), "eval"
        if not isinstance(figures, dict) or _number(figures.get("psnr")) is None:
            done, done_problem = (
                _read(folder / "done.json", formats.BLOCK_DONE) if status == DONE else (None, None)
            )
            figures, source, problem = (done or {}).get("quality"), "done", problem or done_problem
        figures = figures if isinstance(figures, dict) else {}
        step = row.get("step")
        out.append(
            BlockStatus(
                id=block.id,
                status=status,
                step=step if isinstance(step, int) else None,
                loss=_number(row.get("loss")),
                psnr=_number(row.get("psnr")),
                heldout_psnr=_number(figures.get("psnr")),
                heldout_margin_db=_number(figures.get("margin_db")),
                heldout_source=source if _number(figures.get("psnr")) is not None else None,
                problem=problem or eval_problem,
            )
        )
    return out


def _fmt(value: float | int | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def status_markdown(statuses: list[BlockStatus]) -> str:
    """A markdown table of the blocks for the viewer's panel."""
    counts = {s: sum(b.status == s for b in statuses) for s in (DONE, PARTIAL, UNTRAINED, EMPTY)}
    head = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
    lines = [
        f"**{len(statuses)} blocks**: {head}",
        "",
        "| block | status | step | loss | PSNR | held-out (margin) |",
        "|---|---|---|---|---|---|",
    ]
    mark = {"eval": "", "done": "*", None: ""}
    for b in statuses:
        margin = "" if b.heldout_margin_db is None else f" ({b.heldout_margin_db:+.1f})"
        lines.append(
            f"| {b.id} | {b.status} | {_fmt(b.step, 'd')} | {_fmt(b.loss, '.4f')} | "
            f"{_fmt(b.psnr, '.1f')} | {_fmt(b.heldout_psnr, '.1f')}{margin}{mark[b.heldout_source]} |"
        )
    lines += [
        "",
        "PSNR in dB: training (last logged step); held-out, over the mean colour of the same pixels",
    ]
    if any(b.heldout_source == "done" for b in statuses):
        lines.append("(* the block's own held-out pixels; `birdnerf eval` scores the composite)")
    problems = sorted({b.problem for b in statuses if b.problem})
    lines += [f"unreadable: {p}" for p in problems]
    return "\n".join(lines)
