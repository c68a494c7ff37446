"""The one experiment loop: a strategy proposes, an executor evaluates, the journal records.

:class:`Experiment` owns the trials of a search. They live in a :class:`~bambo.store.Journal`
(a SQLite file for a resumable run, in memory otherwise) and, for reading, in
:attr:`Experiment.trials`; the strategy keeps only the data it learns from. Every path that
searches goes through it: :func:`bambo.optimize`, ``bambo run``/``resume``/``demo`` and the
benchmark contenders.

A batch is journaled as ``pending`` in one transaction when it is proposed, each
evaluation is marked ``running`` before it starts and ``completed``/``failed`` when it
ends, and the strategy is told the batch, in trial order, once every trial of it has
ended.

Two modes of :meth:`Experiment.run`:

- ``"batch"`` (default): ask for ``batch_size`` candidates, evaluate them all (side by side
  on an executor with several workers), tell, ask again. The same seed gives the same
  journal whatever the executor.
- ``"async"``: whenever a worker frees up, ask for one new candidate while the others are
  still running; the strategy proposes it with the running ones as pending points
  (BoTorch's ``X_pending``), so no worker waits for the slowest trial of a batch. Only
  strategies that propose with candidates pending (:attr:`~bambo.strategies.Strategy.asynchronous`:
  ``bambo``, ``sobol``, ``random``) run this way; the order in which evaluations end then
  shapes the search, so a seed no longer fixes the journal (nor does a resumed run
  repeat the proposals an uninterrupted one would have made; it loses and repeats no
  completed evaluation either way).

Opening an experiment on a journal that already holds trials replays them
through the strategy (:meth:`~bambo.strategies.Strategy.replay`, then ``tell``), so a
resumed run proposes exactly what the uninterrupted run would have; the trials of a
batch that was cut short are evaluated first. Completed trials are never evaluated again.

Two outcomes end :meth:`Experiment.run` before its budget:

- Every evaluation of the first batch failed with one and the same error (a metric the
  evaluator never returns, an evaluator with the wrong signature, an impossible time
  limit): the run raises :class:`~bambo.errors.RunAbortedError` with that error instead
  of spending the budget on it (``stop_on_first_batch_failure=False`` goes on). The
  trials stay in the journal, and a resumed run stops the same way without evaluating
  them again. Different errors, or one success, let the run go on.
- The strategy stops proposing (a finished grid, BAMBO's ``n_iterations``): a
  :class:`StoppedEarlyWarning` says so and ``result.info["stopped_early"]`` holds
  ``{"evaluated": n, "budget": b}``.

:func:`optimize` is the one-call facade over it. Two ways to drive an experiment yourself:

- ``experiment.run(budget, batch_size)``: the loop, with an :class:`~bambo.execution.Executor`;
- ``trials = experiment.ask(n)``, then ``experiment.tell(trial.id, metrics)`` (metrics by
  name, as the evaluator returns them) or ``experiment.fail(trial.id, reason)`` for each:
  for users who evaluate elsewhere.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor

from bambo.errors import BamboWarning, ConfigError, EvaluationError, RunAbortedError, StrategyError
from bambo.execution import Executor, LocalExecutor
from bambo.problem import Problem
from bambo.result import Artifacts, ParetoResult, RunMeta, build_result
from bambo.store import Journal, Trial
from bambo.strategies import STRATEGIES, Strategy, asynchronous_strategies, get_strategy

T = TypeVar("T")
_META_KEY = "run"
_FIRST_BATCH_MIN = 2  # trials the "first batch" check looks at, at least (batches of 1 are joined)
Mode = Literal["batch", "async"]
MODES = ("batch", "async")


class StoppedEarlyWarning(BamboWarning):
    """The strategy stopped proposing before the budget was spent."""


class Experiment:
    """A search of ``problem`` by ``strategy``, recorded in ``journal``.

    Args:
        problem: The problem the strategy searches (``strategy.problem``).
        strategy: A strategy built for ``problem``; the experiment drives it (and
            replays the journal into it), so give it a fresh one.
        journal: Where trials are recorded (default: in memory). A journal that
            already holds trials of the same problem is resumed.
        executor: Runs the evaluations (default: :class:`~bambo.execution.LocalExecutor`).

    Raises:
        ConfigError: The strategy was built for another problem, or the journal holds
            trials of another problem.
    """

    def __init__(
        self,
        problem: Problem,
        strategy: Strategy,
        journal: Journal | None = None,
        executor: Executor | None = None,
    ) -> None:
        if strategy.problem is not problem:
            raise ConfigError("the strategy was built for another problem; build it with this one")
        self.problem = problem
        self.strategy = strategy
        self.journal = journal if journal is not None else Journal()
        self.executor = executor if executor is not None else LocalExecutor()
        self.meta = self._check_meta(RunMeta.of(problem, strategy.name))
        self.trials: list[Trial] = []
        self._position: dict[int, int] = {}  # trial id -> index in self.trials
        self._open: list[list[int]] = []  # trial ids of each proposed batch not yet told to the strategy
        self.timings: list[dict[str, float]] = []  # the strategy's own time per batch
        self._timing_of: dict[int, dict[str, float]] = {}  # batch number -> its entry of self.timings
        self._tell_each = False  # tell each trial as it ends (asynchronous mode), not whole batches
        self.stopped_early: dict[str, int] | None = None  # set by run() when the strategy stops short
        self._replay()

    # -- set-up --------------------------------------------------------------------------------

    def _check_meta(self, meta: RunMeta) -> RunMeta:
        stored = self.journal.meta(_META_KEY)
        if stored is None:
            if self.journal.trials():
                raise ConfigError("the journal holds trials but no run metadata; it was not written by bambo")
            self.journal.set_meta(_META_KEY, meta.to_dict())
            return meta
        old = RunMeta.from_dict(stored)
        if (old.parameter_names, old.objective_names) != (meta.parameter_names, meta.objective_names):
            raise ConfigError(
                f"the journal belongs to another problem: parameters {old.parameter_names[:4]}..., objectives "
                f"{old.objective_names}; this problem has {meta.parameter_names[:4]}..., {meta.objective_names}"
            )
        return meta

    def _replay(self) -> None:
        states = self.journal.batch_states()
        for batch in self.journal.batches():
            X = torch.tensor([t.x for t in batch], dtype=torch.float64)
            self._guarded("replaying the journal", self.strategy.replay, X)
            if batch[0].batch in states:
                self._guarded("restoring the strategy's state", self.strategy.restore, states[batch[0].batch])
            for trial in batch:
                self._position[trial.id] = len(self.trials)
                self.trials.append(trial)
            self._open.append([t.id for t in batch])
            self._tell_if_ended()

    # -- ask / tell ----------------------------------------------------------------------------

    @property
    def open_trials(self) -> list[Trial]:
        """The proposed trials that have not ended (to evaluate before the next batch)."""
        return [t for batch in self._open for t in (self.trials[self._position[i]] for i in batch) if not t.ended]

    def ask(self, n: int) -> list[Trial]:
        """Propose up to ``n`` trials and journal them as ``pending`` (none: the strategy is done).

        A strategy that proposes with candidates pending (``strategy.asynchronous``) may be
        asked while earlier trials are still open; it treats them as pending points.

        Raises:
            ConfigError: ``n < 1``, or trials of the previous batch have not ended and the
                strategy needs every batch told before the next.
            StrategyError: The strategy failed; its ``result`` holds every evaluation so far.
        """
        if n < 1:
            raise ConfigError(f"ask(n) needs n >= 1, got {n}")
        if self.open_trials and not self.strategy.asynchronous:
            waiting = [t.id for t in self.open_trials]
            raise ConfigError(
                f"trials {waiting} have not ended: tell or fail them before asking for more (strategy "
                f"{self.strategy.name!r} learns whole batches)"
            )
        wall, cpu = time.perf_counter(), time.process_time()
        X = self._guarded("proposing", self.strategy.ask, n)
        timing = {"ask_s": time.perf_counter() - wall, "ask_cpu_s": time.process_time() - cpu}
        self.timings.append(timing)
        if X.shape[0] == 0:
            return []
        state = self._guarded("checkpointing", self.strategy.checkpoint)
        trials = self.journal.add_batch(X.tolist(), state=state)
        for trial in trials:
            self._position[trial.id] = len(self.trials)
            self.trials.append(trial)
        self._open.append([t.id for t in trials])
        self._timing_of[trials[0].batch] = timing
        return trials

    def tell(self, trial_id: int, metrics: Mapping[str, float]) -> Trial:
        """Record the metrics of a trial's evaluation, by name (as the evaluator returns them).

        Metrics that do not give every objective a finite value make the trial failed,
        with the reason.

        Returns:
            The trial as journaled.

        Raises:
            ConfigError: No such trial, or it has already ended.
        """
        trial = self._pending_trial(trial_id)
        x = torch.tensor(trial.x, dtype=torch.float64)
        try:
            clean = {str(k): _number(str(k), v) for k, v in metrics.items()}
            objectives = self.problem.objective_values(clean, x)
        except (EvaluationError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
            return self.fail(trial_id, f"{exc}")
        if not all(map(_finite, objectives)):
            return self.fail(trial_id, f"non-finite objective values {objectives}")
        return self._ended(self.journal.complete(trial_id, objectives, clean))

    def fail(self, trial_id: int, error: str) -> Trial:
        """Record that a trial's evaluation failed, with the reason.

        Raises:
            ConfigError: No such trial, or it has already ended.
        """
        self._pending_trial(trial_id)
        return self._ended(self.journal.fail(trial_id, error))

    def _pending_trial(self, trial_id: int) -> Trial:
        if trial_id not in self._position:
            raise ConfigError(f"no trial {trial_id}; trials are 0..{len(self.trials) - 1}")
        trial = self.trials[self._position[trial_id]]
        if trial.ended:
            raise ConfigError(f"trial {trial_id} has already ended ({trial.status})")
        return trial

    def _started(self, trial_id: int) -> None:
        self._store(self.journal.mark_running(trial_id))

    def _finished(self, trial_id: int, metrics: dict[str, float] | None, error: str | None) -> None:
        if metrics is None:
            self.fail(trial_id, error or "the evaluation failed")
        else:
            self.tell(trial_id, metrics)

    def _store(self, trial: Trial) -> Trial:
        self.trials[self._position[trial.id]] = trial
        return trial

    def _ended(self, trial: Trial) -> Trial:
        self._store(trial)
        self._tell_if_ended()
        return trial

    def _tell_if_ended(self) -> None:
        """Tell the strategy each open batch, in trial order, once all of it has ended (in
        asynchronous mode each trial as it ends, so that the next proposal learns from it)."""
        for ids in list(self._open):
            trials = [self.trials[self._position[i]] for i in ids]
            ended = [t for t in trials if t.ended]
            if not ended or (len(ended) < len(trials) and not self._tell_each):
                continue
            remaining = [t.id for t in trials if not t.ended]
            if remaining:
                ids[:] = remaining
            else:
                self._open.remove(ids)
            X = torch.tensor([t.x for t in ended], dtype=torch.float64)
            Y = torch.full((len(ended), self.problem.num_objectives), float("nan"), dtype=torch.float64)
            for row, trial in enumerate(ended):
                if trial.status == "completed" and trial.objectives is not None:
                    Y[row] = torch.tensor(trial.objectives, dtype=torch.float64)
            wall, cpu = time.perf_counter(), time.process_time()
            self._guarded("learning from a batch", self.strategy.tell, X, Y)
            timing = self._timing_of.get(ended[0].batch)
            if timing is not None:
                timing["tell_s"] = timing.get("tell_s", 0.0) + time.perf_counter() - wall
                timing["tell_cpu_s"] = timing.get("tell_cpu_s", 0.0) + time.process_time() - cpu
                if not remaining:
                    del self._timing_of[ended[0].batch]

    # -- the loop ------------------------------------------------------------------------------

    def run(
        self,
        budget: int,
        batch_size: int = 4,
        progress: bool = False,
        stop_on_first_batch_failure: bool = True,
        mode: Mode = "batch",
    ) -> ParetoResult:
        """Evaluate until ``budget`` trials exist (or the strategy stops proposing).

        Trials of a batch that was cut short (a resumed run) are evaluated first. A
        strategy that stops proposing before the budget ends the run with a
        :class:`StoppedEarlyWarning` (and ``result.info["stopped_early"]``).

        Args:
            budget: Trials in total, journaled ones and failed ones included.
            batch_size: Trials asked for per batch (batch mode).
            progress: Show a progress bar.
            stop_on_first_batch_failure: Stop with :class:`~bambo.errors.RunAbortedError`
                when every trial of the first batch (its first two trials at least,
                batches of one joined) failed with the same error.
            mode: ``"batch"``, or ``"async"``: one new candidate for each worker that
                frees up, the running ones pending (the module docstring). The first ask
                is for as many candidates as the executor has workers.

        Raises:
            ConfigError: ``budget`` or ``batch_size`` below 1, an unknown ``mode``, or
                ``"async"`` with a strategy that learns whole batches only.
            RunAbortedError: The first batch failed entirely for one reason (also when
                resuming such a run); its ``result`` holds the trials, which stay journaled.
            StrategyError: The strategy failed; its ``result`` holds every evaluation so far.
        """
        if budget < 1 or batch_size < 1:
            raise ConfigError(f"budget and batch_size must be >= 1, got {budget} and {batch_size}")
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
        if mode == "async" and not self.strategy.asynchronous:
            raise ConfigError(
                f"mode 'async' needs a strategy that proposes with candidates pending; {self.strategy.name!r} learns "
                f"whole batches: use mode 'batch' or one of {', '.join(asynchronous_strategies())}"
            )
        check = self._check_first_batch if stop_on_first_batch_failure else (lambda: None)
        check()
        self.stopped_early = None
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[proposal]}"),
        )
        with Progress(*columns, disable=not progress, transient=False) as bar:
            task = bar.add_task(f"{self.strategy.name} evaluations", total=budget, proposal="")

            def finished(trial_id: int, metrics: dict[str, float] | None, error: str | None) -> None:
                self._finished(trial_id, metrics, error)
                bar.advance(task)

            bar.update(task, completed=len(self.trials) - len(self.open_trials))
            if self.open_trials:
                self._evaluate(self.open_trials, finished)
                check()

            def propose(n: int) -> list[Trial]:
                room = budget - len(self.trials)
                trials = self.ask(min(n, room)) if room > 0 and self.stopped_early is None else []
                if room > 0 and not trials:
                    self.stopped_early = {"evaluated": len(self.trials), "budget": budget}
                if trials:
                    bar.update(task, proposal=f"last proposal {self.timings[-1]['ask_s']:.2f} s")
                return trials

            if mode == "async":

                def source(free: int) -> list[tuple[int, Tensor]]:
                    check()
                    return [(t.id, torch.tensor(t.x, dtype=torch.float64)) for t in propose(free)]

                self._tell_each = True
                try:
                    self.executor.stream(self.problem, source, self._started, finished)
                finally:
                    self._tell_each = False
                check()
            else:
                while trials := propose(batch_size):
                    self._evaluate(trials, finished)
                    check()
        if self.stopped_early is not None:
            warnings.warn(
                f"the strategy {self.strategy.name!r} stopped after {len(self.trials)} of {budget} evaluations: "
                "it proposes no more points (a finite design such as a finished grid, or an iteration limit "
                "such as BAMBO's n_iterations)",
                StoppedEarlyWarning,
                stacklevel=2,
            )
        return self.result()

    def _check_first_batch(self) -> None:
        """Raise :class:`RunAbortedError` if the first batch (>= 2 trials) ended and all failed for one reason."""
        first: list[Trial] = []
        for trial in self.trials:  # the trials of the first batches, until at least _FIRST_BATCH_MIN of them
            if len(first) >= _FIRST_BATCH_MIN and trial.batch != first[-1].batch:
                break
            first.append(trial)
        if len(first) < _FIRST_BATCH_MIN or not all(t.status == "failed" for t in first):
            return
        reasons = {t.error for t in first}
        if len(reasons) != 1:
            return
        reason = reasons.pop() or "the evaluation failed"
        raise RunAbortedError(
            f"every evaluation of the first batch ({len(first)} trials) failed with the same error, so the run "
            f"stopped instead of spending its budget on it: {reason} (the trials are kept in the journal; fix "
            "the cause and start a new run)",
            reason,
            self.result(),
        )

    def _evaluate(self, trials: list[Trial], finished: Callable[[int, Any, Any], None]) -> None:
        work = [(t.id, torch.tensor(t.x, dtype=torch.float64)) for t in trials]
        self.executor.evaluate(self.problem, work, self._started, finished)

    # -- results -------------------------------------------------------------------------------

    def result(self, ref_point: Tensor | None = None) -> ParetoResult:
        """The evaluations so far and their Pareto set (:func:`~bambo.result.build_result`).

        ``info`` holds the strategy's facts and the loop's timings: ``ask_seconds`` (wall
        time of every ``ask``) and ``strategy_seconds``/``strategy_cpu_seconds`` (ask plus
        tell per batch, evaluations excluded).

        Args:
            ref_point: Hypervolume reference, maximisation form (default: the problem's).
        """
        artifacts = self.strategy.artifacts()
        info = {
            **artifacts.info,
            **({} if self.stopped_early is None else {"stopped_early": dict(self.stopped_early)}),
            "ask_seconds": [t["ask_s"] for t in self.timings],
            "strategy_seconds": [t["ask_s"] + t.get("tell_s", 0.0) for t in self.timings],
            "strategy_cpu_seconds": [t["ask_cpu_s"] + t.get("tell_cpu_s", 0.0) for t in self.timings],
        }
        artifacts = Artifacts(artifacts.predicted_X, artifacts.predicted_front, info)
        return build_result(self.trials, self.meta, artifacts, ref_point)

    def _guarded(self, doing: str, step: Callable[..., T], *args: Any) -> T:
        """Run a strategy step; if it raises, re-raise as :class:`StrategyError` carrying the result so far."""
        try:
            return step(*args)
        except StrategyError:
            raise
        except Exception as exc:
            try:
                partial = build_result(self.trials, self.meta)
            except Exception:  # noqa: BLE001 - the original error matters more
                partial = None
            raise StrategyError(
                f"strategy {self.strategy.name!r} failed while {doing} after {len(self.trials)} evaluations "
                f"(kept in this error's .result and the journal): {type(exc).__name__}: {exc}",
                partial,
            ) from exc


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
        experiment = Experiment(problem, search, journal=store)
        return experiment.run(
            budget, batch_size, progress=progress, stop_on_first_batch_failure=stop_on_first_batch_failure
        )
    finally:
        store.close()


def _number(name: str, value: Any) -> float:
    """A metric as a float; an integer too large for one is an :class:`EvaluationError` naming it."""
    try:
        return float(value)
    except OverflowError:
        raise EvaluationError(f"metric {name!r} does not fit in a float: {str(value)[:40]}...") from None


def _finite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))
