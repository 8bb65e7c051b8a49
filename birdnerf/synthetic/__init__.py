"""Procedural aerial sample scenes: a seeded site, a drone survey over it, exact ray casting.

The site (terrain parcels, roads, buildings, trees) is a deterministic function of a seed;
photos are rendered by exact ray casting with textures defined on world positions, so all
views agree; ground-truth z-depth is saved beside each photo. See :func:`generate_sample_scene`.
"""

from birdnerf.synthetic.generate import (
    PRESETS,
    VARIANTS,
    SamplePreset,
    check_output_dir,
    generate_sample_scene,
    resolve_preset,
)
from birdnerf.synthetic.layout import build_site
from birdnerf.synthetic.raycast import render_photo
from birdnerf.synthetic.site import Site, SiteConfig
from birdnerf.synthetic.survey import SurveyConfig, ground_footprint, plan_survey

__all__ = [
    "PRESETS",
    "VARIANTS",
    "SamplePreset",
    "Site",
    "SiteConfig",
    "SurveyConfig",
    "build_site",
    "check_output_dir",
    "generate_sample_scene",
    "ground_footprint",
    "plan_survey",
    "render_photo",
    "resolve_preset",
]
