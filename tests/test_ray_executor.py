"""The Ray executor on a local Ray cluster: trials side by side, one writer, faults survived.

One cluster (2 CPUs) and one executor with two workers serve the whole module: Ray's local
start-up and a worker's first import of torch take seconds. Skipped when the ``ray`` extra
is not installed.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
import torch

from bambo.experiment import Experiment
from bambo.problem import Objective, Problem
from bambo.store import Journal

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'bambo[ray]')")

from bambo.ray_executor import RayExecutor  # noqa: E402 - after the skip


class Timed(Problem):
    """Two conflicting objectives of x in [0, 1]; each evaluation sleeps and logs when it ran.

    ``x = 0.5`` raises (an injected evaluator failure); ``x = 0.25`` kills its worker process
    the first time (a dead worker), leaving a marker so that a retry succeeds.
    """

    def __init__(self, folder: Path, sleep_s: float = 0.3) -> None:
        self._set_objectives([Objective(name="f"), Objective(name="g")], None)
        self.bounds = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
        self.folder = str(folder)
        self.sleep_s = sleep_s

    def metrics(self, x: torch.Tensor) -> dict[str, float]:
        value = float(x[0])
        marker = os.path.join(self.folder, "died-once")
        if value == 0.25 and not os.path.exists(marker):
            Path(marker).touch()
            os._exit(1)  # the worker process dies mid-trial
        start = time.time()
        time.sleep(self.sleep_s)
        if value == 0.5:
            raise RuntimeError("injected failure")
        with open(os.path.join(self.folder, "log"), "a") as handle:
            handle.write(f"{value} {start} {time.time()} {os.getpid()}\n")
        return {"f": value, "g": 1.0 - value}

    def evaluate_one(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.objective_values(self.metrics(x), x), dtype=torch.float64)


@pytest.fixture(scope="module")
def executor():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token file under the user's home
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    executor = RayExecutor(workers=2, retries=1, threads=1)
    yield executor
    executor.shutdown_workers()
    if started_here:
        ray.shutdown()


def run_batch(executor: RayExecutor, problem: Problem, xs: list[float]) -> list[tuple]:
    outcomes: list[tuple] = []
    trials = [(i, torch.tensor([v], dtype=torch.float64)) for i, v in enumerate(xs)]
    executor.evaluate(problem, trials, lambda _: None, lambda i, m, e: outcomes.append((i, m, e)))
    return outcomes


def test_a_batch_runs_on_both_workers_side_by_side_and_each_trial_is_reported_once(executor, tmp_path):
    problem = Timed(tmp_path, sleep_s=1.0)  # long enough that both workers run at once, whatever the load
    run_batch(executor, problem, [0.9, 0.8])  # the workers' first import of torch is not part of the check
    (tmp_path / "log").unlink()
    outcomes = run_batch(executor, problem, [0.1, 0.2, 0.3, 0.4])
    assert sorted(i for i, *_ in outcomes) == [0, 1, 2, 3]
    assert all(e is None and m["f"] == [0.1, 0.2, 0.3, 0.4][i] for i, m, e in outcomes)
    rows = [line.split() for line in (tmp_path / "log").read_text().splitlines()]
    spans = sorted((float(start), float(end)) for _, start, end, _ in rows)
    assert len({pid for *_, pid in rows}) == 2  # two worker processes
    assert any(a_end > b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False))  # overlap


def test_an_evaluator_failure_and_a_dead_worker_leave_the_other_trials_completed(executor, tmp_path):
    problem = Timed(tmp_path, sleep_s=0.05)
    outcomes = {i: (m, e) for i, m, e in run_batch(executor, problem, [0.1, 0.5, 0.25, 0.3])}
    assert len(outcomes) == 4
    assert outcomes[1][0] is None and "injected failure" in outcomes[1][1]
    assert outcomes[2][0] == {"f": 0.25, "g": 0.75}  # its worker died once; the retry on a new worker completed
    assert (tmp_path / "died-once").exists() and executor.replaced >= 1
    assert outcomes[0][1] is None and outcomes[3][1] is None


def test_a_dead_worker_without_retries_fails_its_trial_with_the_reason(executor, tmp_path):
    problem = Timed(tmp_path, sleep_s=0.05)
    executor.retries = 0
    try:
        outcomes = {i: (m, e) for i, m, e in run_batch(executor, problem, [0.25, 0.7])}
    finally:
        executor.retries = 1
    assert outcomes[0][0] is None and "the Ray worker evaluating it died" in outcomes[0][1]
    assert outcomes[1][0] == {"f": 0.7, "g": pytest.approx(0.3)}


def test_batch_mode_gives_the_local_executors_journal(executor, tmp_path):
    from bambo.strategies import get_strategy

    journals = []
    for name, runner in (("local", None), ("ray", executor)):
        problem = Timed(tmp_path / name, sleep_s=0.0)
        (tmp_path / name).mkdir()
        with Journal(tmp_path / name / "journal.sqlite") as journal:
            experiment = Experiment(problem, get_strategy("sobol", problem, seed=3), journal, runner)
            experiment.run(8, batch_size=4)
            journals.append([(t.id, t.x, t.metrics, t.status) for t in journal.trials()])
    assert journals[0] == journals[1] and len(journals[0]) == 8


def test_the_config_section_builds_the_ray_executor():
    from bambo.config import ExecutionConfig

    executor = ExecutionConfig(backend="ray", workers=3, resources_per_trial={"GPU": 1}, retries=2).executor(60.0)
    assert isinstance(executor, RayExecutor)
    assert (executor.workers, executor.resources, executor.retries, executor.timeout_s) == (3, {"GPU": 1}, 2, 60.0)
    assert executor.address is None  # "local": start (or reuse) a cluster on this machine
