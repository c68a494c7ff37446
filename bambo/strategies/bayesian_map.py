"""Bayesian MAP: adaptive sampling over angular bins of the coefficient space (MAP Alg. 3, App. E.3).

Round 0 samples ``n_initial`` points uniformly. After each round the task
quadratics are refitted on *all* completed points, the coefficient vectors are
binned by their hyperspherical angles (each angle restricted to ``[0, pi/2]``,
``bins_per_angle`` bins per angle, MAP Fig. 13), and every bin is scored by the
mean squared error of the surrogates on its points plus half the bootstrap
standard deviation of that mean (``Q`` resamples, each dropping ``alpha = 20%``
of the bin's points independently). The next round draws bins in proportion
to their scores and a uniform point inside each drawn bin. When the rounds are
done, the amortised front comes from NSGA-III on the surrogates, as in MAP.

Departures from the released code, on purpose (see the issue's pitfalls): scores
use every evaluated point (not only the initial ones), and bootstrap resamples
are independent draws from the bin's full set (not a shrinking subset). A bin
with no points yet gets the largest score of any bin (it is unexplored, so at
least as uncertain as the worst explored one); with no score anywhere, bins are
drawn uniformly. The angles are those of the point in unit-box coordinates
(``(x - lower) / (upper - lower)``), which is MAP's ``c`` for its ``[0, 1]`` box.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bambo.errors import ConfigError
from bambo.problem import Problem
from bambo.result import Artifacts
from bambo.strategies.map import MAP, LinkChoice, TaskQuadratics


def hyperspherical_angles(C: Tensor) -> Tensor:
    """Angles ``phi_1..phi_{n-1}`` of non-negative vectors (MAP App. E.3, step 2).

    ``phi_i = atan2(||c_{i+1:}||, c_i)``, which equals the paper's arccos form and
    lies in ``[0, pi/2]`` for non-negative ``c``. The zero vector gets angles 0.

    Args:
        C: Shape ``(k, n)``, entries >= 0.

    Returns:
        Shape ``(k, n - 1)``.
    """
    tail = torch.flip(torch.cumsum(torch.flip(C**2, dims=[-1]), dim=-1), dims=[-1]).sqrt()  # ||c_{i:}||
    return torch.atan2(tail[:, 1:], C[:, :-1])


def angular_bins(C: Tensor, bins_per_angle: int) -> Tensor:
    """Flat bin index of each vector's direction (MAP App. E.3, steps 3-4).

    Args:
        C: Shape ``(k, n)``, entries >= 0.
        bins_per_angle: k_i, the same for every angle.

    Returns:
        Shape ``(k,)``, values in ``[0, bins_per_angle ** (n - 1))``.
    """
    phi = hyperspherical_angles(C)
    width = (math.pi / 2) / bins_per_angle
    b = torch.clamp((phi / width).floor().long(), 0, bins_per_angle - 1)
    powers = bins_per_angle ** torch.arange(b.shape[1], dtype=torch.long)
    return (b * powers).sum(dim=-1)


def bin_scores(
    errors: Tensor,
    bins: Tensor,
    n_bins: int,
    generator: torch.Generator,
    drop_rate: float = 0.2,
    n_bootstrap: int = 30,
    std_weight: float = 0.5,
) -> Tensor:
    """``score_k = mean_k + std_weight * std_k`` of the per-point errors in each bin (MAP Alg. 3).

    Args:
        errors: Squared surrogate error per point, shape ``(k,)``.
        bins: Bin of each point, shape ``(k,)``.
        n_bins: Number of bins.
        generator: Source of the bootstrap draws.
        drop_rate: Share of a bin's points each resample drops (at least one when the bin has two or more).
        n_bootstrap: Q, independent resamples per bin.
        std_weight: Weight of the bootstrap standard deviation.

    Returns:
        Shape ``(n_bins,)``; NaN for bins without points.
    """
    scores = torch.full((n_bins,), float("nan"), dtype=torch.float64)
    for k in range(n_bins):
        e = errors[bins == k]
        if e.numel() == 0:
            continue
        drop = max(1, round(drop_rate * e.numel())) if e.numel() >= 2 else 0
        keep = e.numel() - drop
        means = torch.stack(
            [e[torch.randperm(e.numel(), generator=generator)[:keep]].mean() for _ in range(n_bootstrap)]
        )
        std = means.std() if n_bootstrap > 1 and drop > 0 else torch.tensor(0.0, dtype=torch.float64)
        scores[k] = e.mean() + std_weight * std
    return scores


class BayesianMAP(MAP):
    """Bayesian MAP (MAP Alg. 3): rounds of samples drawn where the surrogates err most.

    Defaults follow the paper for two tasks: 6 initial points, then rounds of 3.
    ``ask`` hands out round 0, then each later round once the previous one has been
    told, then (optionally) predicted Pareto points to re-evaluate, then nothing.

    Args:
        problem: The problem; its lower bounds are the origin of the angles.
        seed: Seeds every draw.
        n_initial: n_0, uniform points of round 0.
        n_per_round: n_j for j >= 1.
        n_rounds: J, adaptive rounds after round 0.
        bins_per_angle: Bins per hyperspherical angle (``bins_per_angle ** (d - 1)`` bins).
        drop_rate: Bootstrap dropping rate alpha.
        n_bootstrap: Bootstrap resamples Q.
        std_weight: Weight of the bootstrap standard deviation in the score.
        link: As in :class:`MAP`.
        n_reevaluate: Predicted Pareto points to re-evaluate at the end.
        pop_size: NSGA-III population.
        n_generations: NSGA-III generations.
    """

    name = "bayesian-map"

    def __init__(
        self,
        problem: Problem,
        seed: int = 0,
        n_initial: int = 6,
        n_per_round: int = 3,
        n_rounds: int = 2,
        bins_per_angle: int = 4,
        drop_rate: float = 0.2,
        n_bootstrap: int = 30,
        std_weight: float = 0.5,
        link: LinkChoice = "auto",
        n_reevaluate: int = 0,
        pop_size: int = 100,
        n_generations: int = 100,
    ) -> None:
        if n_initial < 2 or n_per_round < 1 or n_rounds < 0:
            raise ConfigError(
                f"need n_initial >= 2, n_per_round >= 1, n_rounds >= 0; got {n_initial}, {n_per_round}, {n_rounds}"
            )
        if bins_per_angle < 1 or not 0 <= drop_rate < 1 or n_bootstrap < 1:
            raise ConfigError(
                f"need bins_per_angle >= 1, 0 <= drop_rate < 1, n_bootstrap >= 1; "
                f"got {bins_per_angle}, {drop_rate}, {n_bootstrap}"
            )
        if not 2 <= problem.dim <= 4:
            raise ConfigError(
                f"Bayesian MAP bins directions into bins_per_angle ** (d - 1) bins and is meant for few tasks "
                f"(the paper: N <= 3); it accepts 2 <= d <= 4, got d={problem.dim}; use MAP or BAMBO"
            )
        total = n_initial + n_rounds * n_per_round
        super().__init__(problem, seed, total, "uniform", link, n_reevaluate, pop_size, n_generations)
        self.n_initial, self.n_per_round, self.n_rounds = n_initial, n_per_round, n_rounds
        self.bins_per_angle, self.drop_rate, self.n_bootstrap, self.std_weight = (
            bins_per_angle,
            drop_rate,
            n_bootstrap,
            std_weight,
        )
        self._generator = torch.Generator().manual_seed(seed)
        self._queue = self._uniform(n_initial)
        self._handed_out = n_initial
        self.round_scores: list[list[float | None]] = []

    @property
    def n_bins(self) -> int:
        """Number of angular bins."""
        return self.bins_per_angle ** (self.problem.dim - 1)

    def _uniform(self, n: int) -> Tensor:
        lower, upper = self.problem.bounds
        return lower + (upper - lower) * torch.rand(n, self.problem.dim, generator=self._generator, dtype=torch.float64)

    def _unit(self, X: Tensor) -> Tensor:
        lower, upper = self.problem.bounds
        return (X - lower) / (upper - lower)

    def ask(self, n: int) -> Tensor:
        self._check_n(n)
        if self._queue.shape[0] == 0 and self._handed_out < self.n_samples:
            if self.X.shape[0] < self._handed_out:
                raise ConfigError(
                    f"Bayesian MAP plans round by round: tell the {self._handed_out - self.X.shape[0]} "
                    "outstanding evaluations before asking for the next round"
                )
            self._queue = self._next_round()
            self._handed_out += self._queue.shape[0]
        return super().ask(n)

    def _next_round(self) -> Tensor:
        """Score the bins on all completed points and draw the next round (Alg. 3, inner loop)."""
        scores = self.scores()
        self.round_scores.append([None if math.isnan(v) else v for v in scores.tolist()])
        weights = torch.where(torch.isnan(scores), torch.nan_to_num(scores, nan=0.0).max(), scores)
        if not (weights > 0).any():
            weights = torch.ones_like(weights)
        drawn = torch.multinomial(weights, self.n_per_round, replacement=True, generator=self._generator)
        return torch.stack([self._point_in_bin(int(k)) for k in drawn])

    def scores(self) -> Tensor:
        """Current score of every bin, shape ``(n_bins,)`` (NaN: no points yet)."""
        X, Y = self.completed
        if X.shape[0] < 2:
            return torch.full((self.n_bins,), float("nan"), dtype=torch.float64)
        prediction = TaskQuadratics(self.problem.bounds, self.problem.objectives, X, Y, self.link).predict(X)
        errors = ((prediction - Y) ** 2).sum(dim=-1)
        bins = angular_bins(self._unit(X), self.bins_per_angle)
        # bootstraps draw from their own generator, seeded by the data size, so calling
        # scores() never changes the points a later round draws
        generator = torch.Generator().manual_seed(self.seed * 7_919 + X.shape[0])
        return bin_scores(errors, bins, self.n_bins, generator, self.drop_rate, self.n_bootstrap, self.std_weight)

    def _point_in_bin(self, k: int, tries: int = 50, chunk: int = 1024) -> Tensor:
        """A uniform point of the box whose direction falls in bin ``k`` (rejection sampling)."""
        for _ in range(tries):
            candidates = self._uniform(chunk)
            hits = (angular_bins(self._unit(candidates), self.bins_per_angle) == k).nonzero().flatten()
            if hits.numel():
                return candidates[hits[0]]
        raise ConfigError(f"could not sample a point in angular bin {k} after {tries * chunk} draws")

    def artifacts(self) -> Artifacts:
        base = super().artifacts()
        info = {**base.info, "round_scores": self.round_scores, "n_bins": self.n_bins}
        return Artifacts(base.predicted_X, base.predicted_front, info)
