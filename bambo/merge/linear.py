"""Task arithmetic and linear (weighted-average) merging."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from bambo.errors import BoundsError
from bambo.merge.base import MergeMethod
from bambo.merge.ops import add_weighted_sum


class TaskArithmetic(MergeMethod):
    """Task arithmetic (Ilharco et al., 2023): ``theta = theta_base + sum_i c_i tau_i``.

    The scaling coefficients ``c`` are exactly MAP's ``c`` (MAP Sec. 3,
    ``theta_m(c) = theta_pre + V c``).
    """

    name: ClassVar[str] = "task_arithmetic"
    elementwise: ClassVar[bool] = True

    def merge_tensor(self, base: Tensor, vectors: Tensor, coefficients: Tensor, out: Tensor | None = None) -> Tensor:
        return add_weighted_sum(base, vectors, coefficients, out=out)


class Linear(MergeMethod):
    """Weighted average of the experts: ``theta = sum_i w_i theta_i / sum_i w_i``.

    Equals task arithmetic with coefficients normalised to sum to one. Weights
    must be non-negative; all-zero weights give the base model (the average is
    undefined there, so the merge is discontinuous at zero).

    Raises:
        BoundsError: A weight is negative.
    """

    name: ClassVar[str] = "linear"
    elementwise: ClassVar[bool] = True

    def merge_tensor(self, base: Tensor, vectors: Tensor, coefficients: Tensor, out: Tensor | None = None) -> Tensor:
        if (coefficients < 0).any():
            raise BoundsError(f"linear merging needs non-negative weights, got {coefficients.tolist()}")
        total = float(coefficients.sum())
        if total == 0.0:
            return base.clone() if out is None else out.copy_(base)
        return add_weighted_sum(base, vectors, coefficients / total, out=out)
