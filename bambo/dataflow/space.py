"""The data-flow search space: decision vector -> layer path (what :class:`~bambo.space.MergeSpace` is to weights).

The formulation of Akiba et al. (2024, Sec. 3.2), as its authors describe their search:
the layers of the ``M`` source models are laid out in sequence (source 0's layers
``0..L-1``, then source 1's, ...) and the pool is repeated ``r`` times, ``T = r * M * L``
slots in all. A binary indicator per slot says whether that layer runs; the path is the
kept slots in slot order, each with its own input scale.

The decision vector is ``x = (bits, scales)``: one include variable in ``{0, 1}`` per free
slot, then one scale per free slot (default bounds ``[0.5, 1.5]``). The dependency between
the two (a scale matters only when its slot is kept) is handled here, not left to the
optimiser: :meth:`DataFlowSpace.canonical` rounds the bits and sets a dropped slot's scale
to 1, so every decision vector that builds the same path maps to one canonical vector
(what a surrogate should see, and the key to skip re-evaluating a path). The survey in
``shared/papers/dfs-mixed-binary-continuous-abstract.txt`` reports that respecting this
dependency gained 6.7% accuracy and halved the effective search space.

Pinned slots (the first slot, source 0's layer 0; the last, the last source's last layer
in the last repetition) are always kept and carry no include variable; their scales stay
free. A path with no kept slot cannot be built: :meth:`DataFlowSpace.path` raises
:class:`~bambo.errors.InfeasibleError` for it (pinning either end rules it out).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from bambo.dataflow.path import Hop, LayerPath
from bambo.errors import BoundsError, ConfigError, InfeasibleError
from bambo.space import check_decision_vector

__all__ = ["DataFlowSpace"]


class DataFlowSpace:
    """Binary include variables and continuous input scales over ``r`` repetitions of the sources' layers.

    Args:
        layer_counts: Source name -> its number of layers, in pool order (all equal).
        repeats: ``r``, how many times the pool of layers is repeated.
        scale_bounds: ``(lower, upper)`` of every scale; must contain 1 (a dropped slot's
            canonical scale).
        pin_first: Always run the first slot (source 0's layer 0).
        pin_last: Always run the last slot (the last source's last layer, last repetition);
            off by default: it rules out the first source's own layer order (the frame's own
            model) as a path.
    """

    def __init__(
        self,
        layer_counts: Mapping[str, int],
        repeats: int = 1,
        scale_bounds: tuple[float, float] = (0.5, 1.5),
        pin_first: bool = True,
        pin_last: bool = False,
    ) -> None:
        if not layer_counts:
            raise ConfigError("a data-flow space needs at least one source model")
        counts = set(layer_counts.values())
        if len(counts) != 1 or min(counts) < 1:
            raise ConfigError(f"every source needs the same positive number of layers, got {dict(layer_counts)}")
        if repeats < 1:
            raise ConfigError(f"repeats must be >= 1, got {repeats}")
        low, high = (float(v) for v in scale_bounds)
        if not low <= 1.0 <= high or low <= 0:
            raise ConfigError(f"scale bounds {scale_bounds} must be positive and contain 1 (a dropped slot's scale)")
        self.sources = list(layer_counts)
        self.n_layers = counts.pop()
        self.repeats = repeats
        self.scale_bounds = (low, high)
        self.slots: list[tuple[str, int]] = [
            (source, layer) for _ in range(repeats) for source in self.sources for layer in range(self.n_layers)
        ]
        pinned = ({0} if pin_first else set()) | ({len(self.slots) - 1} if pin_last else set())
        self.pinned = sorted(pinned)
        self.free = [t for t in range(len(self.slots)) if t not in pinned]
        n_free = len(self.free)
        self.bounds = torch.tensor(
            [[0.0] * n_free + [low] * len(self.slots), [1.0] * n_free + [high] * len(self.slots)], dtype=torch.float64
        )

    @property
    def n_slots(self) -> int:
        """``T``, the slots of the repeated pool."""
        return len(self.slots)

    @property
    def dim(self) -> int:
        """Decision variables: an include bit per free slot, a scale per slot."""
        return len(self.free) + len(self.slots)

    @property
    def discrete_dims(self) -> list[int]:
        """Indices of the include bits in ``x`` (each takes 0 or 1)."""
        return list(range(len(self.free)))

    @property
    def parameter_names(self) -> list[str]:
        """``"use/{t}:{source}:{layer}"`` per free slot, then ``"scale/{t}:{source}:{layer}"`` per slot."""
        label = [f"{t}:{s}:{layer}" for t, (s, layer) in enumerate(self.slots)]
        return [f"use/{label[t]}" for t in self.free] + [f"scale/{label[t]}" for t in range(self.n_slots)]

    def check(self, x: Tensor) -> Tensor:
        """Validate one decision vector; returns it as float64 of shape ``(dim,)``.

        Raises:
            BoundsError: Wrong shape, a non-finite entry, an entry outside its bounds
                (names the variable).
        """
        return check_decision_vector(x, self.bounds, self.parameter_names)

    def kept(self, x: Tensor) -> list[bool]:
        """Whether each slot runs: its bit rounded (>= 0.5), or pinned."""
        x = self.check(x)
        use = [True] * self.n_slots
        for i, t in enumerate(self.free):
            use[t] = bool(x[i] >= 0.5)
        return use

    def canonical(self, X: Tensor) -> Tensor:
        """The canonical form of decision vectors: one vector per path.

        The path's hops are laid on the earliest slots that hold them (the last hop on the
        last slot when it is pinned), every other slot is dropped with scale 1. Two vectors
        that build the same path (bits on either side of 0.5, any scale on a dropped slot,
        or the same layer kept in another repetition) get the same canonical form; a vector
        that keeps no slot gets all bits 0 and all scales 1.

        Vectorised over rows (one pass over the ``T`` slots) and differentiable in the kept
        scales: each kept scale is moved to its canonical slot (a scatter), so an
        acquisition function evaluated at ``canonical(X)`` has the gradient of the scales
        that matter and none for the dropped ones. The bits are piecewise constant.

        Args:
            X: Shape ``(..., dim)``, inside the bounds.

        Returns:
            The same shape.

        Raises:
            BoundsError: The last dimension is not :attr:`dim`, or an entry is not finite.
        """
        X = torch.as_tensor(X, dtype=torch.float64)
        if X.shape[-1] != self.dim:
            raise BoundsError(f"decision vectors have {X.shape[-1]} entries, expected {self.dim}")
        if not bool(torch.isfinite(X).all()):
            raise BoundsError("decision vectors must be finite")
        rows = X.reshape(-1, self.dim)
        n, n_free, slots = rows.shape[0], len(self.free), self.n_slots
        pool = len(self.sources) * self.n_layers  # slot t holds pool entry t mod pool
        keep = torch.ones(n, slots, dtype=torch.bool)
        keep[:, self.free] = rows[:, :n_free].detach() >= 0.5
        target = torch.full((n, slots), slots, dtype=torch.long)  # column ``slots``: a dropped slot's sink
        previous = torch.full((n,), -1, dtype=torch.long)
        for t in range(slots):
            earliest = previous + 1 + torch.remainder(t % pool - (previous + 1), pool)
            if t == slots - 1 and t in self.pinned:
                earliest = torch.full_like(earliest, t)
            target[:, t] = torch.where(keep[:, t], earliest, target[:, t])
            previous = torch.where(keep[:, t], earliest, previous)
        ones = rows.new_ones(n, slots + 1)
        scales = ones.scatter(1, target, rows[:, n_free:])[:, :slots]
        bits = rows.new_zeros(n, slots + 1).scatter(1, target, ones[:, :slots])[:, :slots]
        scales = torch.where(bits > 0, scales, 1.0)
        return torch.cat([bits[:, self.free], scales], dim=-1).reshape(X.shape)

    def path(self, x: Tensor) -> LayerPath:
        """The layer path of a decision vector.

        Raises:
            BoundsError: ``x`` is malformed (see :meth:`check`).
            InfeasibleError: No slot is kept (possible only with neither end pinned).
        """
        use = self.kept(x)
        scales = self.check(x)[len(self.free) :]
        hops = [Hop(s, layer, float(scales[t])) for t, (s, layer) in enumerate(self.slots) if use[t]]
        if not hops:
            raise InfeasibleError("the decision vector keeps no slot: a path needs at least one layer")
        return LayerPath(tuple(hops))

    def encode(self, path: LayerPath) -> Tensor:
        """The canonical decision vector of ``path``: its hops on the earliest slots that hold them.

        The last hop goes on the last slot when that slot is pinned.

        Raises:
            ConfigError: The path cannot be laid on the slots (names the first hop that does
                not fit), or it does not run a pinned slot.
        """
        x_bits, x_scales = [0.0] * self.n_slots, [1.0] * self.n_slots
        last = self.n_slots - 1
        t = 0
        for i, hop in enumerate(path.hops):
            if i == len(path) - 1 and last in self.pinned and self.slots[last] == (hop.source, hop.layer):
                t = max(t, last)
            while t < self.n_slots and self.slots[t] != (hop.source, hop.layer):
                t += 1
            if t == self.n_slots:
                raise ConfigError(f"hop {i} ({hop.source}:{hop.layer}) has no slot left after the previous hops")
            x_bits[t], x_scales[t] = 1.0, hop.scale
            t += 1
        for t in self.pinned:
            if not x_bits[t]:
                raise ConfigError(f"the path does not run pinned slot {t} ({self.slots[t][0]}:{self.slots[t][1]})")
        return self.check(torch.tensor([x_bits[t] for t in self.free] + x_scales, dtype=torch.float64))

    def cost(self, x: Tensor) -> int:
        """Hops the path runs (its depth: the inference cost beside the task metrics)."""
        return sum(self.kept(x))

    def __repr__(self) -> str:
        return (
            f"DataFlowSpace(sources={self.sources}, layers={self.n_layers}, repeats={self.repeats}, "
            f"slots={self.n_slots}, dim={self.dim}, scales={self.scale_bounds})"
        )
