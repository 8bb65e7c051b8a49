"""Point clouds and meshes of a trained run (open3d): fused from composited RGB-D renders of the
training viewpoints, block by block, in the run's world frame, the input frame or ENU."""

from birdnerf.export.frames import FRAMES, OutputFrame, output_frame
from birdnerf.export.score import Reference, SurfaceScore, reference_surface, score_points, surface_scores
from birdnerf.export.stage import ExportConfig, ExportSummary, export_run

__all__ = [
    "FRAMES",
    "ExportConfig",
    "ExportSummary",
    "OutputFrame",
    "Reference",
    "SurfaceScore",
    "export_run",
    "output_frame",
    "reference_surface",
    "score_points",
    "surface_scores",
]
