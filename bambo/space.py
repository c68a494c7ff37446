"""Search spaces: decision vector ``x`` -> per-tensor merge coefficients.

Granularities (BAMBO Sec. 3.1-3.2, Eq. 3):

- ``model``: one coefficient per expert for the whole model (MAP's ``c``);
- ``layer``: one per expert per layer, plus the embedding and head groups;
- ``block``: one per expert per block of contiguous layers, plus the embedding
  and head groups (BAMBO's K attention blocks + 2).

Layer indices are parsed from parameter names (``layers.{i}.``, ``layer.{i}.``,
``h.{i}.``, ``blocks.{i}.``, ``block.{i}.``, or a regex of the user's). Tensors
without a layer index are "embed" if they come before the first layered tensor
and "head" after it; names that mention an embedding (``embed``, ``wte``) or a
head (``lm_head``, ``head.``, ``pooler``, ``classifier``, ``ln_f``) are placed by
name whatever their order, so alphabetically sorted checkpoints parse too.

The decision vector is group-major: ``x[g * n + i]`` is coefficient ``i`` of group ``g``.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from bambo.errors import BoundsError, ConfigError, ModelMismatchError, UnknownNameError

DEFAULT_LAYER_PATTERN = r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\."
_EMBED_HINT = re.compile(r"embed|(?:^|\.)wte\.|(?:^|\.)wpe\.|(?:^|\.)shared\.|cls_token|pos_token", re.IGNORECASE)
_HEAD_HINT = re.compile(
    r"lm_head|embed_out|(?:^|\.)head\.|pooler|classifier|(?:^|\.)score\.|(?:^|\.)ln_f\.|norm_f\.|final_?layer_?norm|final_norm",
    re.IGNORECASE,
)

GRANULARITIES = ("model", "layer", "block")


def parse_layer_index(name: str, pattern: str = DEFAULT_LAYER_PATTERN) -> int | None:
    """The layer index in a parameter name, or ``None`` if it has none.

    The leftmost match wins, so ``encoder.block.3.layer.0.x`` is layer 3.

    Args:
        name: A state-dict key, e.g. ``model.layers.11.self_attn.q_proj.weight``.
        pattern: A regex whose first group captures the index.
    """
    match = _compile_layer_pattern(pattern).search(name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class TensorGroup:
    """A named set of tensors that share coefficients."""

    name: str
    tensors: tuple[str, ...]


@dataclass(frozen=True)
class LayerLayout:
    """Tensors sorted into embedding, per-layer and head groups.

    Attributes:
        embed: Tensors before the layers (embeddings).
        layers: ``layers[i]`` holds layer i's tensors; indices are contiguous from 0.
        head: Tensors after the layers (final norm, output head).
    """

    embed: tuple[str, ...]
    layers: tuple[tuple[str, ...], ...]
    head: tuple[str, ...]

    @property
    def n_layers(self) -> int:
        """Number of layers L."""
        return len(self.layers)

    @classmethod
    def from_names(cls, names: Sequence[str], layer_pattern: str = DEFAULT_LAYER_PATTERN) -> LayerLayout:
        """Parse tensor names into a layout.

        Models with several layer stacks (an encoder and a decoder, a vision and a
        text tower) have one stack per distinct name prefix before the index
        (``encoder.block.``, ``decoder.block.``); stacks are numbered one after the
        other, decoder stacks last, so layer ``i`` of the second stack gets index
        ``L_1 + i``.

        Raises:
            ConfigError: The pattern is invalid or has no capture group, no name has a
                layer index, or a stack's indices are not 0..L-1.
        """
        pattern = _compile_layer_pattern(layer_pattern)
        stacks: dict[str, dict[int, list[str]]] = {}
        embed: list[str] = []
        head: list[str] = []
        for name in names:
            match = pattern.search(name)
            if match is not None:
                stacks.setdefault(name[: match.start(1)], {}).setdefault(int(match.group(1)), []).append(name)
            elif _HEAD_HINT.search(name):
                head.append(name)
            elif _EMBED_HINT.search(name) or not stacks:
                embed.append(name)
            else:
                head.append(name)
        if not stacks:
            raise ConfigError(
                f"no layer index found in {len(names)} tensor names with pattern {layer_pattern!r} "
                f"(e.g. {list(names)[:3]}); pass layer_pattern"
            )
        layers: list[tuple[str, ...]] = []
        for prefix in sorted(stacks, key=lambda p: "decoder" in p.lower()):  # stable: first-seen order otherwise
            indices = sorted(stacks[prefix])
            if indices != list(range(len(indices))):
                raise ConfigError(f"layer indices of {prefix!r} must be 0..L-1, found {indices}")
            layers.extend(tuple(stacks[prefix][i]) for i in indices)
        return cls(tuple(embed), tuple(layers), tuple(head))


def _compile_layer_pattern(layer_pattern: str) -> re.Pattern[str]:
    try:
        pattern = re.compile(layer_pattern)
    except re.error as exc:
        raise ConfigError(f"layer_pattern {layer_pattern!r} is not a valid regex: {exc}") from None
    if pattern.groups < 1:
        raise ConfigError(f"layer_pattern {layer_pattern!r} needs a capture group for the layer index")
    return pattern


def check_decision_vector(x: Tensor, bounds: Tensor, names: Sequence[str]) -> Tensor:
    """Validate one decision vector against a box; returns it as float64 of shape ``(d,)``.

    Args:
        x: The vector.
        bounds: Shape ``(2, d)``.
        names: The variables' names, for the messages.

    Raises:
        BoundsError: Wrong shape, a non-finite entry, or an entry outside the bounds
            (the message names the variable and the value).
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    d = bounds.shape[1]
    if x.shape != (d,):
        raise BoundsError(f"decision vector has shape {tuple(x.shape)}, expected ({d},)")
    for i in (~torch.isfinite(x)).nonzero().flatten().tolist():
        raise BoundsError(f"decision variable {names[i]!r} is not finite: {x[i].item()}")
    tol = 1e-9 * (bounds[1] - bounds[0])
    outside = ((x < bounds[0] - tol) | (x > bounds[1] + tol)).nonzero().flatten().tolist()
    if outside:
        i = outside[0]
        raise BoundsError(
            f"decision variable {names[i]!r} = {x[i].item():.6g} is outside "
            f"[{bounds[0, i].item():.6g}, {bounds[1, i].item():.6g}]"
        )
    return x


def uniform_partition(n_layers: int, n_blocks: int) -> list[range]:
    """Split ``n_layers`` layers into ``n_blocks`` contiguous blocks of near-equal size."""
    if not 1 <= n_blocks <= n_layers:
        raise ConfigError(f"need 1 <= n_blocks <= n_layers, got n_blocks={n_blocks}, n_layers={n_layers}")
    edges = [k * n_layers // n_blocks for k in range(n_blocks + 1)]
    return [range(edges[k], edges[k + 1]) for k in range(n_blocks)]


def _names_of(tensors: Mapping[str, Tensor] | Sequence[str] | object) -> list[str]:
    merged = getattr(tensors, "merged_names", None)  # a TaskVectors
    if merged is not None:
        return list(merged)
    if isinstance(tensors, Mapping):
        return [k for k, v in tensors.items() if v.is_floating_point()]
    return list(tensors)  # type: ignore[arg-type]


class MergeSpace:
    """A box of decision vectors and the map to per-tensor coefficients.

    Build one with :meth:`model_wise`, :meth:`layer_wise` or :meth:`block_wise`.

    Args:
        groups: Tensor groups; every merged tensor must be in exactly one.
        n_coefficients: Coefficients per group (experts, or 1 for SLERP).
        bounds: ``(lower, upper)`` for every variable, or a ``(2, d)`` tensor.
        coefficient_labels: Labels of the coefficients within a group (expert names).
        granularity: ``"model"``, ``"layer"`` or ``"block"`` (informative).
    """

    def __init__(
        self,
        groups: Sequence[TensorGroup],
        n_coefficients: int,
        bounds: tuple[float, float] | Tensor = (0.0, 1.0),
        coefficient_labels: Sequence[str] | None = None,
        granularity: str = "model",
    ) -> None:
        if n_coefficients < 1:
            raise ConfigError(f"n_coefficients must be >= 1, got {n_coefficients}")
        seen: dict[str, str] = {}
        for group in groups:
            for tensor in group.tensors:
                if tensor in seen:
                    raise ConfigError(f"tensor {tensor!r} is in groups {seen[tensor]!r} and {group.name!r}")
                seen[tensor] = group.name
        self.groups = list(groups)
        self.n_coefficients = n_coefficients
        self.granularity = granularity
        labels = list(coefficient_labels) if coefficient_labels is not None else [str(i) for i in range(n_coefficients)]
        if len(labels) != n_coefficients:
            raise ConfigError(f"{len(labels)} coefficient labels for {n_coefficients} coefficients")
        self.coefficient_labels = labels
        self.bounds = self._make_bounds(bounds)

    def _make_bounds(self, bounds: tuple[float, float] | Tensor) -> Tensor:
        d = self.dim
        if isinstance(bounds, Tensor):
            b = bounds.to(torch.float64)
            if b.shape != (2, d):
                raise ConfigError(f"bounds must have shape (2, {d}), got {tuple(b.shape)}")
        else:
            try:
                lower, upper = (float(v) for v in bounds)
            except (TypeError, ValueError):
                raise ConfigError(f"bounds must be (lower, upper) or a (2, {d}) tensor, got {bounds!r}") from None
            b = torch.tensor([[lower] * d, [upper] * d], dtype=torch.float64)
        bad = (b[0] >= b[1]).nonzero().flatten().tolist()
        if bad:
            i = bad[0]
            raise ConfigError(f"bounds of {self.parameter_names[i]!r} have lower >= upper: {b[:, i].tolist()}")
        return b

    # -- constructors -------------------------------------------------------------------

    @classmethod
    def model_wise(
        cls,
        tensors: Mapping[str, Tensor] | Sequence[str] | object,
        n_coefficients: int | None = None,
        bounds: tuple[float, float] | Tensor = (0.0, 1.0),
        coefficient_labels: Sequence[str] | None = None,
    ) -> MergeSpace:
        """One group holding every merged tensor (``n_coefficients`` variables).

        Args:
            tensors: A :class:`~bambo.merge.TaskVectors`, a state dict (its floating
                tensors) or a list of tensor names.
        """
        n_coefficients, coefficient_labels = _coefficient_defaults(tensors, n_coefficients, coefficient_labels)
        names = _names_of(tensors)
        return cls([TensorGroup("model", tuple(names))], n_coefficients, bounds, coefficient_labels, "model")

    @classmethod
    def layer_wise(
        cls,
        tensors: Mapping[str, Tensor] | Sequence[str] | object,
        n_coefficients: int | None = None,
        bounds: tuple[float, float] | Tensor = (0.0, 1.0),
        coefficient_labels: Sequence[str] | None = None,
        layer_pattern: str = DEFAULT_LAYER_PATTERN,
    ) -> MergeSpace:
        """One group per layer, plus embed and head groups where present."""
        n_coefficients, coefficient_labels = _coefficient_defaults(tensors, n_coefficients, coefficient_labels)
        layout = LayerLayout.from_names(_names_of(tensors), layer_pattern)
        partition = [range(i, i + 1) for i in range(layout.n_layers)]
        groups = _groups_from(layout, partition, "layer")
        return cls(groups, n_coefficients, bounds, coefficient_labels, "layer")

    @classmethod
    def block_wise(
        cls,
        tensors: Mapping[str, Tensor] | Sequence[str] | object,
        blocks: Sequence[Sequence[int]] | int,
        n_coefficients: int | None = None,
        bounds: tuple[float, float] | Tensor = (0.0, 1.0),
        coefficient_labels: Sequence[str] | None = None,
        layer_pattern: str = DEFAULT_LAYER_PATTERN,
        embed_block: bool = True,
        head_block: bool = True,
    ) -> MergeSpace:
        """One group per block of contiguous layers, plus embed and head groups.

        Args:
            tensors: A :class:`~bambo.merge.TaskVectors`, a state dict or tensor names.
            blocks: Blocks as sequences of layer indices (e.g. a
                :class:`bambo.partition.Partition`, or ``[range(0, 2), range(2, 6)]``)
                covering every layer once, in order; or an int K for
                :func:`uniform_partition` into K blocks.
            n_coefficients: Coefficients per group; defaults to the number of experts
                of a ``TaskVectors``.
            embed_block: Give the embeddings their own group (BAMBO); else they
                share the first block's coefficients.
            head_block: Give the head / final norm their own group; else they share
                the last block's.
        """
        n_coefficients, coefficient_labels = _coefficient_defaults(tensors, n_coefficients, coefficient_labels)
        layout = LayerLayout.from_names(_names_of(tensors), layer_pattern)
        if isinstance(blocks, numbers.Integral):
            blocks = uniform_partition(layout.n_layers, int(blocks))
        else:
            blocks = [list(block) for block in blocks]
            flat = [i for block in blocks for i in block]
            if flat != list(range(layout.n_layers)) or any(len(b) == 0 for b in blocks):
                raise ConfigError(
                    f"partition must list layers 0..{layout.n_layers - 1} once each, in contiguous "
                    f"non-empty blocks; got {[list(b) for b in blocks]}"
                )
        groups = _groups_from(layout, blocks, "block", embed_block, head_block)
        return cls(groups, n_coefficients, bounds, coefficient_labels, "block")

    @classmethod
    def for_granularity(
        cls,
        tensors: Mapping[str, Tensor] | Sequence[str] | object,
        granularity: str,
        n_coefficients: int | None = None,
        blocks: Sequence[Sequence[int]] | int = 3,
        bounds: tuple[float, float] | Tensor = (0.0, 1.0),
        coefficient_labels: Sequence[str] | None = None,
        layer_pattern: str = DEFAULT_LAYER_PATTERN,
    ) -> MergeSpace:
        """The space of a granularity named at run time (configs, the CLI).

        Args:
            granularity: ``model``, ``layer`` or ``block``.
            blocks: Blocks for ``block`` (a partition or a count K); ignored otherwise.
            Others: as for :meth:`model_wise`, :meth:`layer_wise` and :meth:`block_wise`.

        Raises:
            UnknownNameError: Unknown granularity; the message lists the valid ones.
        """
        if granularity == "model":
            return cls.model_wise(tensors, n_coefficients, bounds, coefficient_labels)
        if granularity == "layer":
            return cls.layer_wise(tensors, n_coefficients, bounds, coefficient_labels, layer_pattern)
        if granularity == "block":
            return cls.block_wise(tensors, blocks, n_coefficients, bounds, coefficient_labels, layer_pattern)
        raise UnknownNameError("granularity", str(granularity), GRANULARITIES)

    # -- properties ---------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Number of decision variables d = groups x coefficients."""
        return len(self.groups) * self.n_coefficients

    @property
    def parameter_names(self) -> list[str]:
        """Names of the decision variables, ``"{group}/{label}"``, in x's order."""
        return [f"{g.name}/{label}" for g in self.groups for label in self.coefficient_labels]

    # -- mapping --------------------------------------------------------------------------

    def check(self, x: Tensor) -> Tensor:
        """Validate one decision vector; returns it as float64 of shape ``(d,)``.

        Raises:
            BoundsError: Wrong shape, non-finite entries, or an entry outside the bounds
                (the message names the variable and the value).
        """
        return check_decision_vector(x, self.bounds, self.parameter_names)

    def group_coefficients(self, x: Tensor) -> Tensor:
        """Coefficients per group, shape ``(n_groups, n_coefficients)``."""
        return self.check(x).view(len(self.groups), self.n_coefficients)

    def to_coefficients(self, x: Tensor) -> dict[str, Tensor]:
        """Map a decision vector to per-tensor coefficients for :meth:`Merger.merge`.

        Args:
            x: Shape ``(d,)``, inside the bounds.

        Returns:
            ``{tensor name: coefficients of shape (n_coefficients,)}``.
        """
        per_group = self.group_coefficients(x)
        return {tensor: per_group[g] for g, group in enumerate(self.groups) for tensor in group.tensors}

    def from_group_coefficients(self, coefficients: Tensor) -> Tensor:
        """The decision vector that uses ``coefficients`` (shape ``(n_coefficients,)``) in every group."""
        c = torch.as_tensor(coefficients, dtype=torch.float64)
        if c.shape != (self.n_coefficients,):
            raise BoundsError(f"coefficients have shape {tuple(c.shape)}, expected ({self.n_coefficients},)")
        return c.repeat(len(self.groups))

    def check_covers(self, tensor_names: Sequence[str], all_names: Sequence[str] | None = None) -> None:
        """Raise if a merged tensor is in no group, or a group names a tensor the model lacks.

        Args:
            tensor_names: The merged tensors.
            all_names: Every tensor of the model (default: ``tensor_names``); grouped
                tensors that exist but are not merged (frozen buffers) are ignored.
        """
        grouped = {t for g in self.groups for t in g.tensors}
        missing = [t for t in tensor_names if t not in grouped]
        unknown = sorted(grouped - set(all_names if all_names is not None else tensor_names))
        if missing:
            raise ModelMismatchError(f"tensors in no group of the space: {missing[:5]}")
        if unknown:
            raise ModelMismatchError(f"the space names tensors the models do not have: {unknown[:5]}")

    def __repr__(self) -> str:
        return (
            f"MergeSpace(granularity={self.granularity!r}, groups={len(self.groups)}, "
            f"n_coefficients={self.n_coefficients}, dim={self.dim})"
        )


def _groups_from(
    layout: LayerLayout, blocks: Sequence[Sequence[int]], kind: str, embed_block: bool = True, head_block: bool = True
) -> list[TensorGroup]:
    groups = []
    if layout.embed and embed_block:
        groups.append(TensorGroup("embed", layout.embed))
    for k, block in enumerate(blocks):
        tensors = tuple(t for i in block for t in layout.layers[i])
        if k == 0 and not embed_block:
            tensors = layout.embed + tensors
        if k == len(blocks) - 1 and not head_block:
            tensors = tensors + layout.head
        layers = list(block)
        label = f"layer.{layers[0]}" if kind == "layer" else f"block.{k}[{layers[0]}-{layers[-1]}]"
        groups.append(TensorGroup(label, tensors))
    if layout.head and head_block:
        groups.append(TensorGroup("head", layout.head))
    return groups


def _coefficient_defaults(
    tensors: object, n_coefficients: int | None, labels: Sequence[str] | None
) -> tuple[int, Sequence[str] | None]:
    if n_coefficients is not None:
        return n_coefficients, labels
    n_experts = getattr(tensors, "n_experts", None)
    if n_experts is None:
        raise ConfigError("n_coefficients is required unless the models are given as TaskVectors")
    return n_experts, labels if labels is not None else getattr(tensors, "expert_names", None)
