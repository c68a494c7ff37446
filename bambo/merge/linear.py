"""Task arithmetic and linear (weighted-average) merging."""

from __future__ import annotations

from typing import ClassVar

import torch
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

    def weights(self, coefficients: Tensor) -> Tensor:
        return coefficients

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

    def weights(self, coefficients: Tensor) -> Tensor:
        """``c / sum(c)``; all zeros (the base) when every weight is zero.

        Raises:
            BoundsError: A weight is negative.
        """
        if (coefficients < 0).any():
            raise BoundsError(f"linear merging needs non-negative weights, got {coefficients.tolist()}")
        total = float(coefficients.sum())
        return coefficients / total if total != 0.0 else torch.zeros_like(coefficients)

    def merge_tensor(self, base: Tensor, vectors: Tensor, coefficients: Tensor, out: Tensor | None = None) -> Tensor:
        return add_weighted_sum(base, vectors, self.weights(coefficients), out=out)
