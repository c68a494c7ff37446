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
    done once here; each :meth:`merge` then allocates only its output (plus
    per-tensor temporaries). Half-precision tensors are combined in float32 and
    cast back.

    Args:
        task_vectors: Base and stacked task vectors.
        method: A merge method instance.
    """

    def __init__(self, task_vectors: TaskVectors, method: MergeMethod) -> None:
        method.check_experts(task_vectors.n_experts)
        self.task_vectors = task_vectors
        self.method = method
        self.n_coefficients = method.n_coefficients(task_vectors.n_experts)
        self._prepared: dict[str, Tensor] = {
            key: method.prepare(key, vectors) for key, vectors in task_vectors.vectors.items()
        }

    def _coefficients_for(self, coefficients: Coefficients, key: str) -> Tensor:
        if isinstance(coefficients, Tensor):
            c = coefficients
        else:
            try:
                c = coefficients[key]
            except KeyError:
                raise BoundsError(f"no coefficients given for tensor {key!r}") from None
        c = torch.as_tensor(c, dtype=torch.float64)
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
                merged = self.method.merge_tensor(tensor.float(), prepared.float(), c.float())
                out[key] = merged.to(tensor.dtype)
            else:
                out[key] = self.method.merge_tensor(tensor, prepared, c.to(tensor.dtype))
        return out
