"""Search strategies behind one ask/tell interface, and their registry.

Every strategy is a :class:`Strategy` (``ask(n)`` / ``tell(X, Y)`` / ``result()``)
registered here by its ``name``; :func:`get_strategy` builds one by name with
its options, and :class:`bambo.experiment.Experiment` (behind :func:`bambo.optimize`)
runs any of them.
"""

from __future__ import annotations

from typing import Any

from bambo.errors import ConfigError, UnknownNameError
from bambo.problem import Problem
from bambo.strategies.bambo import BAMBO
from bambo.strategies.base import Recommendation, Strategy
from bambo.strategies.baselines import (
    CMAESWeightedSum,
    GridSearch,
    MOEADSearch,
    NSGA2Search,
    RandomSearch,
    SobolSearch,
)
from bambo.strategies.bayesian_map import BayesianMAP
from bambo.strategies.map import MAP
from bambo.strategies.momf import MOMFSearch
from bambo.strategies.nested_map import NestedMAP
from bambo.strategies.pmto import PMTO

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        BAMBO,
        MAP,
        BayesianMAP,
        NestedMAP,
        PMTO,
        SobolSearch,
        RandomSearch,
        GridSearch,
        NSGA2Search,
        MOEADSearch,
        CMAESWeightedSum,
        MOMFSearch,
    )
}


def available_strategies() -> list[str]:
    """Registered strategy names."""
    return list(STRATEGIES)


def asynchronous_strategies() -> list[str]:
    """Names of the strategies that propose with candidates pending (:attr:`Strategy.asynchronous`)."""
    return [name for name, cls in STRATEGIES.items() if cls.asynchronous]


def get_strategy(name: str, problem: Problem, seed: int = 0, **options: Any) -> Strategy:
    """Instantiate a registered strategy by name.

    Args:
        name: A key of :data:`STRATEGIES`.
        problem: The problem to search.
        seed: Seed of every random choice the strategy makes.
        **options: The strategy's own options (e.g. ``n_initial`` for BAMBO).

    Raises:
        UnknownNameError: The name is not registered; the message lists valid names.
        ConfigError: An option the strategy does not have.
    """
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise UnknownNameError("strategy", name, STRATEGIES) from None
    try:
        return cls(problem, seed=seed, **options)
    except TypeError as exc:
        raise ConfigError(f"strategy {name!r}: {exc}") from None


__all__ = [
    "BAMBO",
    "MAP",
    "PMTO",
    "STRATEGIES",
    "BayesianMAP",
    "CMAESWeightedSum",
    "GridSearch",
    "MOEADSearch",
    "NSGA2Search",
    "NestedMAP",
    "Recommendation",
    "RandomSearch",
    "SobolSearch",
    "Strategy",
    "asynchronous_strategies",
    "available_strategies",
    "get_strategy",
]
