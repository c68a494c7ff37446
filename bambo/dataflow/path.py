"""Layer paths of data-flow-space (DFS) merging: which layer of which model runs, in which order, at which scale.

Parameter-space merging averages weights; DFS merging (Akiba et al. 2024, "Evolutionary
Optimization of Model Merging Recipes", Sec. 3.2) keeps every weight as it is and changes
the path a token takes through the layers of several source models. A path is an ordered
list of hops; a hop runs one layer of one source on its input hidden state multiplied by
the hop's scale. Sakana's released checkpoint (EvoMistral) stores exactly this per hop
(``input_layers``, ``input_scales``).

Sakana's search scales the input of layer ``j`` after layer ``i`` by ``1 + W[i, j]``, an
``M x M`` matrix over all layer pairs. A path keeps one scale per hop instead: the matrix
has ``M^2`` entries of which a path uses ``len(path) - 1``, so almost all of them are
never read and only inflate the search space; a scale per hop is the quantity the released
model stores and the one a forward pass needs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bambo.errors import ConfigError

__all__ = ["Hop", "LayerPath"]


@dataclass(frozen=True)
class Hop:
    """One step of a path: layer ``layer`` of source ``source``, its input multiplied by ``scale``.

    Attributes:
        source: Name of the source model (a key of the sources the path is built from).
        layer: Index of the layer in that source (0-based).
        scale: Factor applied to the hidden state before the layer.
    """

    source: str
    layer: int
    scale: float = 1.0


@dataclass(frozen=True)
class LayerPath:
    """An ordered, non-empty sequence of hops.

    Attributes:
        hops: The hops, first to last.
    """

    hops: tuple[Hop, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "hops", tuple(self.hops))
        if not self.hops:
            raise ConfigError("a layer path needs at least one hop (the path is empty)")
        for i, hop in enumerate(self.hops):
            if not isinstance(hop, Hop):
                raise ConfigError(f"hop {i} is a {type(hop).__name__}, not a Hop")
            if isinstance(hop.layer, bool) or not isinstance(hop.layer, int):
                raise ConfigError(f"hop {i} ({hop.source}): layer index {hop.layer!r} is not an integer")
            if not math.isfinite(hop.scale):
                raise ConfigError(f"hop {i} ({hop.source}, layer {hop.layer}): scale {hop.scale} is not finite")

    @classmethod
    def of(cls, hops: Iterable[Hop | tuple[str, int] | tuple[str, int, float]]) -> LayerPath:
        """A path from hops or ``(source, layer[, scale])`` tuples."""
        return cls(tuple(h if isinstance(h, Hop) else Hop(*h) for h in hops))

    @classmethod
    def identity(cls, source: str, n_layers: int) -> LayerPath:
        """The source's own layer order, every scale 1 (builds a model equal to the source)."""
        return cls(tuple(Hop(source, i) for i in range(n_layers)))

    def __len__(self) -> int:
        return len(self.hops)

    @property
    def sources(self) -> list[str]:
        """The sources the path uses, in order of first use."""
        return list(dict.fromkeys(h.source for h in self.hops))

    @property
    def unscaled(self) -> bool:
        """Whether every hop's scale is exactly 1 (what mergekit's ``passthrough`` can express)."""
        return all(h.scale == 1.0 for h in self.hops)

    def check(self, layer_counts: Mapping[str, int]) -> None:
        """Check every hop against the sources' layer counts.

        Args:
            layer_counts: Source name -> number of layers.

        Raises:
            ConfigError: A hop names an unknown source or a layer out of range (names the hop).
        """
        for i, hop in enumerate(self.hops):
            if hop.source not in layer_counts:
                raise ConfigError(
                    f"hop {i}: unknown source {hop.source!r}; valid sources: {', '.join(sorted(layer_counts))}"
                )
            count = layer_counts[hop.source]
            if not 0 <= hop.layer < count:
                raise ConfigError(
                    f"hop {i}: layer {hop.layer} is out of range for source {hop.source!r} "
                    f"({count} layers: 0..{count - 1})"
                )

    @classmethod
    def parse(cls, text: str) -> LayerPath:
        """The path :meth:`describe` writes: ``"a:0 a:1 b:1x0.8"`` (hops separated by spaces).

        Raises:
            ConfigError: An empty text, or a hop that is not ``source:layer[xscale]`` (names it).
        """
        hops = []
        for i, token in enumerate(str(text).split()):
            source, sep, rest = token.rpartition(":")
            layer, times, scale = rest.partition("x")
            try:
                if not sep or not source or (times and not scale):
                    raise ValueError
                hops.append(Hop(source, int(layer), float(scale) if scale else 1.0))
            except ValueError:
                raise ConfigError(
                    f"hop {i} {token!r} is not source:layer or source:layerxscale (e.g. 'a:3' or 'b:0x1.2')"
                ) from None
        return cls(tuple(hops))

    def describe(self) -> str:
        """``"a:0 a:1 b:1x0.8 ..."``: source and layer per hop, the scale where it is not 1."""
        return " ".join(f"{h.source}:{h.layer}" + ("" if h.scale == 1.0 else f"x{h.scale:g}") for h in self.hops)
