"""Importing birdnerf changes no global state a notebook relies on (here: matplotlib's backend)."""

import subprocess
import sys


def _fresh_python(code: str, cwd) -> list[str]:
    """Words printed by ``code`` run in a fresh interpreter that first picks the 'svg' backend."""
    code = "import sys, matplotlib; matplotlib.use('svg'); " + code
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=cwd)
    return out.stdout.split()


def test_import_keeps_the_matplotlib_backend(tmp_path):
    imports = "import birdnerf, birdnerf.partition, birdnerf.composite, birdnerf.eval, birdnerf.demo; "
    assert _fresh_python(imports + "print(matplotlib.get_backend())", tmp_path) == ["svg"]


def test_colour_maps_and_maps_need_no_pyplot(tmp_path):
    code = (
        "from birdnerf.partition.plot import plot_partition; import numpy as np; "
        "from birdnerf.composite.outputs import colorize_depth; colorize_depth(np.ones((2, 2))); "
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)"
    )
    assert _fresh_python(code, tmp_path) == ["svg", "False"]
