"""The web viewer of a run (viser): cameras, block boxes, sparse points, orthophoto and live
composited renders of the browser's view. viser is imported only when a viewer starts."""

from birdnerf.viewer.camera import view_camera, viser_pose
from birdnerf.viewer.server import Viewer, ViewerConfig, serve

__all__ = ["Viewer", "ViewerConfig", "serve", "view_camera", "viser_pose"]
