"""Multi-fidelity evaluation: nested evaluation subsets and successive halving inside each batch.

A *fidelity* ``f`` in (0, 1] is the share of its evaluation data an evaluation uses. An
evaluator that names a ``fidelity`` parameter (:class:`~bambo.merge_problem.MergeProblem`)
is given it and scores the candidate on the first ``ceil(f * n)`` examples of a seeded
permutation of its ``n`` examples (:func:`nested_subset`): a larger fidelity contains every
smaller one, so a low-fidelity score is a noisy, unbiased-in-expectation preview of the
full one on part of the same data. Every journaled trial records its fidelity and its
cost (the share of a full evaluation it used); a run's budget is counted in that cost.

:class:`Halving` is successive halving (Jamieson & Talwalkar 2016; Li et al.'s Hyperband,
one rung) inside every batch of the experiment loop, where a plain loop asks the strategy
for ``q`` candidates and evaluates them in full:

1. the strategy is asked for ``factor * q`` candidates, journaled at ``fidelity``, and all
   are evaluated there (cost ``factor * q * fidelity``);
2. :func:`promote` keeps at most ``q`` of them for a full evaluation: only those not beaten
   by the full-fidelity front found so far by more than the low fidelity's noise (a
   candidate that cannot change the front costs no full evaluation), ranked by
   non-dominated sorting with the noise as a margin, ties by optimistic hypervolume gain;
3. the promoted candidates are evaluated at fidelity 1 (new trials whose ``parent`` is the
   low-fidelity trial, journaled with the promotion decision in one transaction);
4. the strategy is told one row per candidate: the full-fidelity objectives of a promoted
   one; for the others their low-fidelity objectives (``low_fidelity="tell"``: the
   surrogate learns where not to look, with noise it estimates as for any observation) or
   nothing (``"drop"``: told as failed, so models see full-fidelity data only).

The noise margin is the root-mean-square difference between full- and low-fidelity
objectives of the candidates promoted in earlier batches (none before the first pairs):
estimated from the run itself, so no problem has to state its noise. Only earlier batches
count, so a resumed run promotes exactly what the uninterrupted run did.

The result and its hypervolume use full-fidelity evaluations only; low-fidelity trials stay
in the journal (and in the cost).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field
from torch import Tensor

from bambo.config_base import FrozenConfig
from bambo.errors import ConfigError
from bambo.pareto import hypervolume, pareto_mask

if TYPE_CHECKING:
    from bambo.store import Trial

FULL = 1.0
LowFidelity = Literal["tell", "drop"]


def check_fidelity(fidelity: float) -> float:
    """``fidelity`` as a float in (0, 1].

    Raises:
        ConfigError: It is not a number in (0, 1].
    """
    try:
        value = float(fidelity)
    except (TypeError, ValueError):
        raise ConfigError(f"fidelity must be a number in (0, 1], got {fidelity!r}") from None
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"fidelity must be in (0, 1], got {fidelity!r}")
    return value


def subset_size(n: int, fidelity: float) -> int:
    """Examples scored at ``fidelity`` out of ``n``: ``ceil(fidelity * n)``, at least 1 (``n`` at 1)."""
    if n < 1:
        raise ConfigError(f"an evaluation set needs at least one example, got n={n}")
    return min(n, max(1, math.ceil(check_fidelity(fidelity) * n - 1e-9)))


def nested_subset(n: int, fidelity: float, seed: int = 0) -> Tensor:
    """Indices of the examples scored at ``fidelity``: a prefix of one seeded permutation of ``range(n)``.

    The subsets are nested (a larger fidelity's contains a smaller one's) and the same for a seed.
    At fidelity 1 every index, in order.

    Args:
        n: Examples in the evaluation set.
        fidelity: Share of them, in (0, 1].
        seed: Seed of the permutation.

    Returns:
        Sorted indices, shape ``(subset_size(n, fidelity),)``.
    """
    k = subset_size(n, fidelity)
    if k == n:
        return torch.arange(n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[:k].sort().values


class Halving(FrozenConfig):
    """Successive halving inside each batch (the module docstring).

    Attributes:
        fidelity: The low fidelity every candidate is first evaluated at, in (0, 1).
        factor: Candidates proposed per full evaluation of the batch (``k``: ``k * q`` proposed).
        low_fidelity: ``"tell"`` the strategy the low-fidelity objectives of candidates not
            promoted, or ``"drop"`` them (told as failed).
    """

    fidelity: float = Field(default=0.25, gt=0.0, lt=1.0)
    factor: int = Field(default=3, ge=1, le=64)
    low_fidelity: LowFidelity = "tell"

    def batch_cost(self, q: int) -> float:
        """The most one batch of ``q`` full evaluations can cost (every candidate promoted)."""
        return self.factor * q * self.fidelity + q


def noise_margin(pairs: Sequence[tuple[Tensor, Tensor]], m: int) -> Tensor:
    """Root-mean-square difference between full- and low-fidelity objectives, per objective.

    Args:
        pairs: ``(y_low, y_full)`` of promoted candidates, each shape ``(m,)``, finite.
        m: Number of objectives.

    Returns:
        Shape ``(m,)``; zeros without pairs.
    """
    if not pairs:
        return torch.zeros(m, dtype=torch.float64)
    diff = torch.stack([full - low for low, full in pairs])
    return diff.pow(2).mean(dim=0).sqrt()


def _beaten(a: Tensor, b: Tensor, margin: Tensor) -> Tensor:
    """``[i, j]``: row ``b[j]`` beats ``a[i]`` by more than ``margin`` in every objective."""
    return (b.unsqueeze(0) > a.unsqueeze(1) + margin).all(dim=-1)


def promote(
    Y_low: Tensor,
    q: int,
    front: Tensor,
    margin: Tensor,
    ref_point: Tensor | None = None,
) -> list[int]:
    """Which low-fidelity candidates get a full evaluation (at most ``q``).

    1. Candidates whose low-fidelity objectives some point of ``front`` beats by more than
       ``margin`` in every objective are out: their full evaluation would almost surely
       not change the front.
    2. The others are ranked by non-dominated sorting, where one candidate dominates
       another only by more than ``margin`` in every objective (candidates within the
       noise of each other share a rank), and taken rank by rank.
    3. Within the rank that does not fit whole, the candidate adding the most
       hypervolume to the front (and to those already taken) at its optimistic value
       ``y + margin`` goes first; equal gains keep the proposal order.

    Args:
        Y_low: Low-fidelity objectives, maximisation form, ``(n, m)``; NaN rows failed
            (never promoted).
        q: At most this many are promoted.
        front: Full-fidelity objectives observed so far, ``(p, m)`` (``p`` may be 0).
        margin: The low fidelity's noise per objective, ``(m,)`` (:func:`noise_margin`).
        ref_point: Hypervolume reference for the tie-break (default: the worst value
            seen per objective minus 10% of the range).

    Returns:
        Row indices of ``Y_low``, in the order taken.
    """
    if q < 1:
        raise ConfigError(f"q must be >= 1, got {q}")
    n, m = Y_low.shape
    ok = torch.isfinite(Y_low).all(dim=-1)
    front = front[torch.isfinite(front).all(dim=-1)] if front.numel() else front.reshape(0, m)
    alive = ok.clone()
    if front.shape[0] and ok.any():
        alive[ok] = ~_beaten(Y_low[ok], front, margin).any(dim=1)
    rows = alive.nonzero().flatten().tolist()
    if not rows:
        return []
    beaten = _beaten(Y_low[rows], Y_low[rows], margin)  # [i, j]: j beats i by more than the margin
    remaining, ranks = list(range(len(rows))), []
    while remaining:
        layer = [i for i in remaining if not any(beaten[i, j] for j in remaining if j != i)]
        ranks.append(layer)
        remaining = [i for i in remaining if i not in layer]
    chosen: list[int] = []
    for layer in ranks:
        picks = [rows[i] for i in layer]
        if len(chosen) + len(picks) <= q:
            chosen += picks
            continue
        chosen += _by_gain(Y_low, picks, q - len(chosen), front, chosen, margin, ref_point)
        break
    return chosen[:q]


def _by_gain(
    Y_low: Tensor,
    picks: list[int],
    k: int,
    front: Tensor,
    chosen: list[int],
    margin: Tensor,
    ref_point: Tensor | None,
) -> list[int]:
    """``k`` of ``picks``, greedily by hypervolume added at ``y + margin`` to the front and earlier choices."""
    optimistic = Y_low + margin
    every = torch.cat([front, optimistic[torch.isfinite(optimistic).all(dim=-1)]])
    if ref_point is None:
        span = (every.max(0).values - every.min(0).values).clamp_min(1e-12)
        ref_point = every.min(0).values - 0.1 * span
    base = torch.cat([front, optimistic[chosen]]) if chosen else front
    taken: list[int] = []
    left = list(picks)
    for _ in range(k):
        current = _hv(base, ref_point)
        gains = [_hv(torch.cat([base, optimistic[r].unsqueeze(0)]), ref_point) - current for r in left]
        best = max(range(len(left)), key=lambda i: (gains[i], -i))
        taken.append(left.pop(best))
        base = torch.cat([base, optimistic[taken[-1]].unsqueeze(0)])
    return taken


def _hv(Y: Tensor, ref_point: Tensor) -> float:
    Y = Y[(Y > ref_point).all(dim=-1)]
    return hypervolume(Y[pareto_mask(Y)], ref_point) if Y.shape[0] else 0.0


def told_objectives(stage0: Sequence[Trial], stage1: Sequence[Trial], low_fidelity: LowFidelity, m: int) -> Tensor:
    """What the strategy learns from a halving batch: one row per candidate, in proposal order.

    Args:
        stage0: The low-fidelity trials (one per candidate proposed).
        stage1: The full-fidelity trials of the promoted ones (``parent``: a stage-0 id).
        low_fidelity: ``"tell"`` or ``"drop"`` (see :class:`Halving`).
        m: Number of objectives.

    Returns:
        Maximisation-form objectives, ``(len(stage0), m)``; NaN rows are failed (or dropped).
    """
    full = {t.parent: t for t in stage1}
    rows = []
    for trial in stage0:
        source = full.get(trial.id, trial if low_fidelity == "tell" else None)
        if source is None or source.status != "completed" or source.objectives is None:
            rows.append(torch.full((m,), float("nan"), dtype=torch.float64))
        else:
            rows.append(torch.tensor(source.objectives, dtype=torch.float64))
    return torch.stack(rows) if rows else torch.empty(0, m, dtype=torch.float64)


def choose_promotions(
    earlier: Sequence[Trial],
    stage0: Sequence[Trial],
    q: int,
    columns: Sequence[int] | None = None,
    ref_point: Tensor | None = None,
) -> list[Trial]:
    """The low-fidelity trials of a batch to evaluate in full (:func:`promote` on journaled trials).

    Args:
        earlier: Every trial of the earlier batches: their full-fidelity evaluations are the
            front, and their promoted pairs give the noise margin (:func:`noise_margin`).
        stage0: The batch's low-fidelity trials, ended.
        q: At most this many are promoted.
        columns: The objectives that define the front (``None``: all).
        ref_point: Hypervolume reference over those columns, maximisation form (tie-break).

    Returns:
        The promoted trials, in the order taken.
    """

    def values(trial: Trial) -> Tensor | None:
        if trial.status != "completed" or trial.objectives is None:
            return None
        y = torch.tensor(trial.objectives, dtype=torch.float64)
        return y if columns is None else y[list(columns)]

    if not stage0:
        return []
    by_id = {t.id: t for t in earlier}
    full = [(t, values(t)) for t in earlier if t.fidelity >= FULL]
    front = [y for _, y in full if y is not None]
    pairs = []
    for trial, y in full:
        parent = by_id.get(trial.parent) if trial.parent is not None else None
        low = None if parent is None else values(parent)
        if y is not None and low is not None:
            pairs.append((low, y))
    low_rows = [values(t) for t in stage0]
    m = next((y.numel() for y in [*front, *(r for r in low_rows if r is not None)]), 0)
    if m == 0:
        return []
    Y_low = torch.stack([r if r is not None else torch.full((m,), float("nan"), dtype=torch.float64) for r in low_rows])
    front_Y = torch.stack(front) if front else torch.empty(0, m, dtype=torch.float64)
    rows = promote(Y_low, q, front_Y, noise_margin(pairs, m), ref_point)
    return [stage0[i] for i in rows]
