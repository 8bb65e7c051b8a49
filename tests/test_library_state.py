"""Importing birdnerf changes no global state a notebook relies on (here: matplotlib's backend)."""

import subprocess
import sys


def test_import_keeps_the_matplotlib_backend(tmp_path):
    code = (
        "import matplotlib; matplotlib.use('svg'); "
        "import birdnerf, birdnerf.partition, birdnerf.composite, birdnerf.eval, birdnerf.demo; "
        "import birdnerf.partition.plot, birdnerf.composite.outputs; "
        "print(matplotlib.get_backend())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert out.stdout.strip() == "svg", out.stdout + out.stderr


def test_partition_map_is_drawn_without_pyplot(tmp_path):
    code = (
        "import sys, matplotlib; matplotlib.use('svg'); "
        "from birdnerf.partition.plot import plot_partition; "
        "from birdnerf.composite.outputs import colorize_depth; import numpy as np; "
        "colorize_depth(np.ones((2, 2))); "
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert out.stdout.split() == ["svg", "False"], out.stdout + out.stderr
