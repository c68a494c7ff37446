"""Evolutionary baselines: NSGA-II, MOEA/D (pymoo) and CMA-ES on a weighted sum (cma).

Each runs a generational optimiser behind the ask/tell interface: ``ask(n)``
hands out the optimiser's current population in chunks of up to ``n`` points,
``tell`` collects their values, and once every point of the population has been
told the generation is passed to the optimiser. Told points that were not handed
out (a warm start, say) are recorded in the history but do not reach the
optimiser. Asking again before the whole generation was told is an error. If
the optimiser stops (pymoo's mating finds no new offspring), ``ask`` returns a
``(0, d)`` tensor, which ends :func:`bambo.optimize`. Import the classes
from :mod:`bambo.strategies.baselines`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from math import comb
from typing import Any, TypeVar

import numpy as np
import torch
from pymoo.algorithms.moo.moead import ParallelMOEAD
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.algorithm import Algorithm
from pymoo.core.evaluator import Evaluator
from pymoo.core.population import Population
from pymoo.core.problem import Problem as PymooProblem
from pymoo.core.termination import NoTermination
from pymoo.problems.static import StaticProblem
from pymoo.util.ref_dirs import get_reference_directions
from torch import Tensor

from bambo.errors import ConfigError
from bambo.problem import Problem
from bambo.result import Artifacts
from bambo.strategies.base import Strategy

T = TypeVar("T")


def _failure_penalty(F: Tensor) -> Tensor:
    """A minimisation value worse than every finite row of ``F`` (shape ``(n, k)``), shape ``(k,)``.

    The worst value per column plus its range (at least 1); zeros if nothing is finite.
    """
    F = F[torch.isfinite(F).all(dim=-1)]
    if F.shape[0] == 0:
        return torch.zeros(F.shape[1], dtype=torch.float64)
    worst = F.max(dim=0).values
    return worst + (worst - F.min(dim=0).values).clamp_min(1.0)


class _GenerationalStrategy(Strategy):
    """Hands out a generational optimiser's population in chunks; tells it back when complete."""

    def __init__(self, problem: Problem, seed: int) -> None:
        super().__init__(problem, seed)
        self._population: Tensor | None = None  # (p, d) in problem coordinates
        self._values = torch.empty(0, problem.num_objectives, dtype=torch.float64)  # (p, m)
        self._told = torch.empty(0, dtype=torch.bool)  # (p,)
        self._handed = 0
        self._exhausted = False
        self.generations = 0

    @abstractmethod
    def _next_population(self) -> Tensor | None:
        """The optimiser's next points, ``(p, d)`` inside the bounds, or None when it stops."""

    @abstractmethod
    def _tell_population(self, X: Tensor, Y: Tensor) -> None:
        """Pass a complete generation ``X`` ``(p, d)``, ``Y`` ``(p, m)`` (max form, NaN rows failed)."""

    def ask(self, n: int) -> Tensor:
        self._check_n(n)
        if self._population is None and not self._exhausted:
            X = self._next_population()
            if X is None or X.shape[0] == 0:
                self._exhausted = True
            else:
                lower, upper = self.problem.bounds
                self._population = torch.minimum(torch.maximum(X.to(torch.float64), lower), upper)
                self._values = torch.full((X.shape[0], self.problem.num_objectives), float("nan"), dtype=torch.float64)
                self._told = torch.zeros(X.shape[0], dtype=torch.bool)
                self._handed = 0
        if self._population is None:
            return torch.empty(0, self.problem.dim, dtype=torch.float64)
        size = self._population.shape[0]
        if self._handed == size:
            raise ConfigError(
                f"{self.name}: all {size} points of the current generation were handed out but only "
                f"{int(self._told.sum())} were told; tell the others before asking again"
            )
        chunk = self._population[self._handed : self._handed + n]
        self._handed += chunk.shape[0]
        return chunk.clone()

    def tell(self, X: Tensor, Y: Tensor) -> None:
        start = self.X.shape[0]
        super().tell(X, Y)
        if self._population is None:
            return
        for x, y in zip(self.X[start:], self.Y[start:], strict=True):
            waiting = (~self._told[: self._handed]).nonzero().flatten()
            match = waiting[torch.isclose(self._population[waiting], x, rtol=1e-9, atol=1e-12).all(dim=-1)]
            if match.numel() > 0:
                self._told[match[0]] = True
                self._values[match[0]] = y
        if bool(self._told.all()):
            population, values = self._population, self._values
            self._population = None
            self._tell_population(population, values)
            self.generations += 1

    def artifacts(self) -> Artifacts:
        return Artifacts(info={"generations": self.generations})


class _PymooSearch(_GenerationalStrategy):
    """A pymoo algorithm driven through ``ask``/``tell`` on the true objectives (negated: pymoo minimises)."""

    def __init__(self, problem: Problem, seed: int, algorithm: Algorithm, failed_as_infeasible: bool) -> None:
        super().__init__(problem, seed)
        lower, upper = problem.bounds.numpy()
        self._failed_as_infeasible = failed_as_infeasible
        self._pymoo_problem = PymooProblem(
            n_var=problem.dim,
            n_obj=problem.num_objectives,
            n_ieq_constr=1 if failed_as_infeasible else 0,
            xl=lower.copy(),
            xu=upper.copy(),
        )
        self._algorithm = algorithm
        self._algorithm.setup(self._pymoo_problem, seed=seed % 2**32, termination=NoTermination(), verbose=False)
        self._evaluator = Evaluator()
        self._pending: Population | None = None

    def _next_population(self) -> Tensor | None:
        self._pending = self._algorithm.ask()
        if self._pending is None or len(self._pending) == 0:
            return None
        return torch.as_tensor(np.asarray(self._pending.get("X"), dtype=np.float64))

    def _tell_population(self, X: Tensor, Y: Tensor) -> None:
        F = -Y
        failed = ~torch.isfinite(F).all(dim=-1)
        F[failed] = _failure_penalty(-self.Y)
        out: dict[str, Any] = {"F": F.numpy()}
        if self._failed_as_infeasible:
            out["G"] = torch.where(failed, 1.0, -1.0).to(torch.float64).unsqueeze(-1).numpy()
        self._evaluator.eval(StaticProblem(self._pymoo_problem, **out), self._pending)
        self._algorithm.tell(infills=self._pending)


class NSGA2Search(_PymooSearch):
    """NSGA-II (Deb, Pratap, Agarwal & Meyarivan 2002) via pymoo, on the true objectives.

    Non-dominated sorting with crowding distance, SBX crossover and polynomial
    mutation (pymoo's defaults). A failed evaluation is marked infeasible (one
    inequality constraint, violated only by failures), so by Deb's constrained
    domination every completed point beats it; its objectives are set to a value
    worse than every completed one so far.

    Args:
        problem: The problem.
        seed: Seed of pymoo's random state.
        pop_size: Population size (points per generation).
    """

    name = "nsga2"

    def __init__(self, problem: Problem, seed: int = 0, *, pop_size: int = 8) -> None:
        if pop_size < 2:
            raise ConfigError(f"NSGA-II needs pop_size >= 2, got {pop_size}")
        self.pop_size = pop_size
        super().__init__(problem, seed, NSGA2(pop_size=pop_size), failed_as_infeasible=True)


class MOEADSearch(_PymooSearch):
    """MOEA/D (Zhang & Li 2007) via pymoo, on the true objectives.

    The problem is decomposed into one Tchebycheff (m <= 2) or PBI (m > 2)
    subproblem per Das-Dennis reference direction. pymoo's ``ParallelMOEAD`` is
    used: each generation breeds one offspring per subproblem from the same
    population (so a generation can be evaluated as a batch) and then replaces
    neighbours, instead of the original one-offspring-at-a-time loop. pymoo's
    MOEA/D has no constraints, so a failed evaluation gets objectives worse than
    every completed one so far (the worst value per objective plus its range).

    Args:
        problem: The problem (at least two objectives).
        seed: Seed of pymoo's random state.
        pop_size: Wanted population size; the Das-Dennis partition count whose
            number of directions is closest to it is used (see :attr:`pop_size`).
        n_neighbors: Neighbourhood size T, 2 <= T <= population (default
            ``max(4, pop // 5)`` capped at the population; Zhang & Li use 20 of 100).
        prob_neighbor_mating: Probability of mating within the neighbourhood.
    """

    name = "moead"

    def __init__(
        self,
        problem: Problem,
        seed: int = 0,
        *,
        pop_size: int = 8,
        n_neighbors: int | None = None,
        prob_neighbor_mating: float = 0.9,
    ) -> None:
        m = problem.num_objectives
        if m < 2:
            raise ConfigError(f"MOEA/D needs at least 2 objectives, the problem has {m}")
        if pop_size < 2:
            raise ConfigError(f"MOEA/D needs pop_size >= 2, got {pop_size}")
        if not 0.0 <= prob_neighbor_mating <= 1.0:
            raise ConfigError(f"prob_neighbor_mating must lie in [0, 1], got {prob_neighbor_mating}")
        partitions = _partitions_for(pop_size, m)
        ref_dirs = get_reference_directions("das-dennis", m, n_partitions=partitions)
        self.pop_size = int(ref_dirs.shape[0])
        if n_neighbors is None:
            n_neighbors = min(self.pop_size, max(4, self.pop_size // 5))
        if not 2 <= n_neighbors <= self.pop_size:
            raise ConfigError(f"n_neighbors must lie in [2, {self.pop_size}] (the population), got {n_neighbors}")
        self.n_neighbors = n_neighbors
        algorithm = ParallelMOEAD(ref_dirs, n_neighbors=n_neighbors, prob_neighbor_mating=prob_neighbor_mating)
        super().__init__(problem, seed, algorithm, failed_as_infeasible=False)


def _partitions_for(pop_size: int, m: int) -> int:
    """Das-Dennis partition count whose number of directions C(p + m - 1, m - 1) is closest to ``pop_size``."""
    best, p = 1, 1
    while True:
        count = _n_directions(p, m)
        if abs(count - pop_size) <= abs(_n_directions(best, m) - pop_size):
            best = p
        if count >= pop_size:
            return best
        p += 1


def _n_directions(p: int, m: int) -> int:
    return comb(p + m - 1, m - 1)


def _global_randn(*shape: int) -> np.ndarray:
    """numpy's global ``randn`` (CMA-ES's sampler; its state is the strategy's own, see ``_with_cma_rng``)."""
    return np.random.randn(*shape)


class CMAESWeightedSum(_GenerationalStrategy):
    """CMA-ES (Hansen & Ostermeier 2001; Hansen 2016, the ``cma`` package) on a weighted sum of objectives.

    Scalarises the objectives by fixed non-negative weights, as mergekit-evolve
    does, and maximises ``Y @ w`` with CMA-ES in unit-box coordinates (cma's
    ``bounds`` option on ``[0, 1]^d``). A failed evaluation gets a value worse
    than every completed one so far (the worst weighted sum minus its range, at
    least 1); CMA-ES only uses ranks, so the size of the gap does not matter.
    cma draws from numpy's global random state; it is swapped in and out around
    every cma call, so runs are reproducible and other numpy users unaffected.

    Args:
        problem: The problem.
        seed: Seeds the generator CMA-ES samples from (its own state, kept apart from numpy's global one).
        weights: Non-negative weights, shape ``(m,)``, normalised to sum to one
            (default: equal).
        sigma0: Initial step size as a fraction of the box width.
        popsize: Points per generation (default: cma's ``4 + 3 ln d``).
    """

    name = "cmaes"

    def __init__(
        self,
        problem: Problem,
        seed: int = 0,
        *,
        weights: Sequence[float] | Tensor | None = None,
        sigma0: float = 0.3,
        popsize: int | None = None,
    ) -> None:
        super().__init__(problem, seed)
        import cma

        m, d = problem.num_objectives, problem.dim
        w = torch.ones(m, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if w.shape != (m,):
            raise ConfigError(f"weights must have shape ({m},), got {tuple(w.shape)}")
        if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ConfigError(f"weights must be non-negative and not all zero, got {w.tolist()}")
        if not sigma0 > 0:
            raise ConfigError(f"sigma0 must be positive, got {sigma0}")
        if popsize is not None and popsize < 2:
            raise ConfigError(f"popsize must be >= 2, got {popsize}")
        self.weights = w / w.sum()
        options: dict[str, Any] = {
            "bounds": [[0.0] * d, [1.0] * d],
            # cma draws through this module-level function (a copy of the strategy then keeps
            # drawing from numpy's global generator, which _with_cma_rng swaps in), not through a
            # bound np.random.randn that copy.deepcopy would clone with a frozen state.
            "randn": _global_randn,
            "verbose": -9,
            "verb_log": 0,
            "verb_disp": 0,
        }
        if popsize is not None:
            options["popsize"] = popsize
        saved = np.random.get_state()
        try:
            np.random.seed(seed % 2**32)
            self._es = cma.CMAEvolutionStrategy([0.5] * d, sigma0, options)
            self._rng_state = np.random.get_state()
        finally:
            np.random.set_state(saved)
        self.popsize = int(self._es.popsize)
        self._solutions: list[np.ndarray] = []

    def _with_cma_rng(self, call: Callable[[], T]) -> T:
        saved = np.random.get_state()
        np.random.set_state(self._rng_state)
        try:
            return call()
        finally:
            self._rng_state = np.random.get_state()
            np.random.set_state(saved)

    def _next_population(self) -> Tensor:
        self._solutions = list(self._with_cma_rng(self._es.ask))
        unit = torch.as_tensor(np.stack(self._solutions), dtype=torch.float64).clamp(0.0, 1.0)
        lower, upper = self.problem.bounds
        return lower + (upper - lower) * unit

    def _tell_population(self, X: Tensor, Y: Tensor) -> None:
        values = -(Y @ self.weights)  # cma minimises
        failed = ~torch.isfinite(values)
        if failed.any():
            values[failed] = _failure_penalty(-(self.completed[1] @ self.weights).unsqueeze(-1))[0]
        solutions = self._solutions
        self._with_cma_rng(lambda: self._es.tell(solutions, values.tolist()))

    def artifacts(self) -> Artifacts:
        info = {**super().artifacts().info, "weights": self.weights.tolist()}
        ok = torch.isfinite(self.Y).all(dim=-1)
        if ok.any():
            scores = torch.full((self.Y.shape[0],), -float("inf"), dtype=torch.float64)
            scores[ok] = self.Y[ok] @ self.weights
            best = int(scores.argmax())
            info["best_weighted_sum"] = float(scores[best])
            info["recommended_index"] = best
        return Artifacts(info=info)


__all__ = ["CMAESWeightedSum", "MOEADSearch", "NSGA2Search"]
