"""Model-free baselines: Sobol, random and grid search, and the evolutionary baselines.

NSGA-II, MOEA/D and CMA-ES live in :mod:`bambo.strategies.evolutionary` and are
re-exported here, so every baseline is importable from this module.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.quasirandom import SobolEngine

from bambo.errors import ConfigError
from bambo.problem import Problem
from bambo.strategies.base import Strategy
from bambo.strategies.evolutionary import CMAESWeightedSum, MOEADSearch, NSGA2Search

DEFAULT_LEVELS = tuple(i / 10 for i in range(1, 10))
"""The MAP/BAMBO grid levels 0.1, 0.2, ..., 0.9."""


class SobolSearch(Strategy):
    """Scrambled Sobol points over the box, in sequence (a space-filling baseline).

    Args:
        problem: The problem.
        seed: Seed of the Sobol scrambling.
    """

    name = "sobol"
    asynchronous = True  # its points do not depend on the data told

    def __init__(self, problem: Problem, seed: int = 0) -> None:
        super().__init__(problem, seed)
        self._engine = SobolEngine(problem.dim, scramble=True, seed=seed)

    def ask(self, n: int) -> Tensor:
        lower, upper = self.problem.bounds
        unit = self._engine.draw(n, dtype=torch.float64)
        return lower + (upper - lower) * unit


class RandomSearch(Strategy):
    """Independent uniform points in the box.

    Args:
        problem: The problem.
        seed: Seed of the ``torch.Generator`` drawing the points.
    """

    name = "random"
    asynchronous = True  # its points do not depend on the data told

    def __init__(self, problem: Problem, seed: int = 0) -> None:
        super().__init__(problem, seed)
        self._generator = torch.Generator().manual_seed(seed)

    def ask(self, n: int) -> Tensor:
        self._check_n(n)
        lower, upper = self.problem.bounds
        unit = torch.rand(n, self.problem.dim, generator=self._generator, dtype=torch.float64)
        return lower + (upper - lower) * unit


class GridSearch(Strategy):
    """A grid over the coefficients, handed out in a seeded random order.

    The brute-force direct search of MAP (Sec. 4, "Pareto front-finding
    baselines") and the model-level baseline of BAMBO (Sec. 4: interpolation
    weights 0.1 to 0.9 in steps of 0.1, its Table 2). Level values in ``[0, 1]`` are mapped affinely onto each
    dimension's bounds. Because the order is a random permutation, a partial
    budget is an unbiased sample of the grid; once the grid is exhausted ``ask``
    returns a ``(0, d)`` tensor, which ends :func:`bambo.optimize`.

    Args:
        problem: The problem.
        seed: Seed of the order in which grid points are handed out.
        levels: Level values in the unit interval (default 0.1, ..., 0.9).
        mode: ``"product"``: the full Cartesian product, ``len(levels) ** d``
            points. ``"simplex"``: only the points whose level coordinates sum to
            one, e.g. (0.1, 0.9), ..., (0.9, 0.1) for d = 2.

    Raises:
        ConfigError: Bad levels or mode, an empty grid, or one over
            :attr:`MAX_POINTS` points.
    """

    name = "grid"
    MAX_POINTS = 1_000_000

    def __init__(
        self, problem: Problem, seed: int = 0, *, levels: Sequence[float] | None = None, mode: str = "product"
    ) -> None:
        super().__init__(problem, seed)
        self.levels = _check_levels(DEFAULT_LEVELS if levels is None else levels)
        self.mode = mode
        d, n_levels = problem.dim, self.levels.shape[0]
        self._codes: Tensor | None = None
        if mode == "product":
            size = n_levels**d
        elif mode == "simplex":
            size = _count_simplex(self.levels.tolist(), d)
        else:
            raise ConfigError(f"grid mode must be 'product' or 'simplex', got {mode!r}")
        if size > self.MAX_POINTS:
            raise ConfigError(
                f"the {mode} grid of {n_levels} levels in {d} dimensions has {size:,} points, "
                f"more than the {self.MAX_POINTS:,} allowed; use fewer levels or the simplex mode"
            )
        if size == 0:
            raise ConfigError(f"the simplex grid over levels {self.levels.tolist()} in {d} dimensions has no point")
        if mode == "simplex":
            self._codes = torch.tensor(list(_simplex_codes(self.levels.tolist(), d)), dtype=torch.int64)
        self._size = size
        self._order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))
        self._next = 0

    @property
    def size(self) -> int:
        """Number of grid points."""
        return self._size

    @property
    def remaining(self) -> int:
        """Grid points not handed out yet."""
        return self._size - self._next

    def ask(self, n: int) -> Tensor:
        self._check_n(n)
        index = self._order[self._next : self._next + n]
        self._next += index.shape[0]
        if self._codes is None:  # mixed-radix digits of the product index
            n_levels = self.levels.shape[0]
            powers = n_levels ** torch.arange(self.problem.dim, dtype=torch.int64)
            codes = (index[:, None] // powers) % n_levels
        else:
            codes = self._codes[index]
        lower, upper = self.problem.bounds
        return lower + (upper - lower) * self.levels[codes]


def _check_levels(levels: Sequence[float]) -> Tensor:
    values = torch.as_tensor(levels, dtype=torch.float64)
    if values.dim() != 1 or values.shape[0] == 0:
        raise ConfigError(f"grid levels must be a non-empty sequence of numbers, got {levels!r}")
    if not torch.isfinite(values).all() or (values < 0).any() or (values > 1).any():
        raise ConfigError(f"grid levels must lie in [0, 1], got {values.tolist()}")
    if torch.unique(values).shape[0] != values.shape[0]:
        raise ConfigError(f"grid levels must be distinct, got {values.tolist()}")
    return values


def _count_simplex(levels: list[float], d: int) -> int:
    """Number of level tuples of length ``d`` summing to one (sums rounded to 9 decimals)."""
    counts = {0.0: 1}
    for _ in range(d):
        new: dict[float, int] = {}
        for total, count in counts.items():
            for level in levels:
                s = round(total + level, 9)
                if s <= 1.0:
                    new[s] = new.get(s, 0) + count
        counts = new
    return counts.get(1.0, 0)


def _simplex_codes(levels: list[float], d: int) -> Iterator[tuple[int, ...]]:
    """Level-index tuples whose levels sum to one, by depth-first search with pruning."""
    low, high = min(levels), max(levels)

    def extend(prefix: tuple[int, ...], total: float) -> Iterator[tuple[int, ...]]:
        left = d - len(prefix)
        if left == 0:
            if total == 1.0:
                yield prefix
            return
        if round(total + left * low, 9) > 1.0 or round(total + left * high, 9) < 1.0:
            return
        for i, level in enumerate(levels):
            s = round(total + level, 9)
            if s <= 1.0:
                yield from extend((*prefix, i), s)

    return extend((), 0.0)


__all__ = [
    "DEFAULT_LEVELS",
    "CMAESWeightedSum",
    "GridSearch",
    "MOEADSearch",
    "NSGA2Search",
    "RandomSearch",
    "SobolSearch",
]
