"""True orthophotos and digital surface models of a trained run, as Cloud-Optimized GeoTIFFs."""

from birdnerf.ortho.stage import OrthoConfig, OrthoResult, render_ortho

__all__ = ["OrthoConfig", "OrthoResult", "render_ortho"]
