"""MAP: a quadratic surrogate per task and an amortised Pareto front by NSGA-III (MAP Alg. 1).

MAP (Model merging with Amortized Pareto fronts) samples ``K`` coefficient
vectors, evaluates the merged models, fits one quadratic per task metric
(MAP Sec. 3.1, Eq. 3-5; the link follows the metric's range, Case 1-3) and runs
NSGA-III (Deb & Jain 2014, pymoo, Das-Dennis reference directions) on the
surrogates: the front costs surrogate calls only, not evaluations. Optionally a
spread-out subset of the predicted set is re-evaluated ("MAP predicted" vs "MAP
real", MAP Fig. 1c).

Unlike the released MAP code, the identity-link quadratic is fitted in closed
form (Bayesian least squares, :class:`~bambo.surrogates.QuadraticSurrogate`),
and NSGA-III searches the same box the points were sampled from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from pymoo.algorithms.moo.nsga3 import NSGA3
from pymoo.core.problem import Problem as PymooProblem
from pymoo.optimize import minimize
from pymoo.util.ref_dirs import get_reference_directions
from torch import Tensor
from torch.quasirandom import SobolEngine

from bambo.errors import ConfigError
from bambo.problem import Objective, Problem
from bambo.result import Artifacts
from bambo.strategies.base import Strategy
from bambo.surrogates.quadratic import Link, QuadraticSurrogate

LinkChoice = Literal["auto", "identity", "sigmoid", "softplus"]


def link_for(bounds: tuple[float | None, float | None]) -> tuple[Link, float, float]:
    """MAP's link for a metric range (MAP Sec. 3.1, Cases 1-3).

    Args:
        bounds: ``(lower, upper)`` of the metric in its own direction, ``None`` for an open end.

    Returns:
        ``(link, lower, upper)``: sigmoid for a bounded metric, softplus for a
        metric bounded below, identity otherwise.
    """
    low, high = bounds
    if low is not None and high is not None:
        return "sigmoid", float(low), float(high)
    if low is not None:
        return "softplus", float(low), math.inf
    return "identity", 0.0, 1.0


class TaskQuadratics:
    """One quadratic surrogate per objective, fitted in the objectives' own directions.

    Args:
        bounds: Input bounds, shape ``(2, d)``.
        objectives: The objectives (directions and ranges), in output order.
        X: Completed decision vectors, shape ``(n, d)``.
        Y: Their objectives, maximisation form, shape ``(n, m)``.
        link: ``"auto"`` (from :attr:`Objective.bounds`) or one link for all objectives.
    """

    def __init__(
        self, bounds: Tensor, objectives: Sequence[Objective], X: Tensor, Y: Tensor, link: LinkChoice = "auto"
    ) -> None:
        if X.shape[0] < 2:
            raise ConfigError(f"MAP needs at least 2 completed evaluations to fit its quadratics, got {X.shape[0]}")
        self.signs = torch.tensor([o.sign for o in objectives], dtype=torch.float64)
        Y_user = Y * self.signs
        self.models: list[QuadraticSurrogate] = []
        self.links: list[str] = []
        for j, objective in enumerate(objectives):
            name, low, high = link_for(objective.bounds) if link == "auto" else (link, *_bounds_or_default(objective))
            y = Y_user[:, j : j + 1]
            low_ok = objective.bounds[0] is None or bool((y >= objective.bounds[0] - 1e-9).all())
            high_ok = objective.bounds[1] is None or bool((y <= objective.bounds[1] + 1e-9).all())
            if not (low_ok and high_ok):
                raise ConfigError(
                    f"objective {objective.name!r} has values in [{float(y.min())}, {float(y.max())}] outside its "
                    f"declared bounds {objective.bounds}"
                )
            if name == "sigmoid":  # values on the bound are fine for the data, not for the logit
                span = high - low
                y = y.clamp(low + 1e-4 * span, high - 1e-4 * span)
            elif name == "softplus":
                y = y.clamp_min(low)
            self.models.append(QuadraticSurrogate(X, y, bounds=bounds, link=name, lower=low, upper=high).fit())
            self.links.append(name)

    @torch.no_grad()
    def predict(self, X: Tensor) -> Tensor:
        """Posterior mean of every objective, maximisation form.

        Args:
            X: Shape ``(n, d)``.

        Returns:
            Shape ``(n, m)``.
        """
        means = [model.posterior(X).mean.squeeze(-1) for model in self.models]
        return torch.stack(means, dim=-1) * self.signs


def _bounds_or_default(objective: Objective) -> tuple[float, float]:
    low, high = objective.bounds
    return (0.0 if low is None else float(low)), (1.0 if high is None else float(high))


def reference_directions(n_objectives: int, target: int = 100) -> np.ndarray:
    """Das-Dennis reference directions, about ``target`` of them (pymoo).

    Args:
        n_objectives: m.
        target: Desired number of directions.

    Returns:
        Array of shape ``(k, m)`` on the unit simplex.
    """
    if n_objectives == 1:
        return np.ones((1, 1))
    partitions = 1
    while math.comb(partitions + 1 + n_objectives - 1, n_objectives - 1) <= target:
        partitions += 1
    return get_reference_directions("das-dennis", n_objectives, n_partitions=partitions)


def amortized_front(
    predict: TaskQuadratics,
    bounds: Tensor,
    seed: int = 0,
    pop_size: int = 100,
    n_generations: int = 100,
) -> tuple[Tensor, Tensor]:
    """NSGA-III on surrogate predictions: the amortised Pareto set and front (MAP Alg. 1, last step).

    Args:
        predict: Maps ``(n, d)`` decision vectors to ``(n, m)`` max-form predictions.
        bounds: Shape ``(2, d)``; the same box the samples came from.
        seed: NSGA-III's seed.
        pop_size: Population (and about the number of reference directions).
        n_generations: Generations.

    Returns:
        ``(X, Y)``: the non-dominated decision vectors ``(k, d)`` and their predicted
        objectives ``(k, m)`` (maximisation form), sorted by the first objective.
    """
    lower, upper = bounds.numpy()
    m = len(predict.models)

    class _Surrogates(PymooProblem):
        def __init__(self) -> None:
            super().__init__(n_var=bounds.shape[1], n_obj=m, xl=lower, xu=upper)

        def _evaluate(self, x: np.ndarray, out: dict, *args: object, **kwargs: object) -> None:
            out["F"] = -predict.predict(torch.as_tensor(x, dtype=torch.float64)).numpy()

    directions = reference_directions(m, pop_size)
    algorithm = NSGA3(ref_dirs=directions, pop_size=max(pop_size, len(directions)))
    res = minimize(_Surrogates(), algorithm, ("n_gen", n_generations), seed=seed, verbose=False)
    X = torch.as_tensor(np.atleast_2d(res.X), dtype=torch.float64)
    Y = -torch.as_tensor(np.atleast_2d(res.F), dtype=torch.float64)
    X, keep = np.unique(X.numpy().round(12), axis=0, return_index=True)
    X, Y = torch.as_tensor(X), Y[torch.as_tensor(keep)]
    order = torch.argsort(Y[:, 0])
    return X[order], Y[order]


def spread_subset(Y: Tensor, k: int) -> Tensor:
    """Indices of ``k`` rows of ``Y`` spread out by farthest-point sampling (normalised objectives).

    Starts from the row best on the first objective, so the choice is deterministic.

    Args:
        Y: Shape ``(n, m)``.
        k: How many to pick (at most ``n``).

    Returns:
        Shape ``(min(k, n),)``, long.
    """
    n = Y.shape[0]
    k = min(k, n)
    if k <= 0:
        return torch.empty(0, dtype=torch.long)
    span = (Y.max(0).values - Y.min(0).values).clamp_min(1e-12)
    Z = (Y - Y.min(0).values) / span
    chosen = [int(torch.argmax(Y[:, 0]))]
    distance = torch.cdist(Z, Z[chosen]).min(dim=1).values
    while len(chosen) < k:
        nxt = int(torch.argmax(distance))
        chosen.append(nxt)
        distance = torch.minimum(distance, torch.cdist(Z, Z[nxt : nxt + 1]).squeeze(1))
    return torch.as_tensor(chosen, dtype=torch.long)


class MAP(Strategy):
    """MAP (MAP Alg. 1): K samples, a quadratic per task, NSGA-III on the surrogates.

    ``ask`` hands out the ``n_samples`` design points, then ``n_reevaluate`` points of
    the predicted Pareto set (spread out along the front) for "MAP real", then
    nothing (the design is exhausted).

    Args:
        problem: The problem.
        seed: Seeds the design and NSGA-III.
        n_samples: K, the number of sampled coefficient vectors (the paper uses
            about 20-30 for 2 tasks).
        sampler: ``"sobol"`` (scrambled) or ``"uniform"``.
        link: ``"auto"`` picks each task's link from :attr:`Objective.bounds`.
        n_reevaluate: Predicted Pareto points to re-evaluate after the design.
        pop_size: NSGA-III population.
        n_generations: NSGA-III generations.
    """

    name = "map"

    def __init__(
        self,
        problem: Problem,
        seed: int = 0,
        n_samples: int = 20,
        sampler: Literal["sobol", "uniform"] = "sobol",
        link: LinkChoice = "auto",
        n_reevaluate: int = 0,
        pop_size: int = 100,
        n_generations: int = 100,
    ) -> None:
        super().__init__(problem, seed)
        if n_samples < 2:
            raise ConfigError(f"n_samples must be >= 2, got {n_samples}")
        if sampler not in ("sobol", "uniform"):
            raise ConfigError(f"unknown sampler {sampler!r}; valid: sobol, uniform")
        if n_reevaluate < 0:
            raise ConfigError(f"n_reevaluate must be >= 0, got {n_reevaluate}")
        self.n_samples = n_samples
        self.sampler = sampler
        self.link: LinkChoice = link
        self.n_reevaluate = n_reevaluate
        self.pop_size = pop_size
        self.n_generations = n_generations
        self._queue = self._sample(n_samples)
        self._surrogates: TaskQuadratics | None = None
        self._front: tuple[Tensor, Tensor] | None = None
        self._fitted_on = -1
        self._reevaluation_queued = False

    def _sample(self, n: int) -> Tensor:
        lower, upper = self.problem.bounds
        if self.sampler == "sobol":
            unit = SobolEngine(self.problem.dim, scramble=True, seed=self.seed).draw(n, dtype=torch.float64)
        else:
            generator = torch.Generator().manual_seed(self.seed)
            unit = torch.rand(n, self.problem.dim, generator=generator, dtype=torch.float64)
        return lower + (upper - lower) * unit

    def ask(self, n: int) -> Tensor:
        self._check_n(n)
        if self._queue.shape[0] == 0 and not self._reevaluation_queued and self.n_reevaluate > 0:
            if self.X.shape[0] < self.n_samples:
                raise ConfigError("tell the evaluations of the design points before asking for more")
            X_front, Y_front = self.predicted_front()
            self._queue = X_front[spread_subset(Y_front, self.n_reevaluate)]
            self._reevaluation_queued = True
        X, self._queue = self._queue[:n], self._queue[n:]
        return X.clone()

    def surrogates(self) -> TaskQuadratics:
        """The task quadratics fitted on the design points evaluated so far (refitted when data arrive)."""
        n_design = min(self.X.shape[0], self.n_samples)
        if self._surrogates is None or self._fitted_on != n_design:
            X, Y = self.X[:n_design], self.Y[:n_design]
            ok = torch.isfinite(Y).all(dim=-1)
            self._surrogates = TaskQuadratics(self.problem.bounds, self.problem.objectives, X[ok], Y[ok], self.link)
            self._fitted_on = n_design
            self._front = None
        return self._surrogates

    def predicted_front(self) -> tuple[Tensor, Tensor]:
        """The amortised Pareto set and its predicted objectives (max form): ``((k, d), (k, m))``."""
        surrogates = self.surrogates()
        if self._front is None:
            self._front = amortized_front(surrogates, self.problem.bounds, self.seed, self.pop_size, self.n_generations)
        return self._front

    def artifacts(self) -> Artifacts:
        if torch.isfinite(self.Y).all(dim=-1).sum() < 2:
            return Artifacts()
        X_front, Y_front = self.predicted_front()
        info = {"links": list(self.surrogates().links), "n_samples": self.n_samples}
        return Artifacts(X_front.clone(), Y_front.clone(), info)
