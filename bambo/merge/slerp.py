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

    def merge_tensor(self, base: Tensor, vectors: Tensor, coefficients: Tensor, out: Tensor | None = None) -> Tensor:
        # v_i = base + tau_i is never materialised: norms and the dot product come from
        # dot products of base and task vectors, and the result is one fused addmv.
        t = float(coefficients[0])
        b, t0, t1 = base.reshape(-1), vectors[0].reshape(-1), vectors[1].reshape(-1)
        bb, b0, b1 = float(torch.dot(b, b)), float(torch.dot(b, t0)), float(torch.dot(b, t1))
        n0_sq = bb + 2.0 * b0 + float(torch.dot(t0, t0))
        n1_sq = bb + 2.0 * b1 + float(torch.dot(t1, t1))
        dot = bb + b0 + b1 + float(torch.dot(t0, t1))
        s0, s1 = 1.0 - t, t
        if n0_sq > 0.0 and n1_sq > 0.0:
            cos = max(-1.0, min(1.0, dot / math.sqrt(n0_sq * n1_sq)))
            if abs(cos) <= self.colinear_threshold:
                omega = math.acos(cos)
                s0 = math.sin((1.0 - t) * omega) / math.sin(omega)
                s1 = math.sin(t * omega) / math.sin(omega)
        # s0 (base + tau0) + s1 (base + tau1) = (s0 + s1) base + s0 tau0 + s1 tau1
        weights = torch.tensor([s0, s1], dtype=vectors.dtype, device=vectors.device)
        flat = vectors.reshape(2, -1)
        if out is None:
            return torch.addmv(b, flat.t(), weights, beta=s0 + s1).view(base.shape)
        torch.addmv(b, flat.t(), weights, beta=s0 + s1, out=out.view(-1))
        return out
