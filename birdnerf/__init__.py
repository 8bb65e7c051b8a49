"""birdnerf: large-scale aerial NeRF reconstruction.

Pipeline: photos + poses -> Scene -> Partition -> per-block training -> composite render.
"""

from birdnerf.errors import BirdnerfError

__version__ = "0.1.0"
__all__ = ["BirdnerfError", "__version__"]
