"""The interface every merge method implements.

A method is a frozen pydantic model whose fields are its options (validated,
immutable, serialisable). Work that does not depend on the coefficients, such as
TIES trimming or DARE's random drop masks, happens once in :meth:`prepare`; the
per-evaluation work happens in :meth:`merge_tensor`, which allocates the output
tensor and at most a few tensor-sized temporaries.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from bambo.config_base import FrozenConfig
from bambo.errors import ConfigError
from bambo.merge.ops import TopMagnitude


class MergeMethod(FrozenConfig, ABC):
    """Base class of merge methods over stacked task vectors.

    Subclasses set the class attribute ``name`` (the registry key) and implement
    :meth:`merge_tensor`.
    """

    name: ClassVar[str]
    #: True when :meth:`prepare` is the identity and :meth:`merge_tensor` is the weighted sum
    #: ``base + sum_i w_i v_i`` with ``w =`` :meth:`weights` (entry by entry), so an engine may
    #: merge a tensor in cache-sized chunks with a fused kernel (:mod:`bambo.merge.streaming`).
    elementwise: ClassVar[bool] = False
    #: True when :meth:`prepare` keeps each task vector's largest magnitudes (the selection of
    #: :meth:`keep_selector`, one expert's vector at a time, nothing else changed) and
    #: :meth:`merge_tensor` works entry by entry: an engine may then keep only the cuts and merge
    #: in chunks.
    masked: ClassVar[bool] = False

    def weights(self, coefficients: Tensor) -> Tensor:
        """The weights ``w`` of an ``elementwise`` method's sum ``base + sum_i w_i v_i``.

        Args:
            coefficients: Shape ``(n_coefficients,)``.

        Returns:
            Shape ``(N,)``.
        """
        raise NotImplementedError(f"merge method {self.name!r} is not a weighted sum of task vectors")

    def keep_selector(self, key: str, numel: int, dtype: torch.dtype) -> TopMagnitude:
        """The selection of the entries :meth:`prepare` keeps of one task vector (``masked`` methods).

        Args:
            key: The tensor's state-dict name.
            numel: The tensor's number of entries.
            dtype: The task vector's dtype.

        Returns:
            A fresh :class:`~bambo.merge.ops.TopMagnitude` to feed the vector's chunks.
        """
        raise NotImplementedError(f"merge method {self.name!r} does not prepare by magnitude cuts")

    def n_coefficients(self, n_experts: int) -> int:
        """Number of coefficients per tensor group (one per expert by default)."""
        return n_experts

    def check_experts(self, n_experts: int) -> None:
        """Raise :class:`ConfigError` if the method cannot merge ``n_experts`` experts."""
        if n_experts < 1:
            raise ConfigError(f"merge method {self.name!r} needs at least one expert, got {n_experts}")

    def prepare(self, key: str, vectors: Tensor) -> Tensor:
        """Coefficient-independent preprocessing of one tensor's task vectors, run once.

        Args:
            key: The tensor's state-dict name (seeds per-tensor randomness).
            vectors: Stacked task vectors, shape ``(N, *shape)``.

        Returns:
            The tensor that :meth:`merge_tensor` receives as ``vectors``,
            shape ``(N, *shape)``.
        """
        return vectors

    @abstractmethod
    def merge_tensor(self, base: Tensor, vectors: Tensor, coefficients: Tensor, out: Tensor | None = None) -> Tensor:
        """Merge one tensor.

        Args:
            base: The base tensor, shape ``shape``.
            vectors: Prepared task vectors, shape ``(N, *shape)``.
            coefficients: Coefficients for this tensor, shape ``(n_coefficients,)``.
            out: Optional buffer of shape ``shape`` and the computation's dtype to
                write the result into (then nothing of that size is allocated).

        Returns:
            The merged tensor of shape ``shape``: ``out`` if given, else a new tensor.
        """
