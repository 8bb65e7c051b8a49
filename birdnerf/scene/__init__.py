"""Photos, cameras, poses and the world frame; readers and writers of dataset formats."""

from birdnerf.scene.camera import Camera, camera_rays, pixel_centers, project
from birdnerf.scene.scene import Scene

__all__ = ["Camera", "Scene", "camera_rays", "pixel_centers", "project"]
