"""birdnerf: large-scale aerial NeRF reconstruction.

Pipeline: photos + poses -> Scene -> Partition -> per-block training -> composite render.

One entry point per stage, importable from here (each loads its sub-package on first use, so
``import birdnerf`` stays cheap and changes no global state)::

    sample_dataset(out, variant)          the survey in sample_data/ (or generate_sample_scene)
    import_dataset(src, out, config)      raw drone photos / COLMAP / Mill19 -> dataset
    load_dataset(path)                    a dataset -> Scene
    partition_dataset(data, run, config)  -> (Partition, Scene); RUN/partition.json
    train_run(run, TrainConfig())         train every block; RUN/blocks/<id>/
    render_run(run, split="test")         composite views; RUN/renders/
    evaluate_run(run)                     held-out PSNR/SSIM; RUN/eval.json
    render_ortho(run, OrthoConfig())      true orthophoto + DSM as COGs; RUN/ortho/
    export_run(run, points=, mesh=, config=ExportConfig())  point cloud / mesh PLYs (open3d)
    update_run(run, data, UpdateOptions())  retrain the blocks new photos touch; rollback(run, N)
    run_info(run)                         datasets, blocks and versions of a run
    run_demo(out, DemoConfig())           all of the above on a sample scene
    serve(run, ViewerConfig())            the web viewer of a run (viser); returns a Viewer
    plots                                 matplotlib Figures of each stage (birdnerf.plots)

The stages that train or render restore every torch setting they change
(:func:`birdnerf.torch_globals.keep_torch_globals`).
"""

from __future__ import annotations

import importlib
from typing import Any

from birdnerf.errors import BirdnerfError

__version__ = "0.1.0"

_LAZY = {
    "sample_dataset": "birdnerf.synthetic",
    "generate_sample_scene": "birdnerf.synthetic",
    "import_dataset": "birdnerf.ingest",
    "ImportConfig": "birdnerf.ingest",
    "load_dataset": "birdnerf.scene.load",
    "partition_dataset": "birdnerf.partition",
    "PartitionConfig": "birdnerf.partition",
    "read_partition": "birdnerf.partition",
    "load_scene": "birdnerf.partition",
    "train_run": "birdnerf.train",
    "TrainConfig": "birdnerf.train",
    "RayOptions": "birdnerf.train",
    "render_run": "birdnerf.composite",
    "render_view": "birdnerf.composite",
    "evaluate_run": "birdnerf.eval",
    "render_ortho": "birdnerf.ortho",
    "OrthoConfig": "birdnerf.ortho",
    "export_run": "birdnerf.export",
    "ExportConfig": "birdnerf.export",
    "update_run": "birdnerf.update",
    "UpdateOptions": "birdnerf.update",
    "rollback": "birdnerf.update",
    "run_info": "birdnerf.update",
    "run_demo": "birdnerf.demo",
    "DemoConfig": "birdnerf.demo",
    "keep_torch_globals": "birdnerf.torch_globals",
    "serve": "birdnerf.viewer",
    "ViewerConfig": "birdnerf.viewer",
}
_SUBMODULES = {"plots"}

__all__ = ["BirdnerfError", "__version__", *_LAZY, *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"birdnerf.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'birdnerf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
