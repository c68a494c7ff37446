"""Run integrity: one writer per run, extreme metrics, dtypes, runs that fail or stop early, read-only runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console
from typer.testing import CliRunner

from bambo.cli import app
from bambo.errors import BamboWarning, ModelMismatchError, RunAbortedError
from bambo.execution import LocalExecutor
from bambo.experiment import Experiment, StoppedEarlyWarning
from bambo.facade import optimize
from bambo.merge import TaskVectors
from bambo.merge_problem import MergeProblem
from bambo.problem import Objective, SyntheticProblem
from bambo.report import pareto_table, write_pareto
from bambo.result import RunMeta, build_result
from bambo.runner import start
from bambo.store import Journal, JournalError, RunInUseError, Trial
from bambo.strategies import get_strategy
from tests.run_helpers import write_toy_models
from tests.test_runner import toy_config

REPO = Path(__file__).resolve().parents[1]
cli = CliRunner()


def _journal(run_dir: Path) -> list[Trial]:
    with Journal(run_dir / "journal.sqlite", read_only=True) as journal:
        return journal.trials()


# -- 1. one writer per run folder -------------------------------------------------------------------


def _hold_lock(journal: Path) -> subprocess.Popen:
    """A process that holds the run's lock (as a live `bambo run` does) until it is killed."""
    code = f"from bambo.store import RunLock; RunLock({str(journal)!r}).acquire(); print('held', flush=True); input()"
    holder = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_writer_of_a_run_folder_is_refused_and_a_killed_holder_frees_it(tmp_path):
    log = tmp_path / "calls.log"
    path = toy_config(tmp_path, **{"evaluator.options": {"log": str(log)}})
    run_dir, _ = start(path, progress=False)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["budget"] = 12  # a resume has work to do
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    before, calls = _journal(run_dir), log.read_text()
    holder = _hold_lock(run_dir / "journal.sqlite")
    try:
        result = cli.invoke(app, ["resume", str(run_dir), "--threads", "1"])
        assert result.exit_code == 2, result.output
        flat = " ".join(result.output.split())
        assert f"is in use by process {holder.pid}" in flat and "wait for it or kill it" in flat
        with pytest.raises(RunInUseError, match=f"process {holder.pid}"):
            optimize(SyntheticProblem("branin_currin"), "sobol", budget=4, journal=run_dir / "journal.sqlite")
        assert _journal(run_dir) == before and log.read_text() == calls  # nothing touched, nothing evaluated
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    result = cli.invoke(app, ["resume", str(run_dir), "--threads", "1"])  # the kernel released the dead holder's lock
    assert result.exit_code == 0, result.output
    assert len(_journal(run_dir)) == 12


# -- 2. out-of-range metrics --------------------------------------------------------------------------


class ExtremeProblem(SyntheticProblem):
    """BraninCurrin whose metrics are absurd for some points: huge floats, an int too large for a float."""

    def metrics(self, x, fidelity=1.0):
        values = super().metrics(x, fidelity)
        if x[0] < 0.25:
            return {"f0": 1e308, "f1": -1e308}
        if x[0] > 0.75:
            return {"f0": 10**400, "f1": values["f1"]}
        return values


def test_out_of_range_metrics_fail_their_trial_and_the_run_goes_on(tmp_path):
    problem = ExtremeProblem("branin_currin")
    result = optimize(problem, "sobol", budget=12, progress=False, journal=tmp_path / "journal.sqlite")
    trials = _journal(tmp_path)
    assert len(trials) == 12 and all(t.ended for t in trials)
    low = [t for t in trials if t.x[0] < 0.25]
    high = [t for t in trials if t.x[0] > 0.75]
    assert low and high and any(t.status == "completed" for t in trials)
    assert all(t.status == "failed" and "out of range: 1e+308" in t.error for t in low)
    assert all(t.status == "failed" and "does not fit in a float" in t.error for t in high)
    assert torch.isfinite(result.pareto_Y).all() and result.pareto_Y.abs().max() < 1e100
    write_pareto(result, tmp_path / "out")  # the plots draw what is left
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 0


def extreme_metrics(state_dict, **_: object) -> dict[str, float]:
    """An evaluator (``tests.test_integrity:extreme_metrics``) whose first coefficient decides an absurd answer."""
    signal_value = float(state_dict["layers.0.w"][0])
    if signal_value > 0.6:
        return {"a": 1e308, "b": -1e308}
    if signal_value > 0.3:
        return {"a": 10**400, "b": 0.0}
    return {"a": signal_value, "b": -signal_value}


def test_a_run_with_extreme_metrics_ends_with_its_results_written(tmp_path):
    path = toy_config(tmp_path, **{"evaluator.entry_point": "tests.test_integrity:extreme_metrics", "budget": 12})
    result = cli.invoke(app, ["run", str(path), "--threads", "1"])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "run"
    errors = [t.error for t in _journal(run_dir) if t.status == "failed"]
    assert any("out of range" in e for e in errors) and any("does not fit in a float" in e for e in errors)
    assert (run_dir / "pareto.csv").exists() and (run_dir / "pareto.json").exists()
    again = cli.invoke(app, ["resume", str(run_dir), "--threads", "1"])  # and a resume does not crash either
    assert again.exit_code == 0, again.output


def test_a_plot_that_fails_after_the_search_is_a_warning_and_the_results_are_written(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("arange: cannot compute length")

    monkeypatch.setattr("bambo.report.plot_front", broken)
    path = toy_config(tmp_path)
    with pytest.warns(BamboWarning, match="arange: cannot compute length"):
        run_dir, result = start(path, progress=False)
    assert result.n_evaluations == 8
    assert (run_dir / "pareto.csv").exists() and (run_dir / "pareto.json").exists()
    assert not (run_dir / "pareto.png").exists()


# -- 4. experts of another dtype ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int8, torch.int64, torch.uint8, torch.bool, torch.float8_e4m3fn])
def test_an_expert_of_another_dtype_is_refused_and_only_float_widths_are_cast(dtype):
    base = {"w": torch.zeros(3), "b": torch.zeros(2)}
    expert = {"w": torch.ones(3), "b": torch.ones(2).to(dtype)}
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(ModelMismatchError, match=rf"tensor 'b' has dtype {name} in expert 'e' but float32 in the base"):
        TaskVectors(base, [expert], expert_names=["e"])
    for width in (torch.float16, torch.bfloat16, torch.float64):  # float widths: cast to the base's dtype
        tv = TaskVectors(base, [{"w": torch.full((3,), 0.5, dtype=width), "b": torch.ones(2)}])
        assert tv.vectors["w"].dtype == torch.float32 and tv.vectors["w"].tolist() == [[0.5, 0.5, 0.5]]


# -- 5. a first batch that fails entirely for one reason -------------------------------------------------


def test_a_run_whose_first_batch_fails_for_one_reason_stops_and_resume_stops_too(tmp_path):
    log = tmp_path / "calls.log"
    path = toy_config(tmp_path, objectives=[{"name": "acc"}, {"name": "b"}], **{"evaluator.options": {"log": str(log)}})
    result = cli.invoke(app, ["run", str(path), "--threads", "1"])
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.split())
    assert "every evaluation of the first batch (4 trials) failed" in flat and "no metric 'acc'" in flat
    run_dir = tmp_path / "run"
    assert [t.status for t in _journal(run_dir)] == ["failed"] * 4  # kept, not the budget of 8
    calls = log.read_text()
    again = cli.invoke(app, ["resume", str(run_dir), "--threads", "1"])
    assert again.exit_code == 2 and "no metric 'acc'" in " ".join(again.output.split())
    assert log.read_text() == calls and len(_journal(run_dir)) == 4  # nothing evaluated again


def test_first_batch_failures_for_different_reasons_do_not_stop_optimize():
    class Flaky(SyntheticProblem):
        def metrics(self, x, fidelity=1.0):
            if len(self.seen) < 4:
                self.seen.append(x)
                raise RuntimeError(f"failed at {x.tolist()}")  # four different messages
            return super().metrics(x, fidelity)

    problem = Flaky("branin_currin")
    problem.seen = []
    result = optimize(problem, "sobol", budget=8, progress=False)
    assert result.n_evaluations == 8 and len(result.errors) == 4

    class Broken(SyntheticProblem):
        def metrics(self, x, fidelity=1.0):
            raise RuntimeError("the evaluator is broken")

    with pytest.raises(RunAbortedError, match="the evaluator is broken") as caught:
        optimize(Broken("branin_currin"), "sobol", budget=8, progress=False)
    assert caught.value.result.n_evaluations == 4
    going_on = optimize(Broken("branin_currin"), "sobol", budget=8, progress=False, stop_on_first_batch_failure=False)
    assert going_on.n_evaluations == 8


# -- 6. a strategy that stops before the budget -------------------------------------------------------------


def test_a_strategy_that_stops_early_says_so(tmp_path):
    problem = SyntheticProblem("branin_currin")
    with pytest.warns(StoppedEarlyWarning, match="stopped after 9 of 20 evaluations"):
        result = optimize(problem, "grid", budget=20, options={"levels": [0.1, 0.5, 0.9]}, progress=False)
    assert result.info["stopped_early"] == {"evaluated": 9, "budget": 20}
    grid = {"name": "grid", "options": {"levels": [0.0, 0.5, 1.0]}}
    path = toy_config(tmp_path, strategy=grid, budget=20, **{"merge.granularity": "model"})  # 3 ** 2 points
    printed = cli.invoke(app, ["run", str(path), "--threads", "1"])
    assert printed.exit_code == 0, printed.output
    assert "warning: the strategy 'grid' stopped after 9 of 20 evaluations" in " ".join(printed.output.split())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert "stopped_early" not in optimize(problem, "sobol", budget=4, progress=False).info
    assert not [w for w in caught if issubclass(w.category, StoppedEarlyWarning)]  # a full budget: no warning


# -- 7. read-only run folders ---------------------------------------------------------------------------------


def test_a_read_only_journal_creates_nothing_refuses_writes_and_sees_a_live_writer(tmp_path):
    path = tmp_path / "journal.sqlite"
    optimize(SyntheticProblem("branin_currin"), "sobol", budget=4, progress=False, journal=path)
    files = sorted(p.name for p in tmp_path.iterdir())
    with Journal(path, read_only=True) as journal:
        assert len(journal.trials()) == 4
        with pytest.raises(JournalError, match="read-only"):
            journal.add_batch([[0.5, 0.5]])
    assert sorted(p.name for p in tmp_path.iterdir()) == files  # no lock, -wal or -shm file left or made
    with Journal(path) as writer:  # a live writer: its new trial is in the write-ahead log
        writer.add_batch([[0.5, 0.5]])
        with Journal(path, read_only=True) as reader:
            assert len(reader.trials()) == 5
    with pytest.raises(JournalError, match="no journal"):
        Journal(tmp_path / "none.sqlite", read_only=True)


def _read_only_for_children() -> dict:
    """Subprocess arguments under which a 0o555 folder really is read-only.

    Root ignores file modes through its capabilities CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    and CAP_FOWNER (as in CI); the child drops them from its bounding set before it starts,
    so that, as the folders' owner, it gets the 0o555 it is given.
    """
    if os.geteuid() != 0:
        return {}
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def drop_overrides() -> None:
        for capability in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
            if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return {"preexec_fn": drop_overrides}


def test_report_and_export_read_a_read_only_run_folder(tmp_path):
    tmp_path.chmod(0o755)
    path = toy_config(tmp_path)
    run_dir, _ = start(path, progress=False)
    scratch = tmp_path / "scratch"  # where the export may write
    scratch.mkdir()
    for p in tmp_path.rglob("*"):
        if p != scratch:
            p.chmod(0o555 if p.is_dir() else 0o444)
    kwargs = _read_only_for_children()
    try:
        probe = subprocess.run(["touch", str(run_dir / "probe")], capture_output=True, **kwargs)
    except (OSError, subprocess.SubprocessError):
        probe = None
    if probe is None or probe.returncode == 0:
        for p in tmp_path.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
        pytest.skip("cannot make a folder read-only here (root without the capabilities to drop)")
    files = sorted(p.name for p in run_dir.iterdir())
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    try:
        report = subprocess.run(
            [sys.executable, "-m", "bambo.cli", "report", str(run_dir)],
            env=env, capture_output=True, text=True, **kwargs,
        )  # fmt: skip
        exported = subprocess.run(
            [sys.executable, "-m", "bambo.cli", "export", str(run_dir), "--preference", "0.5,0.5",
             "--output", str(scratch / "merged.safetensors")],
            env=env, capture_output=True, text=True, **kwargs,
        )  # fmt: skip
    finally:
        for p in tmp_path.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "Pareto set" in report.stdout and "read-only: plots not written" in " ".join(report.stdout.split())
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert (scratch / "merged.safetensors").stat().st_size > 0
    assert sorted(p.name for p in run_dir.iterdir()) == files  # the folder is as it was


# -- 8. trial ids, duplicates, what the evaluator is told ------------------------------------------------------


def test_pareto_rows_are_named_by_trial_id_once_each(tmp_path):
    meta = RunMeta(["x0"], ["a", "b"], [1.0, 1.0], [[0.0], [1.0]], ref_point=[-1.0, -1.0])
    rows = [([0.2], [1.0, 0.0]), ([0.9], [0.5, -0.1]), ([0.2], [1.0, 0.0]), ([0.5], [0.0, 1.0])]
    trials = [Trial(i + 10, 0, x, "completed", {}, y, None, 0.0, 1.0) for i, (x, y) in enumerate(rows)]
    result = build_result(trials, meta)
    console = Console(record=True, width=120)
    console.print(pareto_table(result))
    text = console.export_text()
    assert "10 = 12" in text and text.count("0.2000") == 1  # trials 10 and 12: the same point, one row
    assert " 13 " in text and " 11 " not in text  # 11 is dominated
    write_pareto(result, tmp_path)
    lines = (tmp_path / "pareto.csv").read_text().splitlines()
    assert lines[0].split(",")[:2] == ["trial_id", "same_as"]
    assert [line.split(",")[:2] for line in lines[1:]] == [["10", "12"], ["13", ""]]
    payload = json.loads((tmp_path / "pareto.json").read_text())
    assert [p["trial_id"] for p in payload["pareto"]] == [10, 12, 13]


def test_the_evaluator_is_told_the_trial_id_and_x_if_it_asks(tmp_path):
    paths = write_toy_models(tmp_path)
    calls = []

    def evaluator(state_dict, trial_id, x):
        calls.append((trial_id, x))
        return {"a": float(state_dict["layers.0.w"][0]), "b": -float(state_dict["layers.0.w"][0])}

    problem = MergeProblem.from_models(
        paths["base"], {"a": paths["a"], "b": paths["b"]}, evaluator, [Objective(name="a"), Objective(name="b")],
        granularity="model",
    )  # fmt: skip
    result = optimize(problem, "sobol", budget=4, progress=False)
    assert not result.errors
    assert calls == [(i, x) for i, x in zip(result.trial_ids, result.X.tolist(), strict=True)]
    assert calls[0][0] == 0 and isinstance(calls[0][1], list)
    calls.clear()  # under a time limit the evaluation runs in a worker thread: the id goes with it
    experiment = Experiment(problem, get_strategy("sobol", problem, seed=1), executor=LocalExecutor(timeout_s=60))
    timed = experiment.run(budget=2, batch_size=2)
    assert not timed.errors and [c[0] for c in calls] == [0, 1]


def test_building_the_fused_kernel_is_announced_before_it_starts(tmp_path, monkeypatch, caplog):
    from botorch.acquisition.multi_objective import logei

    from bambo import extensions

    monkeypatch.setattr(logei, "_load_attempted", False)
    monkeypatch.setattr(logei, "_C", None)
    monkeypatch.setattr(extensions, "_ready", None)
    announced = []

    def build(folder, deadline):
        announced.append([r.getMessage() for r in caplog.records])
        return "timeout"

    monkeypatch.setattr(extensions, "_build_in_child", build)
    with caplog.at_level("WARNING", logger="bambo.extensions"):
        assert extensions.prepare_fused_kernel(timeout_s=5.0, cache_dir=tmp_path) is False
    assert any("compiling BoTorch's fused kernel (once, ~" in m for m in announced[0])


def test_bambo_journals_its_fit_with_each_batch_and_an_older_journal_without_states_still_resumes(tmp_path):
    """BAMBO's warm-started fits resume exactly from the journaled hyperparameters; a journal
    written before states were kept (no such table) is read and resumed with cold fits."""
    import sqlite3

    problem = SyntheticProblem("branin_currin")
    options = {"n_initial": 4, "num_restarts": 2, "raw_samples": 32, "mc_samples": 16, "maxiter": 30}
    path = tmp_path / "journal.sqlite"
    with Journal(path) as journal:
        Experiment(problem, get_strategy("bambo", problem, seed=3, **options), journal).run(12, batch_size=4)
        states = journal.batch_states()
    assert sorted(states) == [1, 2]  # the model-based batches; the warm start has nothing to keep
    assert all(any(k.endswith("raw_lengthscale") for k in s["hyperparameters"]) for s in states.values())
    legacy = tmp_path / "legacy.sqlite"
    with Journal(legacy) as journal:
        Experiment(problem, get_strategy("bambo", problem, seed=3, **options), journal).run(8, batch_size=4)
    conn = sqlite3.connect(legacy)
    conn.execute("DROP TABLE batch_states")
    conn.commit()
    conn.close()
    with Journal(legacy, read_only=True) as journal:
        assert journal.batch_states() == {} and len(journal.trials()) == 8
    with Journal(legacy) as journal:  # resumes: cold fit for the next batch, then states again
        result = Experiment(problem, get_strategy("bambo", problem, seed=3, **options), journal).run(12, batch_size=4)
        assert result.n_evaluations == 12 and sorted(journal.batch_states()) == [2]
