"""Search strategies behind one ask/tell interface, and their registry."""

from __future__ import annotations

from bambo.errors import UnknownNameError
from bambo.problem import Problem
from bambo.strategies.base import ParetoResult, Strategy
from bambo.strategies.baselines import SobolSearch

STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (SobolSearch,)}


def get_strategy(name: str, problem: Problem, seed: int = 0) -> Strategy:
    """Instantiate a registered strategy by name.

    Raises:
        UnknownNameError: The name is not registered; the message lists valid names.
    """
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise UnknownNameError("strategy", name, STRATEGIES) from None
    return cls(problem, seed=seed)


__all__ = ["STRATEGIES", "ParetoResult", "SobolSearch", "Strategy", "get_strategy"]
