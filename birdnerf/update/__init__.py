"""Scene updates: new photos retrain only the blocks they touch; versioned manifests, rollback."""

from birdnerf.update.info import run_info
from birdnerf.update.plan import UpdatePlan, plan_update
from birdnerf.update.update import UpdateOptions, prepare_update, update_run
from birdnerf.update.versions import commit, list_versions, rollback

__all__ = [
    "UpdateOptions",
    "UpdatePlan",
    "commit",
    "list_versions",
    "plan_update",
    "prepare_update",
    "rollback",
    "run_info",
    "update_run",
]
