"""Model Breadcrumbs: mask both tails of each task vector, then task arithmetic."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field, model_validator
from torch import Tensor

from bambo.errors import ConfigError
from bambo.merge.base import MergeMethod
from bambo.merge.ops import add_weighted_sum, mask_outliers


class Breadcrumbs(MergeMethod):
    """Model Breadcrumbs (Davari & Belilovsky, 2024, Sec. 3).

    Per tensor, the ``gamma`` fraction of task-vector entries with the largest
    magnitude (outliers) and the smallest ones are masked so that a ``density``
    fraction remains; the masked task vectors are combined by task arithmetic.

    Attributes:
        density: Fraction of entries kept.
        gamma: Fraction of largest-magnitude entries removed.
    """

    name: ClassVar[str] = "breadcrumbs"
    density: float = Field(0.9, gt=0.0, le=1.0)
    gamma: float = Field(0.01, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check_fractions(self) -> Breadcrumbs:
        if self.density + self.gamma > 1.0:
            raise ConfigError(f"breadcrumbs needs density + gamma <= 1, got {self.density} + {self.gamma}")
        return self

    def prepare(self, key: str, vectors: Tensor) -> Tensor:
        return torch.stack([mask_outliers(v, self.density, self.gamma) for v in vectors])

    def merge_tensor(self, base: Tensor, vectors: Tensor, coefficients: Tensor, out: Tensor | None = None) -> Tensor:
        return add_weighted_sum(base, vectors, coefficients, out=out)
