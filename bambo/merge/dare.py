"""DARE (drop and rescale) combined with task arithmetic or with TIES."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor

from bambo.merge.base import MergeMethod
from bambo.merge.ops import Normalize, add_weighted_sum, drop_random, sign_consensus, tensor_generator


class _Dare(MergeMethod):
    drop_rate: float = Field(0.5, ge=0.0, lt=1.0)
    seed: int = 0

    def prepare(self, key: str, vectors: Tensor) -> Tensor:
        return torch.stack(
            [drop_random(v, self.drop_rate, tensor_generator(self.seed, key, i)) for i, v in enumerate(vectors)]
        )


class DareLinear(_Dare):
    """DARE + task arithmetic (Yu et al., 2024, Eq. 1-2 then Ilharco et al.).

    Each task-vector entry is dropped with probability ``drop_rate`` and the
    survivors are rescaled by ``1 / (1 - drop_rate)``, so the merge equals task
    arithmetic in expectation. Masks are drawn once per ``seed``, so one seed is
    one deterministic merge function of the coefficients.
    """

    name: ClassVar[str] = "dare_linear"

    def merge_tensor(self, base: Tensor, vectors: Tensor, coefficients: Tensor, out: Tensor | None = None) -> Tensor:
        return add_weighted_sum(base, vectors, coefficients, out=out)


class DareTies(_Dare):
    """DARE + TIES: random drop and rescale, then TIES sign election and disjoint merge."""

    name: ClassVar[str] = "dare_ties"
    normalize: Normalize = "count"

    def merge_tensor(self, base: Tensor, vectors: Tensor, coefficients: Tensor, out: Tensor | None = None) -> Tensor:
        return sign_consensus(vectors, coefficients, self.normalize, base=base, out=out)
