"""Procedural aerial sample scenes: a seeded site, a drone survey over it, exact ray casting.

The site (terrain, parcels, roads, buildings, trees) is a deterministic function of a seed;
photos are rendered by exact ray casting with textures defined on world positions, so all
views agree; ground-truth z-depth is saved beside each photo. See :func:`generate_sample_scene`,
and :func:`load_site` / :func:`above_ground_mask` to score depth against the world model.
"""

from birdnerf.synthetic.drone_photos import write_drone_photos
from birdnerf.synthetic.generate import VARIANTS, check_output_dir, generate_sample_scene
from birdnerf.synthetic.layout import build_site
from birdnerf.synthetic.presets import PRESETS, SamplePreset, describe_preset, resolve_preset
from birdnerf.synthetic.raycast import render_photo
from birdnerf.synthetic.shipped import SAMPLE_DATA, SAMPLE_SEED, sample_dataset, shipped_sample
from birdnerf.synthetic.site import Site, SiteConfig
from birdnerf.synthetic.survey import SurveyConfig, ground_footprint, plan_survey
from birdnerf.synthetic.terrain import Terrain
from birdnerf.synthetic.truth import above_ground_mask, load_site, world_points

__all__ = [
    "PRESETS",
    "SAMPLE_DATA",
    "SAMPLE_SEED",
    "VARIANTS",
    "SamplePreset",
    "Site",
    "SiteConfig",
    "SurveyConfig",
    "Terrain",
    "above_ground_mask",
    "build_site",
    "check_output_dir",
    "describe_preset",
    "generate_sample_scene",
    "ground_footprint",
    "load_site",
    "plan_survey",
    "render_photo",
    "resolve_preset",
    "sample_dataset",
    "shipped_sample",
    "world_points",
    "write_drone_photos",
]
