"""What every built-in benchmark does the same way: pick experts, set up merger and space."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from bambo.errors import UnknownNameError
from bambo.merge import Merger, TaskVectors, get_merge_method
from bambo.partition import layer_differences_from_task_vectors, partition_layers
from bambo.space import MergeSpace


def select_task_vectors(
    base: Mapping[str, Tensor], experts: Mapping[str, Mapping[str, Tensor]], tasks: Sequence[str], kind: str
) -> TaskVectors:
    """Task vectors of the named experts, in the order given.

    Raises:
        UnknownNameError: A task has no expert; the message lists the experts.
    """
    for task in tasks:
        if task not in experts:
            raise UnknownNameError(f"{kind} expert", task, experts)
    return TaskVectors(base, [experts[t] for t in tasks], expert_names=list(tasks))


def merge_setup(
    tv: TaskVectors,
    method: str,
    granularity: str,
    partition: Sequence[Sequence[int]] | int,
    bounds: tuple[float, float],
    method_options: Mapping[str, object],
    partitioner: str = "uniform",
) -> tuple[Merger, MergeSpace]:
    """The merger of ``method`` and the space of ``granularity``, coefficients labelled by expert.

    Args:
        tv: Task vectors of the experts.
        method: Merge method name.
        granularity: ``model``, ``layer`` or ``block``.
        partition: Blocks (lists of layer indices) or a count K.
        bounds: Bounds of every coefficient.
        method_options: Options of the merge method.
        partitioner: With a count K: ``"uniform"`` blocks, or a DP partitioner of
            :func:`bambo.partition.partition_layers` (``"hybrid"`` is BAMBO's) applied
            to the experts' layer differences (p = 1).
    """
    if granularity == "block" and isinstance(partition, int) and partitioner != "uniform":
        diffs = layer_differences_from_task_vectors(tv)
        partition = [list(block) for block in partition_layers(diffs.l1, partition, partitioner)]
    merger = Merger(tv, get_merge_method(method, **method_options))
    n = merger.n_coefficients
    labels = tv.expert_names if n == tv.n_experts else [f"t{i}" for i in range(n)]
    return merger, MergeSpace.for_granularity(tv, granularity, n, partition, bounds, labels)
