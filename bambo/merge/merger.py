"""Merger: binds task vectors to a merge method and merges for given coefficients."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

import torch
from torch import Tensor, nn

from bambo.errors import BoundsError
from bambo.merge.base import MergeMethod
from bambo.merge.live import Scratch, check_not_aliased, module_targets, write
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
        self._scratch = Scratch()

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

    def merge(
        self,
        coefficients: Coefficients,
        out: MutableMapping[str, Tensor] | None = None,
        into: nn.Module | None = None,
    ) -> dict[str, Tensor]:
        """Merge the models.

        Args:
            coefficients: Either one tensor of shape ``(n_coefficients,)`` used for
                every tensor (model level), or a mapping from every merged tensor
                name to its own ``(n_coefficients,)`` tensor (layer or block level,
                see :class:`bambo.space.MergeSpace`).
            out: Optional buffers to merge into, e.g. the state dict a previous call
                returned (from :meth:`new_buffers`): same keys, shapes and dtypes as
                the base. Reusing them avoids allocating (and page-faulting) a whole
                model per merge; only do so when nothing still reads the old weights.
            into: Optional live model whose parameters and buffers (same state-dict
                names and shapes as the base) receive the merge in place, on its
                device and in its dtype (:mod:`bambo.merge.live`); after the first
                call nothing proportional to the model is allocated.

        Returns:
            A state dict with the base's keys, dtypes and order (``out`` if given; with
            ``into``, the model's own tensors).
        """
        if into is not None:
            if out is not None:
                raise BoundsError("give either out= or into=, not both")
            return self._merge_into(coefficients, into)
        base = self.task_vectors.base
        if out is not None:
            self._check_buffers(out)
        result: dict[str, Tensor] = {}
        for key, tensor in base.items():
            target = out[key] if out is not None else None
            prepared = self._prepared.get(key)
            if prepared is None:
                result[key] = tensor.clone() if target is None else target.copy_(tensor)
                continue
            c = self._coefficients_for(coefficients, key)
            if tensor.dtype in _LOW_PRECISION:
                merged = self.method.merge_tensor(tensor.float(), prepared, c.float())
                result[key] = merged.to(tensor.dtype) if target is None else target.copy_(merged)
            else:
                result[key] = self.method.merge_tensor(tensor, prepared, c.to(tensor.dtype), out=target)
        if out is not None:
            out.update(result)
            return dict(out)
        return result

    def _merge_into(self, coefficients: Coefficients, model: nn.Module) -> dict[str, Tensor]:
        base = self.task_vectors.base
        targets = module_targets(model, base, base)
        check_not_aliased(targets, base)
        for key, tensor in base.items():
            target = targets[key]
            prepared = self._prepared.get(key)
            if prepared is None:
                write(target, tensor)
                continue
            c = self._coefficients_for(coefficients, key)
            compute = prepared.dtype
            direct = target.dtype == compute and target.device == tensor.device and target.is_contiguous()
            if direct and tensor.dtype == compute:
                with torch.no_grad():
                    self.method.merge_tensor(tensor, prepared, c.to(compute), out=target)
                continue
            source, result = self._scratch.pair(tensor, compute)
            source.copy_(tensor)
            write(target, self.method.merge_tensor(source, prepared, c.to(compute), out=result))
        return targets

    def new_buffers(self) -> dict[str, Tensor]:
        """Uninitialised output buffers (the base's keys, shapes, dtypes) for ``merge(..., out=)``."""
        return {
            key: torch.empty_like(tensor, memory_format=torch.contiguous_format)
            for key, tensor in self.task_vectors.base.items()
        }

    def _check_buffers(self, out: Mapping[str, Tensor]) -> None:
        for key, tensor in self.task_vectors.base.items():
            buffer = out.get(key)
            if buffer is None:
                raise BoundsError(f"output buffers lack tensor {key!r}")
            if buffer.shape != tensor.shape or buffer.dtype != tensor.dtype or not buffer.is_contiguous():
                raise BoundsError(
                    f"output buffer {key!r} must be contiguous with shape {tuple(tensor.shape)} and dtype "
                    f"{tensor.dtype}, got {tuple(buffer.shape)} {buffer.dtype}"
                )
