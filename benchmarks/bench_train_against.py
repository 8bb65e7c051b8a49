"""Time to PSNR of this checkout against an earlier revision, end to end, back to back.

Run ``python benchmarks/bench_train_against.py`` (about 3 minutes on 2 idle cores). The earlier
revision (``--against``, by default the last one before the fused CPU backend: compiled torch
backend, dense Adam, every drawn ray marched) is checked out into a temporary git worktree; each
revision then runs its own ``benchmarks/bench_train.py --skip comparison`` in a fresh process,
on its own copy of the ``small`` sample scene, partitioned by its own code. The table prints both
runs' training seconds and held-out PSNR per evaluation, the seconds to each target and their
ratio (earlier / this checkout). Needs git and a clone with the earlier revision.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEFORE_FUSED = "027e5fe"
"""The last revision before the fused CPU backend, lazy Adam and budget-sized ray draws."""

ROW = re.compile(r"^\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s*$")
TARGET = re.compile(r"^\s+([\d.]+) dB: ")


def run_bench(checkout: Path, out: Path, args: list[str], log: Path) -> str:
    """Run ``checkout``'s bench_train.py with its own package first on the path; its output."""
    env = dict(os.environ, PYTHONPATH=str(checkout), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, str(checkout / "benchmarks" / "bench_train.py"), "--skip", "comparison"]
    cmd += ["--out", str(out), *args]
    result = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise SystemExit(f"bench_train.py failed in {checkout} (log {log}):\n" + "\n".join(tail))
    return result.stdout


def parse(output: str) -> tuple[dict[int, tuple[float, float]], dict[float, tuple[float, int]]]:
    """(step -> (training s, PSNR)), (target dB -> (s, step) of the first evaluation at or above
    it) from bench_train's printout."""
    lines = output.splitlines()
    rows = {int(m[1]): (float(m[2]), float(m[3])) for line in lines if (m := ROW.match(line))}
    targets = {}
    for target in (float(m[1]) for line in lines if (m := TARGET.match(line))):
        reached = [step for step in sorted(rows) if rows[step][1] >= target]
        if reached:
            targets[target] = (rows[reached[0]][0], reached[0])
    return rows, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default=BEFORE_FUSED, help="git revision to compare with")
    parser.add_argument("--keep", type=Path, help="keep both runs' scenes and logs in this folder")
    args, passed = parser.parse_known_args()

    with tempfile.TemporaryDirectory(prefix="birdnerf_against_") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        earlier = Path(tmp) / "earlier"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(earlier), args.against],
            check=True,
            capture_output=True,
        )
        try:
            print(f"earlier revision {args.against}: training ...", flush=True)
            old = parse(run_bench(earlier, work / "earlier_scene", passed, work / "earlier.log"))
            print("this checkout: training ...", flush=True)
            new = parse(run_bench(ROOT, work / "this_scene", passed, work / "this.log"))
        finally:
            remove = ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(earlier)]
            subprocess.run(remove, check=False)

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\nsmall scene, bench_train.py {' '.join(passed) or '(defaults)'}; load average at the end {load}")
    print(f"{'step':>6} {'earlier s':>10} {'earlier dB':>11} {'this s':>8} {'this dB':>8}")
    for step in sorted(set(old[0]) | set(new[0])):
        a, b = old[0].get(step, (float("nan"),) * 2), new[0].get(step, (float("nan"),) * 2)
        print(f"{step:>6} {a[0]:>10.1f} {a[1]:>11.2f} {b[0]:>8.1f} {b[1]:>8.2f}")
    for target in sorted(set(old[1]) | set(new[1])):
        a, b = old[1].get(target), new[1].get(target)
        if a and b:
            print(
                f"{target:g} dB: earlier {a[0]:.1f} s (step {a[1]}), this {b[0]:.1f} s (step {b[1]}): "
                f"{a[0] / b[0]:.2f}x faster"
            )
        else:
            print(f"{target:g} dB: earlier {a or 'not reached'}, this {b or 'not reached'}")


if __name__ == "__main__":
    main()
