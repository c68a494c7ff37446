"""Executors: where and how evaluations run.

The experiment loop (:class:`bambo.experiment.Experiment`) hands an executor trials and
two callbacks; the executor calls ``started(trial_id)`` before an evaluation and
``finished(trial_id, metrics, error)`` after it, in whatever order evaluations end, and
evaluates inside :func:`bambo.problem.evaluating` so that the problem knows the trial's
id. The loop alone writes the journal, so an executor never touches it.

Two ways to hand over work:

- :meth:`Executor.evaluate`: the trials of one batch; it returns when all have ended
  (batch mode).
- :meth:`Executor.stream`: a source of trials, asked for ``k`` more whenever ``k``
  workers are free (asynchronous mode: a freed worker gets a new candidate at once
  instead of waiting for the rest of its batch).

:class:`LocalExecutor` evaluates in this process, one trial after another, optionally
under a timeout; it has one worker, so its stream asks for one trial at a time.
"""

from __future__ import annotations

import contextvars
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

from bambo.errors import ConfigError, EvaluationError
from bambo.problem import Problem, evaluating

Work = tuple[int, Tensor, float]
"""One evaluation to run: the trial id, the decision vector ``(d,)`` and the fidelity (:mod:`bambo.fidelity`)."""
Started = Callable[[int], None]
Finished = Callable[[int, "dict[str, float] | None", "str | None"], None]
Source = Callable[[int], "Sequence[Work]"]


class Executor(ABC):
    """Runs evaluations and reports each outcome through callbacks."""

    workers: int = 1
    """Evaluations this executor runs side by side."""

    @abstractmethod
    def evaluate(self, problem: Problem, trials: Sequence[Work], started: Started, finished: Finished) -> None:
        """Evaluate every ``(trial_id, x, fidelity)``; return when each has been reported to ``finished``.

        Args:
            problem: The problem (its :meth:`~bambo.problem.Problem.metrics`, given ``x`` and the fidelity).
            trials: Trial ids, decision vectors ``(d,)`` and fidelities.
            started: Called with the trial id just before its evaluation starts.
            finished: Called with ``(trial_id, metrics, None)`` for an evaluation that
                returned, ``(trial_id, None, error text)`` for one that failed.
        """

    def stream(self, problem: Problem, source: Source, started: Started, finished: Finished) -> None:
        """Keep the workers busy with trials from ``source`` until it has none and all have ended.

        ``source(k)`` is called whenever ``k`` workers are free (all of them at first) and
        returns up to ``k`` trials ``(trial_id, x, fidelity)``; an empty answer means no more work,
        and the call returns once every trial handed over has been reported to
        ``finished``. The source may look at the outcomes reported so far (the
        experiment loop proposes the next candidate with the running ones pending).

        The default runs ``source(1)`` one trial at a time through :meth:`evaluate`,
        right for an executor with one worker; executors with several override it.
        """
        while trials := list(source(1)):
            self.evaluate(problem, trials, started, finished)

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release the workers (a Ray executor's actors); the executor starts them again if used later."""


class LocalExecutor(Executor):
    """Evaluate in this process, one trial after another.

    Any exception an evaluation raises (a crashed evaluator) becomes a failed trial
    with its message; the search goes on.

    Args:
        timeout_s: Seconds an evaluation may take; one that overruns is recorded as
            failed. It runs in a worker thread, which Python cannot kill: a hung
            evaluator keeps its thread (a daemon, ended with the process).
    """

    def __init__(self, timeout_s: float | None = None) -> None:
        if timeout_s is not None and not timeout_s > 0:
            raise ConfigError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = timeout_s

    def evaluate(self, problem: Problem, trials: Sequence[Work], started: Started, finished: Finished) -> None:
        for trial_id, x, fidelity in trials:
            started(trial_id)
            try:
                with evaluating(trial_id):
                    metrics = self._metrics(problem, x, fidelity)
            except EvaluationError as exc:
                finished(trial_id, None, str(exc))
            except Exception as exc:  # noqa: BLE001 - a crashed evaluator fails its trial, not the search
                finished(trial_id, None, f"evaluation raised {type(exc).__name__}: {exc}")
            else:
                finished(trial_id, metrics, None)

    def _metrics(self, problem: Problem, x: Tensor, fidelity: float) -> dict[str, float]:
        if self.timeout_s is None:
            return problem.metrics(x, fidelity)
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["metrics"] = problem.metrics(x, fidelity)
            except BaseException as exc:  # noqa: BLE001 - reported to the caller below
                outcome["error"] = exc

        context = contextvars.copy_context()  # the trial id (bambo.problem.current_trial_id) goes with it
        thread = threading.Thread(target=context.run, args=(work,), name="bambo-evaluation", daemon=True)
        thread.start()
        thread.join(self.timeout_s)
        if thread.is_alive():
            raise EvaluationError(f"evaluation timed out after {self.timeout_s:g} s (its thread was abandoned)")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["metrics"]
