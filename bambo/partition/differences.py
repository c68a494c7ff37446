"""Per-layer task-vector differences (BAMBO Eq. 4) and per-expert task-vector norms.

For layer ``l`` with task vectors ``TV_l^(i)`` (all of the layer's tensors,
concatenated), ``Diff_l = sum_i || TV_l^(i) - mean_i TV_l^(i) ||_p`` for ``p`` in
{1, 2}: how much the experts disagree in that layer. The per-expert norms
``|| TV_l^(i) ||_p`` are BAMBO Fig. 2's top rows.

The computation streams: it visits one tensor at a time, computes the experts'
task vectors for it, adds its contribution to the sums, and drops it, so with
lazily loaded weights (:func:`bambo.weights.load_state_dict`) it never holds
more than one tensor's task vectors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bambo.errors import ModelMismatchError
from bambo.merge import TaskVectors
from bambo.space import DEFAULT_LAYER_PATTERN, LayerLayout, parse_layer_index


@dataclass(frozen=True)
class LayerDifferences:
    """Differences and norms per layer.

    Attributes:
        l1: ``Diff_l`` with p = 1, shape ``(L,)``.
        l2: ``Diff_l`` with p = 2, shape ``(L,)``.
        expert_l1: ``||TV_l^(i)||_1``, shape ``(N, L)``.
        expert_l2: ``||TV_l^(i)||_2``, shape ``(N, L)``.
        expert_names: The N experts' names.
    """

    l1: np.ndarray
    l2: np.ndarray
    expert_l1: np.ndarray
    expert_l2: np.ndarray
    expert_names: tuple[str, ...]

    @property
    def n_layers(self) -> int:
        """Number of layers L."""
        return len(self.l1)

    def diff(self, p: int) -> np.ndarray:
        """``Diff_l`` for ``p`` in {1, 2}, shape ``(L,)``."""
        if p == 1:
            return self.l1
        if p == 2:
            return self.l2
        raise ValueError(f"p must be 1 or 2, got {p}")


def _float_names(state_dict: Mapping[str, Tensor]) -> list[str]:
    names = []
    for key in state_dict:
        value = state_dict[key]
        if value.is_floating_point():
            names.append(key)
    return names


def _accumulate(vectors: list[Tensor], sums: np.ndarray, layer: int) -> None:
    # sums[:, :, layer] += [dev_l1, dev_sq, tv_l1, tv_sq] per expert for one tensor.
    stacked = torch.stack([v.detach().to(device="cpu", dtype=torch.float64).reshape(-1) for v in vectors])
    deviation = stacked - stacked.mean(dim=0, keepdim=True)
    sums[0, :, layer] += deviation.abs().sum(dim=1).numpy()
    sums[1, :, layer] += deviation.square().sum(dim=1).numpy()
    sums[2, :, layer] += stacked.abs().sum(dim=1).numpy()
    sums[3, :, layer] += stacked.square().sum(dim=1).numpy()


def _finish(sums: np.ndarray, names: Sequence[str]) -> LayerDifferences:
    return LayerDifferences(
        l1=sums[0].sum(axis=0),
        l2=np.sqrt(sums[1]).sum(axis=0),
        expert_l1=sums[2].copy(),
        expert_l2=np.sqrt(sums[3]),
        expert_names=tuple(names),
    )


def layer_differences(
    base: Mapping[str, Tensor],
    experts: Sequence[Mapping[str, Tensor]],
    expert_names: Sequence[str] | None = None,
    layer_pattern: str = DEFAULT_LAYER_PATTERN,
) -> LayerDifferences:
    """Layer differences from state dicts (in memory or lazy), one tensor at a time.

    Only tensors with a layer index count (embeddings and head are their own
    blocks and are not partitioned).

    Args:
        base: Base state dict.
        experts: Expert state dicts (at least one).
        expert_names: Names (default ``expert0``, ...).
        layer_pattern: Regex of the layer index (see :mod:`bambo.space`).

    Raises:
        ModelMismatchError: An expert lacks a layer tensor, has an extra one, or a shape differs.
    """
    if len(experts) < 2:
        raise ModelMismatchError(
            f"layer differences (BAMBO Eq. 4) compare experts: they need at least two, got {len(experts)} "
            "(with one, every Diff_l is 0)"
        )
    names = list(expert_names) if expert_names is not None else [f"expert{i}" for i in range(len(experts))]
    layout = LayerLayout.from_names(_float_names(base), layer_pattern)
    layered = {t for layer in layout.layers for t in layer}
    if len(names) != len(experts):
        raise ModelMismatchError(f"{len(names)} expert names for {len(experts)} experts")
    for label, expert in zip(names, experts, strict=True):
        # an expert may carry tensors of its own outside the layers (a task head): only layer tensors count
        expert_layered = {k for k in expert if parse_layer_index(k, layer_pattern) is not None}
        missing, extra = sorted(layered - expert_layered), sorted(expert_layered - layered)
        if missing or extra:
            raise ModelMismatchError(
                f"expert {label!r} has other layer tensors than the base: missing {missing[:5]}, extra {extra[:5]}"
            )
    sums = np.zeros((4, len(experts), layout.n_layers))
    for index, layer in enumerate(layout.layers):
        for key in layer:
            b = base[key]
            vectors = []
            for label, expert in zip(names, experts, strict=True):
                e = expert[key]
                if tuple(e.shape) != tuple(b.shape):
                    raise ModelMismatchError(
                        f"tensor {key!r} has shape {tuple(e.shape)} in expert {label!r} "
                        f"but {tuple(b.shape)} in the base"
                    )
                vectors.append(e.to(torch.float64) - b.to(torch.float64))
            _accumulate(vectors, sums, index)
    return _finish(sums, names)


def layer_differences_from_task_vectors(
    tv: TaskVectors, layer_pattern: str = DEFAULT_LAYER_PATTERN
) -> LayerDifferences:
    """Layer differences from the merge engine's cached task vectors (no recomputation)."""
    layout = LayerLayout.from_names(tv.merged_names, layer_pattern)
    sums = np.zeros((4, tv.n_experts, layout.n_layers))
    for index, layer in enumerate(layout.layers):
        for key in layer:
            _accumulate(list(tv.vectors[key]), sums, index)
    return _finish(sums, tv.expert_names)
