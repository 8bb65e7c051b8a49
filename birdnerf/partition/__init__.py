"""Bird-view partition: photo footprints, a balanced block grid with overlaps, the manifest."""

from birdnerf.partition.footprint import Footprints, compute_footprints
from birdnerf.partition.manifest import Block, Partition, PartitionConfig, read_partition, write_partition
from birdnerf.partition.partition import load_scene, partition_dataset, partition_scene

__all__ = [
    "Block",
    "Footprints",
    "Partition",
    "PartitionConfig",
    "compute_footprints",
    "load_scene",
    "partition_dataset",
    "partition_scene",
    "read_partition",
    "write_partition",
]
