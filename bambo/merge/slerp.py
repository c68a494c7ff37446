"""Spherical linear interpolation between two experts."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor

from bambo.errors import ConfigError
from bambo.merge.base import MergeMethod


class Slerp(MergeMethod):
    """SLERP (Shoemake, 1985) between the two experts' full weights, per tensor.

    One coefficient ``t`` per tensor group: ``t = 0`` gives expert 0, ``t = 1``
    expert 1. Each tensor is flattened; with ``Omega`` the angle between the two
    flattened tensors, ``slerp = sin((1-t) Omega)/sin(Omega) v0 + sin(t Omega)/sin(Omega) v1``.
    Nearly colinear tensors (``|cos Omega| > colinear_threshold``) or zero
    tensors fall back to linear interpolation, where slerp is numerically unstable.

    Attributes:
        colinear_threshold: ``|cos Omega|`` above which linear interpolation is used.
    """

    name: ClassVar[str] = "slerp"
    colinear_threshold: float = Field(0.9995, gt=0.0, le=1.0)

    def n_coefficients(self, n_experts: int) -> int:
        return 1

    def check_experts(self, n_experts: int) -> None:
        if n_experts != 2:
            raise ConfigError(f"slerp merges exactly 2 experts, got {n_experts}")

    def merge_tensor(self, base: Tensor, vectors: Tensor, coefficients: Tensor) -> Tensor:
        t = float(coefficients[0])
        v0 = base + vectors[0]
        v1 = base + vectors[1]
        n0, n1 = float(v0.norm()), float(v1.norm())
        if n0 == 0.0 or n1 == 0.0:
            return torch.lerp(v0, v1, t)
        cos = max(-1.0, min(1.0, float(torch.dot(v0.reshape(-1), v1.reshape(-1))) / (n0 * n1)))
        if abs(cos) > self.colinear_threshold:
            return torch.lerp(v0, v1, t)
        omega = math.acos(cos)
        sin_omega = math.sin(omega)
        v0.mul_(math.sin((1.0 - t) * omega) / sin_omega)
        return v0.add_(v1, alpha=math.sin(t * omega) / sin_omega)
