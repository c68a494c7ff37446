"""TIES-Merging: trim, elect sign, disjoint merge."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor

from bambo.merge.base import MergeMethod
from bambo.merge.ops import Normalize, TopMagnitude, sign_consensus, trim_magnitude


class Ties(MergeMethod):
    """TIES-Merging (Yadav et al., 2023, Sec. 3 and Algorithm 1).

    1. Trim: keep the top ``density`` fraction of each task vector by magnitude
       (per tensor; done once, in :meth:`prepare`).
    2. Elect sign: ``sign(sum_i c_i tau_hat_i)`` per entry.
    3. Disjoint merge: combine the agreeing entries (see
       :func:`bambo.merge.ops.sign_consensus` for ``normalize``).

    Attributes:
        density: Fraction of entries kept by trimming (TIES's ``k``; paper default 0.2).
        normalize: ``"count"`` (TIES's disjoint mean), ``"weights"`` or ``"none"``.
    """

    name: ClassVar[str] = "ties"
    masked: ClassVar[bool] = True
    density: float = Field(0.2, gt=0.0, le=1.0)
    normalize: Normalize = "count"

    def prepare(self, key: str, vectors: Tensor) -> Tensor:
        return torch.stack([trim_magnitude(v, self.density) for v in vectors])

    def keep_selector(self, key: str, numel: int, dtype: torch.dtype) -> TopMagnitude:
        return TopMagnitude(numel, self.density, dtype)

    def merge_tensor(self, base: Tensor, vectors: Tensor, coefficients: Tensor, out: Tensor | None = None) -> Tensor:
        return sign_consensus(vectors, coefficients, self.normalize, base=base, out=out)
