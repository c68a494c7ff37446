"""Merge methods over PyTorch state dicts.

Typical use::

    tv = TaskVectors(base, [expert_a, expert_b])
    merger = Merger(tv, get_merge_method("ties", density=0.2))
    merged = merger.merge(torch.tensor([0.7, 0.3]))
"""

from bambo.merge.base import MergeMethod
from bambo.merge.merger import Coefficients, Merger
from bambo.merge.registry import MERGE_METHODS, available_merge_methods, get_merge_method
from bambo.merge.task_vectors import StateDict, TaskVectors, buffer_names

__all__ = [
    "MERGE_METHODS",
    "Coefficients",
    "MergeMethod",
    "Merger",
    "StateDict",
    "TaskVectors",
    "available_merge_methods",
    "buffer_names",
    "get_merge_method",
]
