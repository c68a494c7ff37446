"""DELLA-Merging: magnitude-ranked drop probabilities, elect, fuse."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field, model_validator
from torch import Tensor

from bambo.errors import ConfigError
from bambo.merge.base import MergeMethod
from bambo.merge.ops import Normalize, magprune, sign_consensus, tensor_generator


class Della(MergeMethod):
    """DELLA (Deep et al., 2024): MagPrune drop, elect sign, fuse.

    Drop: within each row, keep probabilities rise linearly with magnitude rank
    from ``density - epsilon`` to ``density + epsilon``; survivors are rescaled
    by ``1 / p_keep`` (unbiased). Elect and fuse as in TIES. Masks are drawn once
    per ``seed``.

    Attributes:
        density: Mean keep probability.
        epsilon: Half-width of the keep-probability range.
        normalize: Fusion rule (see :func:`bambo.merge.ops.sign_consensus`).
        seed: Seed of the drop masks.
    """

    name: ClassVar[str] = "della"
    density: float = Field(0.7, gt=0.0, le=1.0)
    epsilon: float = Field(0.1, ge=0.0, lt=1.0)
    normalize: Normalize = "count"
    seed: int = 0

    @model_validator(mode="after")
    def _check_range(self) -> Della:
        if self.density - self.epsilon <= 0.0 or self.density + self.epsilon > 1.0:
            raise ConfigError(
                f"della needs 0 < density - epsilon and density + epsilon <= 1, "
                f"got density={self.density}, epsilon={self.epsilon}"
            )
        return self

    def prepare(self, key: str, vectors: Tensor) -> Tensor:
        return torch.stack(
            [
                magprune(v, self.density, self.epsilon, tensor_generator(self.seed, key, i))
                for i, v in enumerate(vectors)
            ]
        )

    def merge_tensor(self, base: Tensor, vectors: Tensor, coefficients: Tensor, out: Tensor | None = None) -> Tensor:
        return sign_consensus(vectors, coefficients, self.normalize, base=base, out=out)
