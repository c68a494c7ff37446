"""The Ray executor on a local Ray cluster: trials side by side, one writer, faults survived.

One cluster (2 CPUs) and one executor with two workers serve the whole module: Ray's local
start-up and a worker's first import of torch take seconds. Skipped when the ``ray`` extra
is not installed.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch

from bambo.experiment import Experiment
from bambo.problem import Objective, Problem
from bambo.store import Journal
from bambo.strategies import Strategy

FAST_BAMBO = {"n_initial": 4, "num_restarts": 2, "raw_samples": 32, "mc_samples": 16, "maxiter": 30}

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'bambo[ray]')")

from bambo.ray_executor import RayExecutor  # noqa: E402 - after the skip


class Timed(Problem):
    """Two conflicting objectives of x in [0, 1]; each evaluation sleeps and logs when it ran.

    ``x = 0.5`` raises (an injected evaluator failure); ``x = 0.25`` kills its worker process
    the first time (a dead worker), leaving a marker so that a retry succeeds; ``x = 0.75``
    writes its worker's process id to the file ``running-0.75`` the first time and then
    sleeps 30 s, for a test to kill that worker from outside.
    """

    def __init__(self, folder: Path, sleep_s: float = 0.3) -> None:
        self._set_objectives([Objective(name="f"), Objective(name="g")], None)
        self.bounds = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
        self.folder = str(folder)
        self.sleep_s = sleep_s

    def metrics(self, x: torch.Tensor, fidelity: float = 1.0) -> dict[str, float]:
        value = float(x[0])
        marker = os.path.join(self.folder, "died-once")
        if value == 0.25 and not os.path.exists(marker):
            Path(marker).touch()
            os._exit(1)  # the worker process dies mid-trial
        running = os.path.join(self.folder, "running-0.75")
        if value == 0.75 and not os.path.exists(running):
            Path(running).write_text(str(os.getpid()))
            time.sleep(30)  # killed from outside long before this ends
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
    executor.close()
    if started_here:
        ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)  # Ray's session files and logs


def run_batch(executor: RayExecutor, problem: Problem, xs: list[float]) -> list[tuple]:
    outcomes: list[tuple] = []
    trials = [(i, torch.tensor([v], dtype=torch.float64), 1.0) for i, v in enumerate(xs)]
    executor.evaluate(problem, trials, lambda _: None, lambda i, m, e: outcomes.append((i, m, e)))
    return outcomes


class Points(Strategy):
    """Proposes the given values of x, in order."""

    name = "points"

    def __init__(self, problem: Problem, values: list[float]) -> None:
        super().__init__(problem, seed=0)
        self.values = list(values)

    def ask(self, n: int) -> torch.Tensor:
        taken, self.values = self.values[:n], self.values[n:]
        return torch.tensor([[v] for v in taken], dtype=torch.float64).reshape(-1, 1)


def test_a_batch_runs_on_both_workers_side_by_side_and_each_trial_is_reported_once(executor, tmp_path):
    problem = Timed(tmp_path, sleep_s=1.0)  # long enough that both workers run at once, whatever the load
    run_batch(executor, problem, [0.9, 0.8])  # the workers' first import of torch is not part of the check
    (tmp_path / "log").unlink()
    with Journal(tmp_path / "journal.sqlite") as journal:
        experiment = Experiment(problem, Points(problem, [0.1, 0.2, 0.3, 0.4]), journal, executor)
        experiment.run(4, batch_size=4)
        trials = journal.trials()
    assert [(t.id, t.status, t.metrics["f"]) for t in trials] == [
        (i, "completed", v) for i, v in enumerate([0.1, 0.2, 0.3, 0.4])
    ]
    rows = [line.split() for line in (tmp_path / "log").read_text().splitlines()]
    assert len(rows) == 4  # each trial evaluated once
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
            strategy = get_strategy("bambo", problem, seed=3, n_iterations=None, **FAST_BAMBO)
            Experiment(problem, strategy, journal, runner).run(8, batch_size=4)  # a warm start, one BO batch
            journals.append([(t.id, t.x, t.metrics, t.status) for t in journal.trials()])
    assert journals[0] == journals[1] and len(journals[0]) == 8


def test_a_halving_run_on_ray_gives_the_local_executors_journal(executor):
    from bambo.benchmarks.noisy import NoisyFidelityProblem
    from bambo.fidelity import Halving
    from bambo.strategies import get_strategy

    journals = []
    problem = NoisyFidelityProblem(noise=0.03)
    for runner in (None, executor):
        strategy = get_strategy("bambo", problem, seed=3, n_iterations=None, **FAST_BAMBO)
        experiment = Experiment(problem, strategy, executor=runner, halving=Halving(fidelity=0.25, factor=2))
        experiment.run(6, batch_size=2)  # both stages of each batch on the workers
        journals.append([(t.id, t.x, t.fidelity, t.parent, t.metrics, t.status) for t in experiment.trials])
    assert journals[0] == journals[1]
    assert {fidelity for _, _, fidelity, *_ in journals[0]} == {0.25, 1.0}


def test_the_config_section_builds_the_ray_executor():
    from bambo.config import ExecutionConfig

    executor = ExecutionConfig(backend="ray", workers=3, resources_per_trial={"GPU": 1}, retries=2).executor(60.0)
    assert isinstance(executor, RayExecutor)
    assert (executor.workers, executor.resources, executor.retries, executor.timeout_s) == (3, {"GPU": 1}, 2, 60.0)
    assert executor.address is None  # "local": start (or reuse) a cluster on this machine


def test_killing_the_worker_of_a_running_trial_from_outside_is_survived(executor, tmp_path):
    problem = Timed(tmp_path, sleep_s=0.05)
    replaced = executor.replaced

    def kill_when_running() -> None:
        marker = tmp_path / "running-0.75"
        while not marker.exists():  # no time limit but pytest's own
            time.sleep(0.02)
        os.kill(int(marker.read_text()), signal.SIGKILL)

    killer = threading.Thread(target=kill_when_running, daemon=True)
    killer.start()
    outcomes = {i: (m, e) for i, m, e in run_batch(executor, problem, [0.75, 0.6, 0.65])}
    killer.join()
    assert outcomes[0] == ({"f": 0.75, "g": 0.25}, None)  # run again on a new worker (retries=1)
    assert outcomes[1][1] is None and outcomes[2][1] is None
    assert executor.replaced == replaced + 1


def test_async_mode_hands_a_freed_worker_a_new_trial_at_once(executor, tmp_path):
    from bambo.strategies import get_strategy

    problem = Timed(tmp_path, sleep_s=0.3)
    with Journal(tmp_path / "journal.sqlite") as journal:
        experiment = Experiment(problem, get_strategy("sobol", problem, seed=5), journal, executor)
        experiment.run(6, mode="async")
        trials, batches = journal.trials(), journal.batches()
    assert [t.id for t in trials] == list(range(6)) and all(t.status == "completed" for t in trials)
    assert [len(b) for b in batches] == [2, 1, 1, 1, 1]  # one per worker, then one per freed worker
    rows = [line.split() for line in (tmp_path / "log").read_text().splitlines()]
    assert len(rows) == 6 and len({pid for *_, pid in rows}) == 2


def test_a_driver_killed_mid_batch_is_resumed_with_no_completed_trial_repeated_or_lost(executor, tmp_path):
    """``bambo run --backend ray`` in a subprocess on this module's cluster, SIGKILLed while an
    evaluation is held (the kill point is an event, not a clock), then ``bambo resume``."""
    from typer.testing import CliRunner

    from bambo.cli import app
    from tests.run_helpers import kill_run_when_held
    from tests.test_runner import REPO, _completed, toy_config

    log, release, hold_after, budget = tmp_path / "calls.log", tmp_path / "release", 5, 12
    execution = {"backend": "ray", "address": ray.get_runtime_context().gcs_address, "workers": 2}
    execution["resources_per_trial"] = {"CPU": 0}  # the module's two workers hold the cluster's 2 CPUs
    path = toy_config(
        tmp_path,
        **{
            "evaluator.options": {"log": str(log), "hold_after": hold_after, "release": str(release)},
            "execution": execution,
            "budget": budget,
        },
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
    kill_run_when_held(path, log, env, REPO)
    held: set[int] = set()
    while True:  # Ray ends the dead driver's workers; wait until every held one is gone
        now = {int(line.rsplit("pid=", 1)[1]) for line in log.read_text().splitlines() if line.startswith("held ")}
        if now == held and not any(_alive(pid) for pid in held):
            break
        held = now
        time.sleep(0.05)
    run_dir = tmp_path / "run"
    before = _completed(run_dir)
    lines_before = len(log.read_text().splitlines())
    assert hold_after <= len(before) < budget
    release.touch()
    result = CliRunner().invoke(app, ["resume", str(run_dir), "--threads", "1"])
    assert result.exit_code == 0, result.output
    with Journal(run_dir / "journal.sqlite") as journal:
        trials = journal.trials()
    assert [t.id for t in trials] == list(range(budget)) and all(t.status == "completed" for t in trials)
    assert all((t.x, t.metrics) == before[t.id] for t in trials if t.id in before)  # none lost or changed
    after = log.read_text().splitlines()[lines_before:]
    assert sum(line.startswith("start ") for line in after) == budget - len(before)  # none evaluated again


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie, ended but not yet reaped by its parent, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
