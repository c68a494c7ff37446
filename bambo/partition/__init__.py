"""Block partitioning of layers for block-wise merging (BAMBO Sec. 3.2)."""

from bambo.partition.differences import LayerDifferences, layer_differences, layer_differences_from_task_vectors
from bambo.partition.dp import (
    DEFAULT_LAMBDA,
    PARTITIONERS,
    Partition,
    block_cost,
    compare_partitioners,
    partition_layers,
    partition_terms,
)
from bambo.partition.plot import plot_partitions

__all__ = [
    "DEFAULT_LAMBDA",
    "PARTITIONERS",
    "LayerDifferences",
    "Partition",
    "block_cost",
    "compare_partitioners",
    "layer_differences",
    "layer_differences_from_task_vectors",
    "partition_layers",
    "partition_terms",
    "plot_partitions",
]
