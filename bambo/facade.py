"""``bambo.optimize``: one call from a problem to its Pareto set, over the experiment loop.

The facade for users who want a result, not a loop: it builds the strategy (by name, with
its ``prepare`` hook) or copies the instance given, opens the journal and runs an
:class:`~bambo.experiment.Experiment`. Everything it does is also available piece by piece
from :mod:`bambo.experiment`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bambo.errors import ConfigError
from bambo.experiment import Experiment
from bambo.fidelity import Halving
from bambo.problem import Problem
from bambo.result import ParetoResult
from bambo.store import Journal
from bambo.strategies import STRATEGIES, Strategy, get_strategy

__all__ = ["optimize"]


def optimize(
    problem: Problem,
    strategy: str | Strategy = "bambo",
    budget: int = 32,
    batch_size: int = 4,
    seed: int | None = None,
    options: Mapping[str, Any] | None = None,
    journal: str | Path | None = None,
    progress: bool = True,
    stop_on_first_batch_failure: bool = True,
    halving: Halving | None = None,
) -> ParetoResult:
    """Evaluate up to ``budget`` points proposed by ``strategy`` in batches.

    A failed evaluation (the evaluator raised, or a metric is missing or not finite)
    is recorded as failed with its message and the search goes on; it never reaches
    a surrogate. The strategy given is never changed: a strategy instance is copied.

    Args:
        problem: What to optimise.
        strategy: A registered name (:data:`bambo.strategies.STRATEGIES`) or a
            :class:`~bambo.strategies.Strategy` built for ``problem``.
        budget: Total number of evaluations (failed ones count); a strategy with a
            finite design may stop earlier.
        batch_size: Points proposed per batch.
        seed: Seed of a strategy given by name (default 0). A strategy instance
            carries its own seed: a different ``seed`` is refused.
        options: The options of a strategy given by name (e.g. ``{"n_initial": 6}``).
        journal: A SQLite file to record the trials in; if it already holds trials of
            this search, the search resumes from them. It is locked for the call: a
            second process using it gets a :class:`~bambo.store.RunInUseError`.
        progress: Show a progress bar.
        stop_on_first_batch_failure: Raise :class:`~bambo.errors.RunAbortedError` when
            every evaluation of the first batch fails with the same error
            (:meth:`Experiment.run`).
        halving: Successive halving inside each batch (:class:`~bambo.fidelity.Halving`); the
            budget then counts evaluation cost (a low-fidelity evaluation costs its fidelity).

    Returns:
        The :class:`~bambo.result.ParetoResult` of all evaluations (objectives in
        their own directions as ``result.Y``).

    Raises:
        ConfigError: A bad budget, options for an instance, or a seed that the
            instance does not have.
        StrategyError: The strategy itself failed; its ``result`` holds every
            evaluation made so far.
        RunAbortedError: Every evaluation of the first batch failed with the same error.
        RunInUseError: Another process is using ``journal``.
    """
    if isinstance(strategy, str):
        if strategy not in STRATEGIES:
            get_strategy(strategy, problem)  # raises UnknownNameError listing the names
        problem, prepared = STRATEGIES[strategy].prepare(problem, dict(options or {}))
        search = get_strategy(strategy, problem, seed=0 if seed is None else seed, **prepared)
    else:
        if options:
            raise ConfigError("options apply to a strategy given by name; this instance has its own")
        if seed is not None and seed != strategy.seed:
            raise ConfigError(
                f"seed={seed} cannot be applied to a {strategy.name!r} instance built with seed={strategy.seed}; "
                "build the instance with that seed or pass the strategy by name"
            )
        if strategy.problem is not problem:
            raise ConfigError("the strategy instance was built for another problem")
        search = copy.deepcopy(strategy, memo={id(problem): problem})  # the problem (models) is shared, not copied
    store = Journal(journal) if journal is not None else Journal()
    try:
        experiment = Experiment(problem, search, journal=store, halving=halving)
        return experiment.run(
            budget, batch_size, progress=progress, stop_on_first_batch_failure=stop_on_first_batch_failure
        )
    finally:
        store.close()
