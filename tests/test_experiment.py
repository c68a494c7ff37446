"""The experiment loop's asynchronous mode: a freed worker gets a new candidate, the running ones pending.

A scripted executor with two workers stands in for Ray (``tests/test_ray_executor.py`` runs
the real one): it finishes the newest running trial first, so evaluations end out of order.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import Tensor

from bambo.errors import ConfigError
from bambo.execution import Executor, Finished, LocalExecutor, Source, Started, Work
from bambo.experiment import Experiment
from bambo.problem import Problem, SyntheticProblem
from bambo.store import Journal
from bambo.strategies import BAMBO, asynchronous_strategies, get_strategy

FAST = {"n_initial": 4, "num_restarts": 2, "raw_samples": 32, "mc_samples": 16, "maxiter": 30}


class LastInFirstOut(Executor):
    """Two workers; whenever one must finish, the trial started last finishes (out of order)."""

    workers = 2

    def __init__(self) -> None:
        self.asked: list[int] = []  # the k of every source(k) call

    def evaluate(self, problem: Problem, trials: Sequence[Work], started: Started, finished: Finished) -> None:
        for trial_id, x, fidelity in trials:
            started(trial_id)
            finished(trial_id, problem.metrics(x, fidelity), None)

    def stream(self, problem: Problem, source: Source, started: Started, finished: Finished) -> None:
        running: list[Work] = []
        exhausted = False
        while True:
            free = self.workers - len(running)
            if free and not exhausted:
                self.asked.append(free)
                new = list(source(free))
                exhausted = not new
                for work in new:
                    started(work[0])
                    running.append(work)
            if not running:
                return
            trial_id, x, fidelity = running.pop()
            finished(trial_id, problem.metrics(x, fidelity), None)


def test_async_mode_proposes_one_candidate_per_freed_worker_with_the_running_one_pending():
    problem = SyntheticProblem("branin_currin")
    strategy = BAMBO(problem, seed=0, n_iterations=None, **FAST)
    pending_at_ask: list[int] = []
    ask = strategy.ask

    def spying_ask(n: int) -> Tensor:
        pending_at_ask.append(strategy._pending.shape[0])
        return ask(n)

    strategy.ask = spying_ask  # type: ignore[method-assign]
    executor = LastInFirstOut()
    experiment = Experiment(problem, strategy, executor=executor)
    result = experiment.run(9, mode="async")
    assert executor.asked[0] == 2 and set(executor.asked[1:-1]) == {1}  # both workers, then one as each frees
    assert [t.id for t in experiment.trials] == list(range(9)) and all(
        t.status == "completed" for t in experiment.trials
    )
    assert result.n_evaluations == 9
    assert pending_at_ask[0] == 0 and all(p == 1 for p in pending_at_ask[1:])  # the other worker's trial pending
    assert strategy._pending.shape[0] == 0 and strategy.X.shape[0] == 9  # every trial told once
    told = {tuple(x) for x in strategy.X.tolist()}
    assert told == {tuple(t.x) for t in experiment.trials}
    assert len(strategy.timings) >= 4  # model-based proposals after the warm start of 4


def test_async_mode_journals_each_proposal_as_its_own_batch_and_resumes(tmp_path):
    problem = SyntheticProblem("branin_currin")
    with Journal(tmp_path / "journal.sqlite") as journal:
        Experiment(problem, get_strategy("sobol", problem, seed=1), journal, LastInFirstOut()).run(5, mode="async")
        assert [len(b) for b in journal.batches()] == [2, 1, 1, 1]
    with Journal(tmp_path / "journal.sqlite") as journal:
        resumed = Experiment(problem, get_strategy("sobol", problem, seed=1), journal, LastInFirstOut())
        resumed.run(8, mode="async")
        trials = journal.trials()
    assert [t.id for t in trials] == list(range(8)) and all(t.status == "completed" for t in trials)
    assert len({tuple(t.x) for t in trials}) == 8  # the replayed Sobol sequence goes on, nothing repeated


def test_async_mode_on_one_local_worker_is_batch_mode_with_batches_of_one():
    problem = SyntheticProblem("branin_currin")
    runs = []
    for mode, batch_size in (("async", 4), ("batch", 1)):
        strategy = BAMBO(problem, seed=2, n_iterations=None, **FAST)
        experiment = Experiment(problem, strategy, executor=LocalExecutor())
        experiment.run(6, batch_size=batch_size, mode=mode)
        runs.append([(t.x, t.objectives) for t in experiment.trials])
    assert runs[0] == runs[1]


def test_async_mode_needs_a_strategy_that_proposes_with_candidates_pending():
    problem = SyntheticProblem("branin_currin")
    experiment = Experiment(problem, get_strategy("nsga2", problem, seed=0))
    with pytest.raises(ConfigError, match=r"mode 'async' needs a strategy .*'nsga2' learns whole batches"):
        experiment.run(8, mode="async")
    with pytest.raises(ConfigError, match="unknown mode 'parallel'; valid: batch, async"):
        experiment.run(8, mode="parallel")  # type: ignore[arg-type]
    assert experiment.trials == []  # nothing evaluated
    assert set(asynchronous_strategies()) == {"bambo", "sobol", "random"}


def test_a_batch_strategy_is_not_asked_again_before_its_batch_is_told():
    problem = SyntheticProblem("branin_currin")
    experiment = Experiment(problem, get_strategy("nsga2", problem, seed=0))
    trials = experiment.ask(4)
    with pytest.raises(ConfigError, match=r"trials \[0, 1, 2, 3\] have not ended"):
        experiment.ask(1)
    for trial in trials:
        experiment.tell(trial.id, problem.metrics(torch.tensor(trial.x, dtype=torch.float64)))
    assert len(experiment.ask(2)) == 2
