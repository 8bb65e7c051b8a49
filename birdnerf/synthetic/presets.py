"""Named sample scenes: flat sites of three sizes, and a harder hilly one."""

from __future__ import annotations

from dataclasses import dataclass, field

from birdnerf.errors import BirdnerfError
from birdnerf.synthetic.site import SiteConfig
from birdnerf.synthetic.survey import SurveyConfig


@dataclass(frozen=True)
class SamplePreset:
    """A named combination of site and survey settings."""

    name: str
    site: SiteConfig = field(default_factory=SiteConfig)
    survey: SurveyConfig = field(default_factory=SurveyConfig)
    points_per_photo: int = 64
    """Sparse points sampled from each training photo's ground-truth depth."""
    write_points: bool = True
    """Write ``points.npz`` and reference it and the depth maps from ``transforms.json``. With
    False the dataset reads as plain posed photos; the depth maps are still written for scoring."""


# The hills scene: the small scene's survey over ground far from z = 0, with rolling hills,
# towers, irregular tree crowns and per-photo exposure and white balance.
HILLS_GROUND_Z_M = 37.0
"""Mean height of the ground, world z (metres)."""
HILLS_RELIEF_M = 12.0
"""Peak-to-peak height of the hills across the site (metres)."""
HILLS_WAVELENGTH_M = 180.0
"""Typical distance between hilltops (metres): steepest slopes about 0.2 (at most 0.25)."""
HILLS_CROWN_LOBES = 3
HILLS_TOWER_FRACTION = 0.1
HILLS_TOWER_HEIGHT_M = 34.0
HILLS_EXPOSURE_JITTER = 0.07
"""Standard deviation of each photo's log2 exposure gain."""
HILLS_WHITE_BALANCE_JITTER = 0.02
"""Standard deviation of each photo's per-channel gain."""

# The survey committed in sample_data/ (a few MB): narrow photos (64 x 48 px, 40 m x 30 m
# footprints, 0.62 m per pixel) over a 150 m site, so that a 3 x 3 grid of blocks has ~40 photos
# each and the changed corner (35 m) reaches only the blocks around it.
SAMPLE = SamplePreset(
    "sample",
    SiteConfig(extent_m=150.0, change_corner_m=35.0),
    SurveyConfig(width=64, height=48, focal_px=96.0),
    points_per_photo=100,
)

# The others share the camera, altitude and overlaps; only the site's extent differs. Photos are 22.5 m
# apart along and between lines: small is 9 x 9 photos (about 2 x 2 blocks of ~20 training
# photos), medium 15 x 15 (about 3 x 3 blocks), large 39 x 39 (about 8 x 8 blocks, 22x the area).
# hills has small's extent and flight, 60 m above its mean ground.
PRESETS = {
    "sample": SAMPLE,
    "small": SamplePreset("small", SiteConfig(extent_m=180.0)),
    "medium": SamplePreset("medium", SiteConfig(extent_m=315.0)),
    "large": SamplePreset("large", SiteConfig(extent_m=855.0)),
    "hills": SamplePreset(
        "hills",
        SiteConfig(
            extent_m=180.0,
            ground_z_m=HILLS_GROUND_Z_M,
            terrain_relief_m=HILLS_RELIEF_M,
            terrain_wavelength_m=HILLS_WAVELENGTH_M,
            crown_lobes=HILLS_CROWN_LOBES,
            tower_fraction=HILLS_TOWER_FRACTION,
            tower_height_m=HILLS_TOWER_HEIGHT_M,
        ),
        SurveyConfig(exposure_jitter=HILLS_EXPOSURE_JITTER, white_balance_jitter=HILLS_WHITE_BALANCE_JITTER),
    ),
}


def resolve_preset(scene: str | SamplePreset) -> SamplePreset:
    """The preset named ``scene`` (a key of :data:`PRESETS`), or ``scene`` itself."""
    if isinstance(scene, SamplePreset):
        return scene
    if scene not in PRESETS:
        raise BirdnerfError(f"unknown sample scene {scene!r} (choose from {', '.join(PRESETS)})")
    return PRESETS[scene]


def describe_preset(preset: SamplePreset) -> str:
    """One line about a preset: its extent, its ground, and what makes it harder than flat land."""
    site, survey = preset.site, preset.survey
    parts = [f"{site.extent_m:.0f} m x {site.extent_m:.0f} m"]
    if site.terrain_relief_m > 0:
        parts.append(f"hills of {site.terrain_relief_m:.0f} m relief around z = {site.ground_z_m:.0f} m")
    elif site.ground_z_m != 0.0:
        parts.append(f"flat ground at z = {site.ground_z_m:.0f} m")
    if site.tower_fraction > 0:
        parts.append(f"{site.tower_fraction:.0%} towers up to {site.tower_height_m:.0f} m")
    if site.crown_lobes > 1:
        parts.append(f"{site.crown_lobes}-lobed tree crowns")
    if survey.exposure_jitter > 0 or survey.white_balance_jitter > 0:
        parts.append("per-photo exposure and white balance")
    if not preset.write_points:
        parts.append("no sparse points")
    return ", ".join(parts)
