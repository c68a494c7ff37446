"""``optimize``: run a strategy on a problem under a budget (the one-call facade)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bambo.errors import ConfigError, EvaluationError, StrategyError
from bambo.problem import Problem
from bambo.strategies import ParetoResult, Strategy, get_strategy

T = TypeVar("T")


def optimize(
    problem: Problem,
    strategy: str | Strategy = "sobol",
    budget: int = 32,
    batch_size: int = 4,
    seed: int = 0,
    progress: bool = True,
) -> ParetoResult:
    """Evaluate ``budget`` points proposed by ``strategy`` in batches.

    A failed evaluation (an :class:`EvaluationError`: the evaluator raised or
    returned a non-finite metric) is recorded as failed with its message and the
    search goes on; it never reaches a surrogate.

    Args:
        problem: What to optimise.
        strategy: A registered name or a :class:`Strategy` instance.
        budget: Total number of evaluations (failed ones count); a strategy with a
            finite design may stop earlier.
        batch_size: Points proposed per ``ask``.
        seed: Seed for a strategy given by name.
        progress: Show a progress bar.

    Returns:
        The :class:`ParetoResult` of all evaluations; ``info["ask_seconds"]`` holds the
        time of every ``ask`` (the strategy's own time per batch, also shown on the
        progress bar).

    Raises:
        StrategyError: The strategy itself failed (not an evaluation); its ``result``
            holds every evaluation made so far.
    """
    if budget < 1 or batch_size < 1:
        raise ConfigError(f"budget and batch_size must be >= 1, got {budget} and {batch_size}")
    search = get_strategy(strategy, problem, seed) if isinstance(strategy, str) else strategy
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[proposal]}"),
    )
    ask_seconds: list[float] = []
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task(f"{search.name} evaluations", total=budget, proposal="")
        done = 0
        while done < budget:
            start = time.perf_counter()
            X = _guarded("proposing", search, search.ask, min(batch_size, budget - done))
            ask_seconds.append(time.perf_counter() - start)
            bar.update(task, proposal=f"last proposal {ask_seconds[-1]:.2f} s")
            if X.shape[0] == 0:  # a finite design (grid, MAP's sample) is exhausted
                break
            Y = torch.full((X.shape[0], problem.num_objectives), float("nan"), dtype=torch.float64)
            errors: dict[int, str] = {}
            for i, x in enumerate(X):
                try:
                    Y[i] = problem.evaluate_one(x)
                except EvaluationError as exc:
                    errors[i] = str(exc)
                bar.advance(task)
            _guarded("learning from a batch", search, search.tell, X, Y, errors)
            done += X.shape[0]
    result = search.result()
    result.info["ask_seconds"] = ask_seconds
    return result


def _guarded(doing: str, search: Strategy, step: Callable[..., T], *args: Any) -> T:
    """Run a strategy step; if it raises, re-raise as :class:`StrategyError` carrying the result so far."""
    try:
        return step(*args)
    except StrategyError:
        raise
    except Exception as exc:
        try:
            partial_result = search.result()
        except Exception:  # noqa: BLE001 - the original error matters more
            partial_result = None
        n = search.X.shape[0]
        raise StrategyError(
            f"strategy {search.name!r} failed while {doing} after {n} evaluations "
            f"(kept in this error's .result): {type(exc).__name__}: {exc}",
            partial_result,
        ) from exc
