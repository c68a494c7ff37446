"""bambo: the Pareto set of merged neural networks from few expensive evaluations.

The names a user needs are attributes of the package::

    import bambo

    bench = bambo.load_benchmark("digits")
    problem = bench.problem(["inverted", "noisy"], granularity="block", blocks=3)
    result = bambo.optimize(problem, "bambo", budget=24, seed=0)

They are imported on first use (PEP 562), so ``import bambo`` (and the CLI's start)
does not pay for torch, BoTorch and Ax until they are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it (one place each)
_EXPORTS = {
    "optimize": "bambo.facade",
    "Experiment": "bambo.experiment",
    "LocalExecutor": "bambo.execution",
    "Halving": "bambo.fidelity",
    "Journal": "bambo.store",
    "ParetoResult": "bambo.result",
    "Objective": "bambo.problem",
    "Problem": "bambo.problem",
    "SyntheticProblem": "bambo.problem",
    "MergeProblem": "bambo.merge_problem",
    "MergeSpace": "bambo.space",
    "Strategy": "bambo.strategies",
    "STRATEGIES": "bambo.strategies",
    "get_strategy": "bambo.strategies",
    "MERGE_METHODS": "bambo.merge",
    "load_benchmark": "bambo.benchmark",
    "available_benchmarks": "bambo.benchmark",
    "load_state_dict": "bambo.weights",
    "select_by_cosine": "bambo.selection",
    "BamboError": "bambo.errors",
    "ConfigError": "bambo.errors",
    "EvaluationError": "bambo.errors",
    "StrategyError": "bambo.errors",
    "RunAbortedError": "bambo.errors",
}

__all__ = [
    "BamboError",
    "ConfigError",
    "EvaluationError",
    "Experiment",
    "Halving",
    "Journal",
    "LocalExecutor",
    "MERGE_METHODS",
    "MergeProblem",
    "MergeSpace",
    "Objective",
    "ParetoResult",
    "Problem",
    "RunAbortedError",
    "STRATEGIES",
    "Strategy",
    "StrategyError",
    "SyntheticProblem",
    "__version__",
    "available_benchmarks",
    "get_strategy",
    "load_benchmark",
    "load_state_dict",
    "optimize",
    "select_by_cosine",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bambo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from bambo.benchmark import available_benchmarks, load_benchmark
    from bambo.errors import BamboError, ConfigError, EvaluationError, RunAbortedError, StrategyError
    from bambo.execution import LocalExecutor
    from bambo.experiment import Experiment
    from bambo.facade import optimize
    from bambo.fidelity import Halving
    from bambo.merge import MERGE_METHODS
    from bambo.merge_problem import MergeProblem
    from bambo.problem import Objective, Problem, SyntheticProblem
    from bambo.result import ParetoResult
    from bambo.selection import select_by_cosine
    from bambo.space import MergeSpace
    from bambo.store import Journal
    from bambo.strategies import STRATEGIES, Strategy, get_strategy
    from bambo.weights import load_state_dict
