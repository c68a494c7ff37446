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

Multi-fidelity (:mod:`bambo.fidelity`): with ``halving`` each batch is successive halving,
``factor * q`` candidates evaluated at a low fidelity and at most ``q`` of them promoted to a
full evaluation, and the budget counts evaluation cost (a trial at fidelity ``f`` costs ``f``;
without halving every trial costs 1, so the budget is the number of trials). A batch cut short
between its two stages resumes where it stopped: finished low-fidelity evaluations are kept,
the promotion (deterministic from the journal) is made or read back, and only what is missing
runs.

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

:func:`bambo.optimize` (:mod:`bambo.facade`) is the one-call facade over it. Two ways to drive an experiment yourself:

- ``experiment.run(budget, batch_size)``: the loop, with an :class:`~bambo.execution.Executor`;
- ``trials = experiment.ask(n)``, then ``experiment.tell(trial.id, metrics)`` (metrics by
  name, as the evaluator returns them) or ``experiment.fail(trial.id, reason)`` for each:
  for users who evaluate elsewhere.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor

from bambo.errors import BamboWarning, ConfigError, EvaluationError, RunAbortedError, StrategyError
from bambo.execution import Executor, LocalExecutor, Work
from bambo.fidelity import FULL, Halving, choose_promotions, told_objectives
from bambo.problem import Problem
from bambo.result import Artifacts, ParetoResult, RunMeta, build_result
from bambo.store import Journal, Trial
from bambo.strategies import Strategy, asynchronous_strategies

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
        halving: Successive halving inside each batch of :meth:`run` (:class:`~bambo.fidelity.Halving`);
            the problem must support fidelities. ``None``: every evaluation in full.

    Raises:
        ConfigError: The strategy was built for another problem, the journal holds
            trials of another problem, or halving on a problem without fidelities.
    """

    def __init__(
        self,
        problem: Problem,
        strategy: Strategy,
        journal: Journal | None = None,
        executor: Executor | None = None,
        halving: Halving | None = None,
    ) -> None:
        if strategy.problem is not problem:
            raise ConfigError("the strategy was built for another problem; build it with this one")
        if halving is not None:
            problem.check_fidelity(halving.fidelity)
            if strategy.proposes_fidelity:
                raise ConfigError(f"strategy {strategy.name!r} chooses its own fidelities: run it without halving")
        self.problem = problem
        self.strategy = strategy
        self.journal = journal if journal is not None else Journal()
        self.executor = executor if executor is not None else LocalExecutor()
        self.halving = halving
        self._promoted = self.journal.promoted_batches()  # halving batches whose promotion is journaled
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
            X = self._told_X([t for t in batch if t.parent is None])
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
        return self._ask(n, FULL)

    def _ask(self, n: int, fidelity: float) -> list[Trial]:
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
        fidelities: float | list[float] = fidelity
        if self.strategy.proposes_fidelity:  # the strategy's last column is each candidate's fidelity
            X, fidelities = X[:, :-1], [self.problem.check_fidelity(f) for f in X[:, -1].tolist()]
        state = self._guarded("checkpointing", self.strategy.checkpoint)
        trials = self.journal.add_batch(X.tolist(), state=state, fidelity=fidelities)
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
            if self._halving_batch(trials):  # told once promoted and fully evaluated
                if len(ended) < len(trials) or trials[0].batch not in self._promoted:
                    continue
                self._open.remove(ids)
                stage0 = [t for t in trials if t.parent is None]
                low_fidelity = self.halving.low_fidelity if self.halving is not None else "drop"
                X = self._told_X(stage0)
                Y = told_objectives(stage0, [t for t in trials if t.parent is not None], low_fidelity, self._m)
                self._tell_strategy(X, Y, ended[0].batch, True)
                continue
            if not ended or (len(ended) < len(trials) and not self._tell_each):
                continue
            remaining = [t.id for t in trials if not t.ended]
            if remaining:
                ids[:] = remaining
            else:
                self._open.remove(ids)
            X = self._told_X(ended)
            Y = torch.full((len(ended), self._m), float("nan"), dtype=torch.float64)
            for row, trial in enumerate(ended):
                if trial.status == "completed" and trial.objectives is not None:
                    Y[row] = torch.tensor(trial.objectives, dtype=torch.float64)
            self._tell_strategy(X, Y, ended[0].batch, not remaining)

    @property
    def _m(self) -> int:
        return self.problem.num_objectives

    def _halving_batch(self, trials: list[Trial]) -> bool:
        """Whether a journal batch is successive halving's (its first trials at a low fidelity, chosen by the loop)."""
        return not self.strategy.proposes_fidelity and trials[0].fidelity < FULL

    def _told_X(self, trials: list[Trial]) -> Tensor:
        """The decision vectors of ``trials`` as the strategy sees them (with their fidelity last, for a
        strategy that proposes fidelities)."""
        X = torch.tensor([t.x for t in trials], dtype=torch.float64).reshape(len(trials), self.problem.dim)
        if self.strategy.proposes_fidelity:
            X = torch.cat([X, torch.tensor([[t.fidelity] for t in trials], dtype=torch.float64)], dim=1)
        return X

    def _tell_strategy(self, X: Tensor, Y: Tensor, batch: int, last: bool) -> None:
        """Tell the strategy ``(X, Y)`` of ``batch`` (``last``: nothing of the batch is left to tell)."""
        wall, cpu = time.perf_counter(), time.process_time()
        self._guarded("learning from a batch", self.strategy.tell, X, Y)
        timing = self._timing_of.get(batch)
        if timing is not None:
            timing["tell_s"] = timing.get("tell_s", 0.0) + time.perf_counter() - wall
            timing["tell_cpu_s"] = timing.get("tell_cpu_s", 0.0) + time.process_time() - cpu
            if last:
                del self._timing_of[batch]

    # -- the loop ------------------------------------------------------------------------------

    def run(
        self,
        budget: float,
        batch_size: int = 4,
        progress: bool = False,
        stop_on_first_batch_failure: bool = True,
        mode: Mode = "batch",
    ) -> ParetoResult:
        """Evaluate until the trials' cost reaches ``budget`` (or the strategy stops proposing).

        Trials of a batch that was cut short (a resumed run) are evaluated first. A
        strategy that stops proposing before the budget ends the run with a
        :class:`StoppedEarlyWarning` (and ``result.info["stopped_early"]``).

        Args:
            budget: Evaluation cost in total, in full evaluations, journaled and failed
                trials included: the number of trials without halving. With halving a
                batch is shrunk to fit what is left (at least one full evaluation; the
                last batch may overrun by less than one batch's cost).
            batch_size: Trials asked for per batch (batch mode); with halving, full
                evaluations per batch at most (``factor * batch_size`` candidates).
            progress: Show a progress bar.
            stop_on_first_batch_failure: Stop with :class:`~bambo.errors.RunAbortedError`
                when every trial of the first batch (its first two trials at least,
                batches of one joined) failed with the same error.
            mode: ``"batch"``, or ``"async"``: one new candidate for each worker that
                frees up, the running ones pending (the module docstring). The first ask
                is for as many candidates as the executor has workers.

        Raises:
            ConfigError: ``budget`` or ``batch_size`` below 1, an unknown ``mode``, or
                ``"async"`` with a strategy that learns whole batches only or with halving.
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
        if mode == "async" and self.halving is not None:
            raise ConfigError("halving promotes within whole batches: use mode 'batch' with it")
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
                bar.advance(task, self.trials[self._position[trial_id]].cost)

            bar.update(task, completed=sum(t.cost for t in self.trials if t.ended))
            if self.open_trials:
                self._evaluate(self.open_trials, finished)
                check()
            self._finish_halving(finished)

            def propose(n: int) -> list[Trial]:
                room = budget - self.cost
                if room <= 1e-9 or self.stopped_early is not None:
                    return []
                if self.halving is None:
                    trials = self.ask(min(n, math.ceil(room - 1e-9)))
                else:
                    while n > 1 and self.halving.batch_cost(n) > room + 1e-9:
                        n -= 1
                    trials = self._ask(self.halving.factor * n, self.halving.fidelity)
                if not trials:
                    self.stopped_early = {"evaluated": len(self.trials), "budget": budget}
                else:
                    bar.update(task, proposal=f"last proposal {self.timings[-1]['ask_s']:.2f} s")
                return trials

            if mode == "async":

                def source(free: int) -> list[Work]:
                    check()
                    return self._work(propose(free))

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
                    if self.halving is not None:
                        q = min(batch_size, math.ceil(len(trials) / self.halving.factor))
                        self._promote(trials[0].batch, q, finished)
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
        self.executor.evaluate(self.problem, self._work(trials), self._started, finished)

    @staticmethod
    def _work(trials: list[Trial]) -> list[Work]:
        return [(t.id, torch.tensor(t.x, dtype=torch.float64), t.fidelity) for t in trials]

    @property
    def cost(self) -> float:
        """Evaluation cost of the trials so far, in full evaluations (pending ones included)."""
        return float(sum(t.cost for t in self.trials))

    def _promote(self, batch: int, q: int, finished: Callable[[int, Any, Any], None]) -> None:
        """Journal the promotion of halving batch ``batch`` (its low-fidelity trials ended), then
        evaluate the promoted candidates in full."""
        stage0 = [t for t in self.trials if t.batch == batch and t.parent is None]
        earlier = [t for t in self.trials if t.batch < batch]
        columns = self.problem.front_columns
        chosen = choose_promotions(earlier, stage0, max(1, q), columns, self.problem.ref_point)
        promoted = self.journal.promote(batch, chosen, FULL)
        self._promoted.add(batch)
        entry = next(ids for ids in self._open if self.trials[self._position[ids[0]]].batch == batch)
        for trial in promoted:
            self._position[trial.id] = len(self.trials)
            self.trials.append(trial)
            entry.append(trial.id)
        if promoted:
            self._evaluate(promoted, finished)
        else:
            self._tell_if_ended()

    def _finish_halving(self, finished: Callable[[int, Any, Any], None]) -> None:
        """Promote the resumed halving batches whose low-fidelity stage ended before their promotion was
        journaled (a run stopped between the two stages)."""
        for ids in list(self._open):
            trials = [self.trials[self._position[i]] for i in ids]
            batch = trials[0].batch
            if self._halving_batch(trials) and batch not in self._promoted and all(t.ended for t in trials):
                factor = self.halving.factor if self.halving is not None else 1
                self._promote(batch, math.ceil(len(trials) / factor), finished)

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


def _number(name: str, value: Any) -> float:
    """A metric as a float; an integer too large for one is an :class:`EvaluationError` naming it."""
    try:
        return float(value)
    except OverflowError:
        raise EvaluationError(f"metric {name!r} does not fit in a float: {str(value)[:40]}...") from None


def _finite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))
