"""Merging into a live model: the targets are an ``nn.Module``'s own parameters and buffers.

``Merger.merge(c, into=model)`` (and the streaming engine's) writes each merged
tensor into the module's tensor of the same state-dict name with ``copy_`` under
``torch.no_grad``, on the module's device and in its dtype, so an evaluation never
rebuilds the model. The float32 arithmetic of half-precision tensors runs in
:class:`Scratch` buffers sized by the largest tensor, allocated on the first call
and reused, so later calls allocate nothing proportional to the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from bambo.errors import ModelMismatchError


def module_targets(model: nn.Module, names: Iterable[str], shapes: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The module's tensors that merged tensors ``names`` are written into.

    Args:
        model: The live model.
        names: State-dict names of every tensor the merge writes.
        shapes: Name -> a tensor (or ``meta`` tensor) with the expected shape.

    Returns:
        Name -> the module's parameter or buffer (its ``.data``), shape as in ``shapes``.

    Raises:
        ModelMismatchError: A name is missing from the module, a shape differs, or the module
            holds a tensor that the merge would not write (and that is not tied to one it writes).
    """
    state = model.state_dict(keep_vars=True)
    targets: dict[str, Tensor] = {}
    for name in names:
        tensor = state.get(name)
        if tensor is None:
            raise ModelMismatchError(f"the model given as into= has no tensor {name!r}")
        if tuple(tensor.shape) != tuple(shapes[name].shape):
            raise ModelMismatchError(
                f"tensor {name!r} has shape {tuple(tensor.shape)} in the model given as into= "
                f"but {tuple(shapes[name].shape)} in the base"
            )
        targets[name] = tensor.data
    written = {t.data_ptr() for t in targets.values()}
    unwritten = [k for k, t in state.items() if k not in targets and t.data_ptr() not in written]
    if unwritten:
        raise ModelMismatchError(
            f"the model given as into= has tensors the base lacks, which a merge would leave as they are: "
            f"{unwritten[:5]}" + (" ..." if len(unwritten) > 5 else "")
        )
    return targets


def check_not_aliased(targets: Mapping[str, Tensor], sources: Mapping[str, Tensor]) -> None:
    """Refuse targets sharing memory with the tensors merged from (the first merge would overwrite the base).

    Raises:
        ModelMismatchError: Names the first such tensor.
    """
    for name, target in targets.items():
        source = sources.get(name)
        if source is not None and source.device.type != "meta" and source.data_ptr() == target.data_ptr():
            raise ModelMismatchError(
                f"the model given as into= shares tensor {name!r} with the base model: merging into it would "
                "overwrite the base; pass a copy of the model (copy.deepcopy)"
            )


class Scratch:
    """Two flat float buffers reused for every tensor of every merge (grown once, never shrunk)."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[torch.dtype, str], tuple[Tensor, Tensor]] = {}

    def pair(self, like: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Two contiguous views of ``like``'s shape in ``dtype``, on ``like``'s device."""
        key = (dtype, str(like.device))
        n = like.numel()
        current = self._buffers.get(key)
        if current is None or current[0].numel() < n:
            current = (
                torch.empty(n, dtype=dtype, device=like.device),
                torch.empty(n, dtype=dtype, device=like.device),
            )
            self._buffers[key] = current
        return current[0][:n].view(like.shape), current[1][:n].view(like.shape)


def write(target: Tensor, value: Tensor) -> Tensor:
    """Copy ``value`` into ``target`` (casting to its dtype and device) without recording gradients."""
    with torch.no_grad():
        target.copy_(value)
    return target
