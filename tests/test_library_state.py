"""Importing birdnerf changes no global state a notebook relies on (matplotlib's backend), and
the stages restore every torch setting they change."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from birdnerf.torch_globals import TorchGlobals, keep_torch_globals

REPO = Path(__file__).resolve().parents[1]


def _fresh_python(code: str, cwd) -> list[str]:
    """Words printed by ``code`` run in a fresh interpreter that first picks the 'svg' backend."""
    code = "import sys, matplotlib; matplotlib.use('svg'); " + code
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env)
    assert out.returncode == 0, out.stderr
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


def test_keep_torch_globals_restores_every_setting():
    before = TorchGlobals.capture()
    threads = 1 if before.num_threads > 1 else 2
    try:
        with keep_torch_globals():
            torch.set_flush_denormal(not before.flush_denormal)
            torch.set_num_threads(threads)
            torch.set_grad_enabled(not before.grad_enabled)
            torch.use_deterministic_algorithms(
                not before.deterministic, warn_only=not before.deterministic_warn_only
            )
            torch.set_default_dtype(torch.float64)
            torch.manual_seed(1234)
            changed = TorchGlobals.capture()
            raise KeyError("an error inside still restores")
    except KeyError:
        pass
    # Every setting was changed inside (so the check below can fail) and is back outside.
    assert set(before.differences(changed)) == set(TorchGlobals.__dataclass_fields__) - {"cuda_rng_states"}
    assert before.differences(TorchGlobals.capture()) == []


_STAGES = """
import dataclasses, sys, torch
from pathlib import Path
from matplotlib.figure import Figure
from birdnerf.torch_globals import TorchGlobals
from birdnerf.train import RenderConfig
from tests.conftest import mini_train_config
import birdnerf
root = sys.argv[1]
data = birdnerf.sample_dataset(root + "/data")
corner = birdnerf.sample_dataset(root + "/corner", "changed")
brief = dataclasses.replace(mini_train_config(), steps=4, render=RenderConfig(occupancy_resolution=32))
run = root + "/run"
torch.set_num_threads(1)  # training sets its own thread count (all cores), so this one shows
torch.manual_seed(1234)
torch.rand(3)
changed = []
for name, call in [
    ("partition", lambda: birdnerf.partition_dataset(data, run, birdnerf.PartitionConfig(blocks=(1, 2)))),
    ("train", lambda: birdnerf.train_run(run, brief)),
    ("render", lambda: birdnerf.render_run(run)),
    ("eval", lambda: birdnerf.evaluate_run(run)),
    ("update", lambda: birdnerf.update_run(run, corner, birdnerf.UpdateOptions(steps=2))),
]:
    before = TorchGlobals.capture()
    call()
    changed += [f"{name}:{d}" for d in before.differences(TorchGlobals.capture())]
print(" ".join(changed) or "unchanged", torch.get_num_threads(), torch.rand(1).item() != 0)
files = sorted(Path(run).rglob("*"))
plots = birdnerf.plots
new_photo = birdnerf.load_scene(birdnerf.read_partition(run)).names[-1]
figures = [
    plots.partition_map(run),
    plots.block_metrics_map(run),
    plots.training_curves(run),
    plots.view_panel(run),
    plots.update_comparison(run, new_photo),
]
print(all(isinstance(f, Figure) and f.axes for f in figures), sorted(Path(run).rglob("*")) == files)
plots.view_panel(run, 0, save=root + "/view.svg")
print(matplotlib.get_backend(), Path(root, "view.svg").read_text().startswith("<?xml"))
"""


@pytest.mark.slow
def test_stages_keep_torch_globals_and_plots_keep_the_backend(tmp_path):
    """In a fresh interpreter (svg backend): partition, train, render, eval and update, called from
    ``birdnerf``, change no torch setting; every plot returns a Figure and writes nothing unless
    asked to save."""
    script = tmp_path / "stages.py"
    script.write_text(_STAGES)
    code = f"sys.argv = ['stages', {str(tmp_path)!r}]; exec(open({str(script)!r}).read())"
    assert _fresh_python(code, REPO) == ["unchanged", "1", "True", "True", "True", "svg", "True"]
