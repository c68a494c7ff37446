"""What every built-in benchmark does the same way: pick the experts to merge."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from bambo.errors import UnknownNameError
from bambo.merge import TaskVectors


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
