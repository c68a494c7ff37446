"""Merger: binds task vectors to a merge method and merges for given coefficients."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from bambo.errors import BoundsError
from bambo.merge.base import MergeMethod
from bambo.merge.task_vectors import TaskVectors

_LOW_PRECISION = (torch.float16, torch.bfloat16)

Coefficients = Tensor | Mapping[str, Tensor]


class Merger:
    """Merges a fixed base and experts with one method for many coefficient settings.

    The method's coefficient-independent work (:meth:`MergeMethod.prepare`) is
    done once here; each :meth:`merge` then allocates its output and, for TIES-like
    methods, a few cache-sized temporaries. Half-precision models are combined in
    float32 and cast back: their prepared task vectors are kept in float32 (twice
    their size) so no merge re-casts them.

    Args:
        task_vectors: Base and stacked task vectors.
        method: A merge method instance.
    """

    def __init__(self, task_vectors: TaskVectors, method: MergeMethod) -> None:
        method.check_experts(task_vectors.n_experts)
        self.task_vectors = task_vectors
        self.method = method
        self.n_coefficients = method.n_coefficients(task_vectors.n_experts)
        self._prepared: dict[str, Tensor] = {}
        for key, vectors in task_vectors.vectors.items():
            prepared = method.prepare(key, vectors)
            self._prepared[key] = prepared.float() if prepared.dtype in _LOW_PRECISION else prepared

    def _coefficients_for(self, coefficients: Coefficients, key: str) -> Tensor:
        if isinstance(coefficients, Mapping):
            try:
                c = coefficients[key]
            except KeyError:
                raise BoundsError(f"no coefficients given for tensor {key!r}") from None
        else:
            c = coefficients
        try:
            c = torch.as_tensor(c, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise BoundsError(f"coefficients for tensor {key!r} are not numbers: {exc}") from None
        if c.shape != (self.n_coefficients,):
            raise BoundsError(
                f"coefficients for tensor {key!r} have shape {tuple(c.shape)}, "
                f"expected ({self.n_coefficients},) for method {self.method.name!r}"
            )
        if not torch.isfinite(c).all():
            raise BoundsError(f"coefficients for tensor {key!r} are not finite: {c.tolist()}")
        return c

    def merge(self, coefficients: Coefficients) -> dict[str, Tensor]:
        """Merge the models.

        Args:
            coefficients: Either one tensor of shape ``(n_coefficients,)`` used for
                every tensor (model level), or a mapping from every merged tensor
                name to its own ``(n_coefficients,)`` tensor (layer or block level,
                see :class:`bambo.space.MergeSpace`).

        Returns:
            A new state dict with the base's keys, dtypes and order.
        """
        base = self.task_vectors.base
        out: dict[str, Tensor] = {}
        for key, tensor in base.items():
            prepared = self._prepared.get(key)
            if prepared is None:
                out[key] = tensor.clone()
                continue
            c = self._coefficients_for(coefficients, key)
            if tensor.dtype in _LOW_PRECISION:
                merged = self.method.merge_tensor(tensor.float(), prepared, c.float())
                out[key] = merged.to(tensor.dtype)
            else:
                out[key] = self.method.merge_tensor(tensor, prepared, c.to(tensor.dtype))
        return out
