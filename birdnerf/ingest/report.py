"""``import_report.json``: what an import used, skipped and measured."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from birdnerf import atomic

REPORT_FILE = "import_report.json"
REPORT_VERSION = 1


@dataclass
class SkippedPhoto:
    """A photo of the source that is not in the dataset, and why."""

    name: str
    reason: str


@dataclass
class ImportReport:
    """Summary of one ``birdnerf import``.

    Attributes:
        dataset: the dataset folder written.
        source: the folder imported.
        source_kind: "colmap", "images" or "mill19".
        photos_total: photos found in the source (files and model entries).
        photos_registered: photos in the dataset (posed).
        skipped: every photo left out, with its reason.
        frame: how the world frame was found: ``source`` is "gps" (ENU from EXIF GPS),
            "mill19_axes" (the dataset's own down axis) or "estimated" (up and ground from the
            cameras and points), with ``up``, ``ground`` and, when GPS was not used, ``reason``.
        gps: photos with GPS, photos used in the fit, RMS (3D, horizontal, vertical) and largest
            residual in metres, the photo with the largest residual, the scale (metres per input
            unit) and the geographic origin (WGS84 lat/lon in degrees, alt in metres).
        images: copies written and reused, and the downscale setting.
        sfm: for raw photos, the SfM settings, pairs matched and wall times in seconds.
        warnings: anything else worth knowing.
    """

    dataset: str
    source: str
    source_kind: str
    photos_total: int = 0
    photos_registered: int = 0
    skipped: list[SkippedPhoto] = field(default_factory=list)
    frame: dict = field(default_factory=dict)
    gps: dict = field(default_factory=dict)
    images: dict = field(default_factory=dict)
    sfm: dict | None = None
    warnings: list[str] = field(default_factory=list)

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append(SkippedPhoto(name, reason))

    @property
    def gps_rms_m(self) -> float | None:
        """RMS distance (metres) between aligned camera centres and GPS, when georeferenced."""
        return self.gps.get("rms_m")

    def to_dict(self) -> dict:
        data = {"version": REPORT_VERSION, **asdict(self)}
        data["skipped"] = sorted(data["skipped"], key=lambda s: s["name"])
        return data

    def write(self, folder: Path) -> Path:
        path = Path(folder) / REPORT_FILE
        atomic.write_json(path, self.to_dict())
        return path
