"""Optimal contiguous block partitioning of layers (BAMBO Sec. 3.2, Eq. 5-6, Algorithm 1).

Given per-layer differences ``d`` (length L) and K blocks, minimise over
contiguous partitions ``P = (B_1, ..., B_K)``::

    J(P) = sum_k  w_var * sum_{l in B_k} (d_l - mean_{B_k} d)^2          (Var, Eq. 6)
                 + lam   * (sum_{l in B_k} d_l - sum_l d_l / K)^2           (Dev, Eq. 6)

The first term (``n_k`` times the within-block variance) wants homogeneous
blocks; the second wants each block to carry an equal share of the difference
mass. Both block costs come in O(1) from prefix sums of ``d`` and ``d^2``, and
the cost is additive over blocks, so dynamic programming over
``DP[k][j] = min_i DP[k-1][i] + C(i, j)`` finds the global optimum in O(K L^2)
(BAMBO App. A). Here the inner minimum is one vectorised NumPy reduction per k.

Partitioners:

- ``hybrid``: ``w_var = 1``, ``lam`` as given (BAMBO);
- ``variance``: ``lam = 0`` (ordered Fisher-Jenks natural breaks);
- ``balance``: ``w_var = 0`` (equal difference mass per block);
- ``uniform``: equal layer counts (no optimisation).

**Scale-free lambda.** Both terms scale as ``d^2``, so multiplying ``d`` by a
constant changes nothing; but their sizes depend on L, K and how spread ``d``
is. With ``scale_free=True`` (the default) the objective is taken as::

    J~(P) = Var(P) / T  +  lam~ * Dev(P) / (S^2 / K)

where ``T = sum_l (d_l - mean d)^2`` is the within-variance of a single block
(so the first term is the fraction of the total variance left inside blocks, in
[0, 1]) and ``Dev(P) / (S^2/K) = mean_k ((S_k - S/K) / (S/K))^2`` is the mean
squared *relative* deviation of the block masses from the ideal share ``S/K``.
Both are dimensionless, so ``lam~`` means the same for any model, depth and K;
it is converted to the raw ``lam = lam~ * T * K / S^2`` of Eq. 5. The default
``lam~ = 1`` weighs "all of the variance left inside blocks" the same as "every
block off its mass share by 100%", so neither term dominates: high-difference
layers get small blocks and low-difference layers share large ones (BAMBO
Fig. 2). The partitions of the digits benchmark and of MiniLM, with the variance
left inside blocks and the deviation of the block masses of each partitioner,
are in ``benchmarks/results/partition.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from bambo.errors import ConfigError, UnknownNameError

Method = Literal["hybrid", "variance", "balance", "uniform"]
PARTITIONERS: tuple[str, ...] = ("hybrid", "variance", "balance", "uniform")
DEFAULT_LAMBDA = 1.0


@dataclass(frozen=True)
class Partition:
    """Contiguous blocks of layers; a sequence of ``range`` objects.

    Attributes:
        blocks: ``blocks[k]`` is the range of layer indices of block k.
        method: The partitioner that chose them.
        cost: The raw objective ``J`` of Eq. 5 at these blocks (with ``lam``).
        lam: The raw lambda of Eq. 5 that was used.
    """

    blocks: tuple[range, ...]
    method: str = "given"
    cost: float = float("nan")
    lam: float = 0.0

    def __iter__(self) -> Iterator[range]:
        return iter(self.blocks)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, k: int) -> range:
        return self.blocks[k]

    def describe(self) -> str:
        """``"0-1 | 2-4 | 5"``-style summary."""
        return " | ".join(f"{b.start}-{b.stop - 1}" if len(b) > 1 else f"{b.start}" for b in self.blocks)


def _check_inputs(d: Sequence[float] | np.ndarray, k: int) -> np.ndarray:
    values = np.asarray(d, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ConfigError(f"layer differences must be a non-empty 1-D sequence, got shape {values.shape}")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ConfigError(f"layer difference d[{bad[0]}] is not finite: {values[bad[0]]}")
    negative = np.flatnonzero(values < 0)
    if negative.size:
        raise ConfigError(f"layer difference d[{negative[0]}] is negative: {values[negative[0]]} (norms are >= 0)")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"number of blocks K must be an integer >= 1, got {k!r}")
    if k > values.size:
        raise ConfigError(f"number of blocks K={k} exceeds the number of layers L={values.size}")
    return values


def _cost_matrix(d: np.ndarray, k: int, w_var: float, lam: float) -> np.ndarray:
    """``C[i, j]`` = cost of block ``[i, j)`` for ``0 <= i < j <= L``; ``inf`` elsewhere."""
    s1 = np.concatenate([[0.0], np.cumsum(d)])
    centred = d - d.mean()  # the within-block sum of squares is shift-invariant: centring keeps it exact
    c1 = np.concatenate([[0.0], np.cumsum(centred)])
    c2 = np.concatenate([[0.0], np.cumsum(centred * centred)])
    i = np.arange(len(d) + 1)[:, None]
    j = np.arange(len(d) + 1)[None, :]
    n = (j - i).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        block_sum = s1[None, :] - s1[:, None]
        centred_sum = c1[None, :] - c1[:, None]
        sse = np.maximum((c2[None, :] - c2[:, None]) - centred_sum**2 / n, 0.0)
        dev = (block_sum - s1[-1] / k) ** 2
        cost = w_var * sse + lam * dev
    return np.where(j > i, cost, np.inf)


def block_cost(d: Sequence[float] | np.ndarray, blocks: Sequence[range], lam: float, w_var: float = 1.0) -> float:
    """The objective J of Eq. 5 for given blocks, computed directly (no prefix sums).

    Args:
        d: Layer differences, shape ``(L,)``.
        blocks: Contiguous blocks covering ``0..L-1``.
        lam: Raw lambda.
        w_var: Weight of the variance term (1, or 0 for balance only).
    """
    values = np.asarray(d, dtype=np.float64)
    target = values.sum() / len(blocks)
    total = 0.0
    for block in blocks:
        part = values[block.start : block.stop]
        total += w_var * float(((part - part.mean()) ** 2).sum()) + lam * float((part.sum() - target) ** 2)
    return total


def optimal_blocks(d: np.ndarray, k: int, lam: float, w_var: float = 1.0) -> tuple[tuple[range, ...], float]:
    """Exact minimiser of Eq. 5 by dynamic programming (Algorithm 1).

    Ties are broken towards earlier split points, so the result is deterministic.

    Returns:
        ``(blocks, cost)``.
    """
    L = len(d)
    cost = _cost_matrix(d, k, w_var, lam)
    best = np.full((k + 1, L + 1), np.inf)
    split = np.zeros((k + 1, L + 1), dtype=np.int64)
    best[0, 0] = 0.0
    for blocks in range(1, k + 1):
        candidates = best[blocks - 1][:, None] + cost  # (i, j)
        split[blocks] = np.argmin(candidates, axis=0)
        best[blocks] = candidates[split[blocks], np.arange(L + 1)]
    edges = [L]
    for blocks in range(k, 0, -1):
        edges.append(int(split[blocks, edges[-1]]))
    edges.reverse()
    return tuple(range(edges[b], edges[b + 1]) for b in range(k)), float(best[k, L])


def scale_free_lambda(d: np.ndarray, k: int, lam_tilde: float) -> float:
    """Convert the dimensionless ``lam~`` to Eq. 5's raw lambda: ``lam~ * T * K / S^2``.

    If ``d`` is constant (``T = 0``) the variance term vanishes and ``lam~`` is
    returned as is; likewise if ``S = 0`` (all differences zero).
    """
    total_sse = float(((d - d.mean()) ** 2).sum())
    mass = float(d.sum())
    if total_sse == 0.0 or mass == 0.0:
        return lam_tilde
    return lam_tilde * total_sse * k / mass**2


def partition_layers(
    d: Sequence[float] | np.ndarray,
    k: int,
    method: Method | str = "hybrid",
    lam: float = DEFAULT_LAMBDA,
    scale_free: bool = True,
) -> Partition:
    """Partition L layers into K contiguous blocks.

    Args:
        d: Layer differences ``Diff_l``, shape ``(L,)`` (see :mod:`bambo.partition.differences`).
        k: Number of blocks K (1 <= K <= L).
        method: ``hybrid``, ``variance``, ``balance`` or ``uniform``.
        lam: Lambda of the hybrid method: dimensionless ``lam~`` if ``scale_free``,
            else the raw lambda of Eq. 5.
        scale_free: Interpret ``lam`` as the dimensionless ``lam~`` (module docstring).

    Raises:
        ConfigError: K < 1, K > L, empty or non-finite ``d``, or negative lambda.
        UnknownNameError: Unknown method; the message lists the valid ones.
    """
    values = _check_inputs(d, k)
    if not math.isfinite(lam) or lam < 0:
        raise ConfigError(f"lambda must be finite and >= 0, got {lam}")
    if not values.any():
        raise ConfigError(
            "all layer differences are zero (one expert, or identical experts): every partition is equally "
            "good; with one expert, partition by its task-vector norms instead"
        )
    raw = scale_free_lambda(values, k, lam) if scale_free else float(lam)
    if method == "hybrid":
        blocks, cost = optimal_blocks(values, k, raw, 1.0)
        return Partition(blocks, "hybrid", cost, raw)
    if method == "variance":
        blocks, cost = optimal_blocks(values, k, 0.0, 1.0)
        return Partition(blocks, "variance", cost, 0.0)
    if method == "balance":
        blocks, _ = optimal_blocks(values, k, 1.0, 0.0)
        return Partition(blocks, "balance", block_cost(values, blocks, 1.0, 0.0), 1.0)
    if method == "uniform":
        from bambo.space import uniform_partition

        blocks = tuple(uniform_partition(len(values), k))
        return Partition(blocks, "uniform", block_cost(values, blocks, raw), raw)
    raise UnknownNameError("partitioner", str(method), PARTITIONERS)


def compare_partitioners(d: Sequence[float] | np.ndarray, k: int, lam: float = DEFAULT_LAMBDA) -> dict[str, Partition]:
    """Every partitioner on the same differences: ``{method: partition}`` (BAMBO Fig. 2's rows)."""
    return {method: partition_layers(d, k, method, lam) for method in PARTITIONERS}


def partition_terms(d: Sequence[float] | np.ndarray, blocks: Sequence[range]) -> tuple[float, float]:
    """The two dimensionless terms of the scale-free objective for given blocks.

    Returns:
        ``(variance share, mass deviation)``: the within-block sum of squares over
        that of one block (0 = perfectly homogeneous blocks), and the mean squared
        relative deviation of block masses from ``S/K`` (0 = perfectly balanced).
    """
    values = np.asarray(d, dtype=np.float64)
    total = float(((values - values.mean()) ** 2).sum())
    within = block_cost(values, blocks, lam=0.0)
    share = values.sum() / len(blocks)
    masses = np.array([values[b.start : b.stop].sum() for b in blocks])
    deviation = float((((masses - share) / share) ** 2).mean()) if share != 0 else 0.0
    return (within / total if total > 0 else 0.0), deviation
