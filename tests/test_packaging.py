"""The installed layout is the tree's, and every module imports on its own (no import cycles)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parents[1]

# Imports each module with no birdnerf module loaded before it (third-party modules stay cached, so
# this takes seconds, not a fresh interpreter per module): a cycle fails as it would for a user
# whose first import is that module.
_ALONE = """
import importlib, pkgutil, sys, traceback
import birdnerf, birdnerf_cli
names = ["birdnerf", "birdnerf_cli"]
for pkg in (birdnerf, birdnerf_cli):
    names += [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
failed = 0
for name in sorted(set(names) - {"birdnerf_cli.__main__"}):
    for loaded in [m for m in sys.modules if m.split(".")[0] in ("birdnerf", "birdnerf_cli")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed += 1
        print(f"FAILED {name}: {traceback.format_exc().strip().splitlines()[-1]}")
print(f"imported {len(names) - failed} of {len(names)}")
"""


def test_every_module_imports_on_its_own():
    result = subprocess.run(
        [sys.executable, "-c", _ALONE], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert "FAILED" not in result.stdout, result.stdout
    assert "imported" in result.stdout


def test_pyproject_lists_every_package_of_the_tree():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(config["packages"])
    tree = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "birdnerf").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert tree | {"birdnerf_cli"} == listed
    assert config["package-dir"]["birdnerf_cli"] == "cli" and (ROOT / "cli" / "__init__.py").is_file()
    for package, patterns in config.get("package-data", {}).items():
        folder = ROOT.joinpath(*package.split("."))
        for pattern in patterns:
            assert list(folder.glob(pattern)), f"{package}: no file matches {pattern}"


def test_license_file_matches_the_declared_license():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"]["text"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8")[:200]


# Each package imports only packages of a lower rank (its own modules aside): the pipeline's order.
RANKS = {
    **dict.fromkeys(["errors", "runlayout"], 0),
    **dict.fromkeys(["atomic", "progress", "torch_globals", "device", "resources"], 1),
    **dict.fromkeys(["runlock", "formats", "kernels"], 2),
    "scene": 3,
    "geo": 4,
    **dict.fromkeys(["synthetic", "ingest", "partition", "field", "render"], 5),
    "block": 6,
    **dict.fromkeys(["train", "composite"], 7),
    "eval": 8,
    "update": 9,
    **dict.fromkeys(["export", "ortho"], 10),
    **dict.fromkeys(["viewer", "plots", "demo"], 11),
    "__init__": 12,
}
LEAVES = {"birdnerf.eval.metrics"}
"""Modules that import nothing of birdnerf, so that any layer may use them (training scores its
blocks with the image metrics)."""


def _birdnerf_imports(path: Path) -> set[str]:
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.split(".")[0] == "birdnerf" and m != "birdnerf"}


def test_no_package_imports_a_higher_layer():
    bad = []
    for path in sorted((ROOT / "birdnerf").rglob("*.py")):
        parts = path.relative_to(ROOT / "birdnerf").with_suffix("").parts
        name = "birdnerf." + ".".join(parts)
        imports = _birdnerf_imports(path)
        if name in LEAVES:
            bad += [f"{name} (a leaf) imports {m}" for m in imports]
            continue
        for module in imports:
            target = module.split(".")[1]
            if target == parts[0] or any(module == f or module.startswith(f + ".") for f in LEAVES):
                continue  # its own package, or a leaf
            if RANKS[target] >= RANKS[parts[0]]:
                bad.append(f"{name} imports {module}")
    unranked = {p.name.removesuffix(".py") for p in (ROOT / "birdnerf").iterdir()} - set(RANKS)
    assert not {u for u in unranked if not u.startswith((".", "__")) and u != "py.typed"}, unranked
    assert not bad, "\n".join(bad)


def test_the_run_layout_is_spelled_in_one_place():
    """No module but ``runlayout.py`` spells a run file's name or joins a run folder's: they ask
    :class:`birdnerf.runlayout.RunLayout`."""
    import ast

    from birdnerf import runlayout

    names = {runlayout.MANIFEST, runlayout.STAGED, runlayout.EVAL, runlayout.LOCK}
    folders = {runlayout.HISTORY, runlayout.RENDERS, runlayout.BLOCKS, runlayout.ORTHO}
    found = []
    for path in sorted((ROOT / "birdnerf").rglob("*.py")):
        if path.name == "runlayout.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
            joined = isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)  # run_dir / "history"
            if joined and isinstance(node.right, ast.Constant) and node.right.value in folders:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} / {node.right.value!r}")
    assert not found, "\n".join(found)
