"""Importing real data: COLMAP models, raw drone photos (SfM with pycolmap) and Mill19 folders."""

from birdnerf.ingest.pipeline import ImportConfig, check_import, import_dataset
from birdnerf.ingest.report import ImportReport, SkippedPhoto
from birdnerf.ingest.sfm import SfmOptions

__all__ = ["ImportConfig", "ImportReport", "SfmOptions", "SkippedPhoto", "check_import", "import_dataset"]
