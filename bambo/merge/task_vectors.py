"""Task vectors: the experts' differences from the base, computed once.

A :class:`TaskVectors` validates that the base and every expert share the same
keys and shapes, computes ``tau_i = theta_i - theta_base`` once per tensor and
stacks them as one tensor of shape ``(N, *shape)``, so a merge reduces over the
expert dimension without touching the expert state dicts again (MAP Sec. 3:
``theta_m(c) = theta_pre + V c``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor

from bambo.errors import ModelMismatchError

StateDict = Mapping[str, Tensor]

# Float widths an expert may differ in from the base: cast to the base's dtype (float8 is not one:
# its few mantissa bits make a task vector mostly rounding error).
CASTABLE_DTYPES = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})


def check_same_structure(base: StateDict, expert: StateDict, label: str) -> None:
    """Raise :class:`ModelMismatchError` unless ``expert`` (named ``label``) has the base's keys, shapes and
    dtypes (float widths may differ: :data:`CASTABLE_DTYPES`); the message names the tensor."""
    missing = [k for k in base if k not in expert]
    extra = [k for k in expert if k not in base]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:5]}" + (" ..." if len(missing) > 5 else ""))
        if extra:
            parts.append(f"unexpected tensors {extra[:5]}" + (" ..." if len(extra) > 5 else ""))
        raise ModelMismatchError(f"expert {label!r} does not match the base: " + "; ".join(parts))
    for key, tensor in base.items():
        other = expert[key]
        if tuple(other.shape) != tuple(tensor.shape):
            raise ModelMismatchError(
                f"tensor {key!r} has shape {tuple(other.shape)} in expert {label!r} "
                f"but {tuple(tensor.shape)} in the base"
            )
        if other.dtype != tensor.dtype and not (other.dtype in CASTABLE_DTYPES and tensor.dtype in CASTABLE_DTYPES):
            raise ModelMismatchError(
                f"tensor {key!r} has dtype {_name(other.dtype)} in expert {label!r} but {_name(tensor.dtype)} in "
                "the base; only float widths (float16, bfloat16, float32, float64) are cast to the base's dtype"
            )


def expert_labels(experts: Sequence[object], expert_names: Sequence[str] | None) -> list[str]:
    """The experts' names (``expert0``, ... by default), checked: at least one expert, one unique name each.

    Raises:
        ModelMismatchError: No expert, or names of the wrong number or repeated.
    """
    if len(experts) == 0:
        raise ModelMismatchError("at least one expert is needed to merge")
    names = list(expert_names) if expert_names is not None else [f"expert{i}" for i in range(len(experts))]
    if len(names) != len(experts):
        raise ModelMismatchError(f"{len(names)} expert names given for {len(experts)} experts")
    if len(set(names)) != len(names):
        raise ModelMismatchError(f"expert names must be unique, got {names}")
    return names


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class TaskVectors:
    """The base weights and the stacked task vectors of N experts.

    Floating-point tensors get task vectors and are merged. Non-floating tensors
    (integer buffers such as ``position_ids``) and any name listed in ``frozen``
    (e.g. BatchNorm running statistics, see :func:`buffer_names`) are copied
    from the base unchanged.

    An expert tensor must have the base's dtype, except for float widths: a
    float16, bfloat16, float32 or float64 expert tensor is cast explicitly to the
    base's float dtype (:data:`CASTABLE_DTYPES`; a bfloat16 expert of a float32 base
    gives float32 task vectors). Any other difference (int8, uint8, int64, bool,
    float8, a float expert of an integer base) is refused: merging it would be
    silently wrong.

    Args:
        base: State dict of the pretrained model.
        experts: State dicts of the fine-tuned models, same keys and shapes.
        expert_names: Labels for the experts (default ``expert0``, ...).
        frozen: Names of floating tensors that are not merged.

    Raises:
        ModelMismatchError: A key is missing or extra, a shape differs, or a dtype
            differs other than in float width; the message names the tensor, the
            expert and (for a dtype) both dtypes.
    """

    def __init__(
        self,
        base: StateDict,
        experts: Sequence[StateDict],
        expert_names: Sequence[str] | None = None,
        frozen: Iterable[str] = (),
    ) -> None:
        names = expert_labels(experts, expert_names)
        for label, expert in zip(names, experts, strict=True):
            check_same_structure(base, expert, label)
        frozen = set(frozen)
        unknown = frozen - set(base)
        if unknown:
            raise ModelMismatchError(f"frozen names not in the model: {sorted(unknown)}")

        self.expert_names: list[str] = names
        self.base: dict[str, Tensor] = dict(base)
        self.vectors: dict[str, Tensor] = {}
        for key, tensor in base.items():
            if not tensor.is_floating_point() or key in frozen:
                continue
            stacked = torch.empty((len(experts), *tensor.shape), dtype=tensor.dtype, device=tensor.device)
            for i, expert in enumerate(experts):
                torch.sub(expert[key].to(device=tensor.device, dtype=tensor.dtype), tensor, out=stacked[i])
            self.vectors[key] = stacked

    @property
    def n_experts(self) -> int:
        """Number of experts N."""
        return len(self.expert_names)

    @property
    def merged_names(self) -> list[str]:
        """Names of the tensors that are merged, in the base's order."""
        return list(self.vectors)

    @property
    def copied_names(self) -> list[str]:
        """Names of the tensors copied from the base unchanged."""
        return [k for k in self.base if k not in self.vectors]

    def expert(self, index: int, key: str) -> Tensor:
        """Reconstruct expert ``index``'s tensor ``key`` (allocates it)."""
        return self.base[key] + self.vectors[key][index]

    def l1_ratio(self) -> list[float]:
        """Per expert, ``||tau_i||_1 / ||theta_base||_1`` over merged tensors (MAP Table 1)."""
        base_l1 = sum(float(self.base[k].abs().sum()) for k in self.vectors)
        if base_l1 == 0.0:
            return [
                float("inf") if any(float(v[i].abs().sum()) for v in self.vectors.values()) else 0.0
                for i in range(self.n_experts)
            ]
        return [sum(float(v[i].abs().sum()) for v in self.vectors.values()) / base_l1 for i in range(self.n_experts)]


def buffer_names(module: torch.nn.Module) -> list[str]:
    """State-dict names of a module's buffers (copied from the base, never merged)."""
    return [name for name, _ in module.named_buffers()]
