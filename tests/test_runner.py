"""``bambo run / resume / report``: configs, the journal, crash safety and failing evaluators."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from bambo.cli import app
from bambo.config import RunConfig
from bambo.errors import ConfigError
from bambo.runner import journal_result, resume, start
from bambo.store import Journal
from tests.run_helpers import kill_run_when_held, write_toy_models

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
FAST_BAMBO = {"n_initial": 4, "num_restarts": 2, "raw_samples": 32, "mc_samples": 16, "maxiter": 30}


def toy_config(tmp_path: Path, **overrides) -> Path:
    paths = write_toy_models(tmp_path / "models")
    config = {
        "models": {
            "base": "models/base.safetensors",
            "experts": {"a": "models/a.safetensors", "b": "models/b.safetensors"},
        },
        "merge": {"method": "task_arithmetic", "granularity": "block", "blocks": 2, "partitioner": "uniform"},
        "evaluator": {"entry_point": "tests.run_helpers:toy_metrics", "options": {}},
        "objectives": [{"name": "a"}, {"name": "b"}],
        "strategy": {"name": "sobol"},
        "budget": 8,
        "batch_size": 4,
        "output": "run",
    }
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        if field:
            config[section][field] = value
        else:
            config[section] = value
    assert paths["base"].exists()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_config_round_trips_through_yaml(tmp_path):
    path = toy_config(tmp_path)
    config = RunConfig.from_yaml(path)
    again = RunConfig.from_yaml(_write(tmp_path / "again.yaml", config.to_yaml()))
    assert again == config


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"budgett": 3}, "budgett: Extra inputs are not permitted"),
        ({"budget": "many"}, "budget: Input should be a valid integer"),
        ({"merge.bounds": [1.0, 0.0]}, "merge: bounds: lower bound must be below the upper bound"),
        ({"merge.method": "tie"}, "unknown merge method 'tie'; valid: breadcrumbs"),
        ({"strategy": {"name": "bo"}}, "unknown strategy 'bo'; valid: bambo"),
        ({"models": {"base": "models/nope.safetensors", "experts": {"a": "models/a.safetensors"}}}, "nope.safetensors"),
        ({"evaluator.entry_point": "tests.run_helpers:nothing"}, "has no function 'nothing'"),
        ({"preferences": {"rho": 0.1}}, "preferences: Extra inputs are not permitted"),
        ({"merge.dataflow": {"repeats": 2}}, "merge.dataflow only applies to merge.kind: dataflow"),
        ({"execution": {"workers": 2}}, "workers, address, resources_per_trial and retries apply to backend: ray"),
        ({"execution": {"backend": "dask"}}, "execution: backend: Input should be 'local' or 'ray'"),
        ({"execution": {"mode": "parallel"}}, "execution: mode: Input should be 'batch' or 'async'"),
        (
            {"execution": {"mode": "async"}, "strategy": {"name": "nsga2"}},
            "execution.mode async needs a strategy that proposes with candidates pending (bambo, sobol, random); "
            "'nsga2' learns whole batches",
        ),
        ({"merge.kind": "dataflow"}, "a data-flow search runs models, but these models have no architecture"),
        ({"merge.kind": "dataflow", "merge.dataflow": {"scale_bounds": [1.1, 2]}}, "must be positive and contain 1"),
        ({"strategy": {"name": "sobol", "options": {"preferences": {}}}}, "strategy 'sobol'"),
        (
            {"strategy": {"name": "pmto", "options": {"preferences": {"ideal": [1.0, 1.0]}}}},
            "give both ideal and nadir, or neither",
        ),
    ],
)
def test_malformed_configs_fail_before_any_evaluation(tmp_path, override, message):
    path = toy_config(tmp_path, **override)
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert "".join(message.split()) in "".join(result.output.split()), result.output  # rich wraps lines
    assert not (tmp_path / "run" / "journal.sqlite").exists()


def test_experts_whose_shapes_differ_from_the_base_are_refused(tmp_path):
    path = toy_config(tmp_path)
    write_toy_models(tmp_path / "models", expert_shape=(4,))
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2 and "layers.2.w" in "".join(result.output.split())
    assert not (tmp_path / "run" / "journal.sqlite").exists()


def test_run_then_resume_a_finished_run_evaluates_nothing_again(tmp_path):
    log = tmp_path / "calls.log"
    path = toy_config(tmp_path, **{"evaluator.options": {"log": str(log)}})
    run_dir, result = start(path, progress=False)
    assert result.n_evaluations == 8 and (run_dir / "pareto.json").exists()
    calls = log.read_text().count("start ")
    again = resume(run_dir, progress=False)
    assert log.read_text().count("start ") == calls == 8
    assert again.X.tolist() == result.X.tolist()
    assert journal_result(run_dir).Y.tolist() == result.Y.tolist()
    with pytest.raises(ConfigError, match="bambo resume"):
        start(path, progress=False)


def test_failing_nan_and_hanging_evaluators_leave_failed_trials(tmp_path):
    options = {"fail_above": 0.85, "nan_above": 0.6, "hang_above": 1.0}
    path = toy_config(
        tmp_path, **{"evaluator.options": options, "evaluator.timeout_s": 0.5, "merge.bounds": [0.0, 1.2], "budget": 16}
    )
    run_dir, result = start(path, progress=False)
    with Journal(run_dir / "journal.sqlite") as journal:
        trials = journal.trials()
    assert len(trials) == 16 and all(t.status in ("completed", "failed") for t in trials)
    errors = [t.error for t in trials if t.status == "failed"]
    assert any("timed out after 0.5 s" in e for e in errors)
    assert any("crashed" in e for e in errors)
    assert any("not finite" in e for e in errors)
    assert sum(t.status == "completed" for t in trials) >= 3


def _completed(run_dir: Path) -> dict[int, tuple]:
    journal_path = run_dir / "journal.sqlite"
    if not journal_path.exists():
        return {}
    with Journal(journal_path) as journal:
        return {t.id: (t.x, t.metrics) for t in journal.trials() if t.status == "completed"}


def test_a_killed_run_resumes_without_losing_or_repeating_evaluations(tmp_path):
    # the evaluator holds the 8th evaluation until `release` exists: the run is killed while it
    # is held, so the kill point is fixed by events (log lines), not by a clock
    log, release, hold_after = tmp_path / "calls.log", tmp_path / "release", 7
    path = toy_config(
        tmp_path,
        **{
            "evaluator.options": {"log": str(log), "hold_after": hold_after, "release": str(release)},
            "strategy": {"name": "bambo", "options": FAST_BAMBO},
            "budget": 16,
        },
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    kill_run_when_held(path, log, env, REPO)
    run_dir = tmp_path / "run"
    release.touch()
    before = _completed(run_dir)
    assert hold_after <= len(before) < 16
    result = runner.invoke(app, ["resume", str(run_dir), "--threads", "1"])
    assert result.exit_code == 0, result.output
    with Journal(run_dir / "journal.sqlite") as journal:
        trials = journal.trials()
    assert [t.id for t in trials] == list(range(16)) and all(t.status == "completed" for t in trials)
    after = {t.id: (t.x, t.metrics) for t in trials}
    assert all(after[i] == before[i] for i in before)  # nothing completed was lost or changed
    starts = [line.split(" ", 1)[1] for line in log.read_text().splitlines() if line.startswith("start ")]
    ends = [line.split(" ", 1)[1] for line in log.read_text().splitlines() if line.startswith("end ")]
    assert len(set(ends)) == len(ends) == 16 + (len(ends) - 16)  # each completed model evaluated to the end once
    assert len(ends) == 16 + sum(ends.count(s) - 1 for s in set(ends))
    assert len(starts) - len(set(starts)) <= 1  # at most the trial running at the kill started twice
    payload = json.loads((run_dir / "pareto.json").read_text())
    assert len(payload["evaluations"]) == 16


def test_report_reads_the_journal_only(tmp_path):
    path = toy_config(tmp_path)
    run_dir, _ = start(path, progress=False)
    for model in (tmp_path / "models").iterdir():
        model.unlink()  # report must not need the models
    result = runner.invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "Pareto set" in result.output
    assert (run_dir / "front.png").stat().st_size > 0 and (run_dir / "hypervolume.png").stat().st_size > 0
    result = runner.invoke(app, ["report", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "isnotarunfolder" in "".join(result.output.split())


def test_a_halving_run_from_a_config_journals_both_fidelities_and_reports_by_cost(tmp_path):
    log = tmp_path / "calls.log"
    path = toy_config(
        tmp_path,
        evaluator={"entry_point": "tests.run_helpers:toy_metrics_at", "options": {"log": str(log)}},
        halving={"fidelity": 0.5, "factor": 2},
    )
    run_dir, result = start(path, progress=False)
    calls = log.read_text().splitlines()
    assert "fidelity 0.5" in calls and "fidelity 1.0" in calls
    with Journal(run_dir / "journal.sqlite", read_only=True) as journal:
        trials = journal.trials()
    assert sum(t.cost for t in trials) >= 8 and {t.fidelity for t in trials} == {0.5, 1.0}
    assert result.n_evaluations == sum(t.fidelity == 1.0 for t in trials)
    assert resume(run_dir, progress=False).X.tolist() == result.X.tolist()
    assert log.read_text().splitlines() == calls  # a finished run evaluates nothing again
    shown = runner.invoke(app, ["report", str(run_dir)])
    assert shown.exit_code == 0 and "low-fidelity evaluations" in shown.output
    assert (run_dir / "hypervolume.png").stat().st_size > 0


def test_halving_with_an_evaluator_that_takes_no_fidelity_is_refused_before_evaluating(tmp_path):
    log = tmp_path / "calls.log"
    path = toy_config(tmp_path, halving={"fidelity": 0.5}, **{"evaluator.options": {"log": str(log)}})
    with pytest.raises(ConfigError, match="evaluates in full only.*'fidelity' argument"):
        start(path, progress=False)
    assert not log.exists()
    data = {**yaml.safe_load(path.read_text()), "strategy": {"name": "bambo"}, "execution": {"mode": "async"}}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="async cannot run halving"):
        RunConfig.from_yaml(path)


def test_export_writes_the_chosen_models_weights_and_a_mergekit_config(tmp_path):
    from safetensors.torch import load_file

    from bambo.runner import build_problem

    path = toy_config(tmp_path)
    run_dir, result = start(path, progress=False)
    out = runner.invoke(app, ["export", str(run_dir), "--preference", "1,0", "--rule", "weighted-sum"])
    assert out.exit_code == 0, out.output
    row = int(result.Y_max[:, 0].argmax())  # all weight on the first objective: its best trial
    problem = build_problem(RunConfig.from_yaml(run_dir / "config.yaml"), run_dir)
    expected = problem.merge(result.X[row])
    written = load_file(run_dir / "merged.safetensors")
    assert set(written) == set(expected) and all((written[k] == expected[k]).all() for k in expected)
    out = runner.invoke(app, ["export", str(run_dir), "--preference", "0.5,0.5", "--format", "mergekit"])
    assert out.exit_code == 0, out.output
    config = yaml.safe_load((run_dir / "mergekit.yml").read_text())
    assert config["merge_method"] == "task_arithmetic" and len(config["slices"]) == 2  # 2 blocks of layers
    bad = runner.invoke(app, ["export", str(run_dir), "--preference", "1,x"])
    assert bad.exit_code == 2 and "comma-separated numbers" in bad.output


def test_a_run_exports_as_an_ax_experiment(tmp_path):
    from bambo.ax.export import load_ax_export

    path = toy_config(tmp_path, **{"evaluator.options": {"fail_above": 0.9}})
    run_dir, result = start(path, progress=False)
    out = runner.invoke(app, ["export", str(run_dir), "--format", "ax"])
    assert out.exit_code == 0, out.output
    assert (run_dir / "ax_experiment.json").exists()
    assert load_ax_export(run_dir / "ax_experiment.json") is not None
    missing = runner.invoke(app, ["export", str(run_dir)])
    assert missing.exit_code == 2 and "--preference is required" in missing.output


PMTO_FAST = {"n_initial_tasks": 3, "samples_per_task": 2, "population": 10, "generations": 5, "raw_samples": 32}


def test_a_pmto_run_answers_new_preferences_from_its_task_model(tmp_path):
    from safetensors.torch import load_file

    from bambo.parametric import preference_to_theta
    from bambo.runner import build_problem
    from bambo.surrogates.task_model import TaskModel

    path = toy_config(tmp_path, strategy={"name": "pmto", "options": PMTO_FAST}, budget=13, batch_size=4)
    run_dir, result = start(path, progress=False)
    config = RunConfig.from_yaml(run_dir / "config.yaml")
    # ideal and nadir were measured from the base and each expert alone, and kept for resume and export
    preferences = config.strategy.options["preferences"]
    assert len(preferences["ideal"]) == 2
    assert all(i > n for i, n in zip(preferences["ideal"], preferences["nadir"], strict=True))
    assert result.objective_names == ["chebyshev", "a", "b"] and result.n_evaluations == 13
    assert result.parameter_names[-1] == "pref_a" and (run_dir / "task_model.pt").exists()
    assert journal_result(run_dir).front_columns == [1, 2]
    out = runner.invoke(app, ["export", str(run_dir), "--preference", "0.7,0.3"])
    assert out.exit_code == 0, out.output
    assert "no evaluation" in out.output and "task_model.pt" in out.output
    x, _ = TaskModel.load(run_dir / "task_model.pt").predict(preference_to_theta([0.7, 0.3]))
    expected = build_problem(config, run_dir).merge(x[0])
    written = load_file(run_dir / "merged.safetensors")
    assert all(torch.equal(written[k], expected[k]) for k in expected)
    assert journal_result(run_dir).n_evaluations == 13  # answering evaluated nothing
    bad = runner.invoke(app, ["export", str(run_dir), "--preference", "0.2,0.3,0.5"])
    assert bad.exit_code == 2 and "3 weights for 2 objectives" in bad.output


def test_a_resumed_pmto_run_continues_exactly_as_an_uninterrupted_one(tmp_path):
    whole = toy_config(tmp_path / "whole", strategy={"name": "pmto", "options": PMTO_FAST}, budget=17, batch_size=3)
    _, uninterrupted = start(whole, progress=False)
    # stop after 8 evaluations: inside the first iteration (6 initial rows, then 4 pool tasks in batches of 3)
    part = toy_config(tmp_path / "part", strategy={"name": "pmto", "options": PMTO_FAST}, budget=8, batch_size=3)
    run_dir, _ = start(part, progress=False)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["budget"] = 17
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    resumed = resume(run_dir, progress=False)
    torch.testing.assert_close(resumed.X, uninterrupted.X)


def test_a_pmto_run_too_short_for_a_task_model_still_writes_its_results(tmp_path):
    path = toy_config(tmp_path, strategy={"name": "pmto", "options": PMTO_FAST}, budget=2, batch_size=2)
    run_dir, result = start(path, progress=False)
    assert result.n_evaluations == 2 and (run_dir / "pareto.csv").exists()
    assert not (run_dir / "task_model.pt").exists()
    out = runner.invoke(app, ["export", str(run_dir), "--preference", "0.5,0.5"])
    assert out.exit_code == 2 and "fewer than two preferences" in out.output


@pytest.mark.parametrize(
    ("fmt", "kind", "message"),
    [
        ("hf", "file", "is a file"),
        ("safetensors", "folder", "is a folder"),
        ("mergekit", "folder", "is a folder"),
        ("ax", "folder", "is a folder"),
        ("safetensors", "read-only file", "read-only"),
        ("hf", "read-only folder", "read-only"),
        ("safetensors", "in a read-only folder", "read-only"),
        ("safetensors", "the journal", "run's own"),
        ("hf", "the run folder", "run's own"),
        ("hf", "a folder holding the run", "run's own"),
    ],
)
def test_export_to_an_unusable_path_is_one_clear_error(tmp_path, monkeypatch, fmt, kind, message):
    path = toy_config(tmp_path)
    run_dir, _ = start(path, progress=False)
    target = {
        "the journal": run_dir / "journal.sqlite",
        "the run folder": run_dir,
        "a folder holding the run": tmp_path,
    }.get(kind, tmp_path / "out" / "target")
    if kind == "in a read-only folder":
        target.parent.mkdir(parents=True)
        target.parent.chmod(0o555)
        target = target.parent / "merged.safetensors"
    elif kind.endswith("file"):
        target.parent.mkdir(parents=True)
        target.write_text("not a model")
    elif kind.endswith("folder") and "run" not in kind:
        target.mkdir(parents=True)
    if kind.startswith("read-only"):
        target.chmod(0o555 if target.is_dir() else 0o444)
    journal_before = (run_dir / "journal.sqlite").read_bytes()

    def no_merge_work(*args, **kwargs):
        raise AssertionError("the output path must be checked before any model is loaded")

    monkeypatch.setattr("bambo.runner.build_problem", no_merge_work)
    try:
        args = ["export", str(run_dir), "--format", fmt, "--output", str(target)]
        result = runner.invoke(app, args + ([] if fmt == "ax" else ["--preference", "0.5,0.5"]))
    finally:
        for p in (target, target.parent):
            if p.exists() and p != tmp_path and p != run_dir:
                p.chmod(0o755 if p.is_dir() else 0o644)
    assert result.exit_code == 2, result.output
    output = "".join(result.output.split())  # rich wraps long paths
    assert message.replace(" ", "") in output and target.name in output, result.output
    assert (run_dir / "journal.sqlite").read_bytes() == journal_before


def test_the_ray_backend_without_ray_installed_names_the_extra_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError, installed or not
    path = toy_config(tmp_path, execution={"backend": "ray", "workers": 2})
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert "pip install 'bambo[ray]'" in " ".join(result.output.split())
    assert not (tmp_path / "run" / "journal.sqlite").exists()


def test_execution_flags_override_the_config_and_are_checked(tmp_path, monkeypatch):
    path = toy_config(tmp_path)
    local = runner.invoke(app, ["run", str(path), "--workers", "2"])
    assert local.exit_code == 2 and "apply to backend: ray" in " ".join(local.output.split())
    monkeypatch.setitem(sys.modules, "ray", None)
    ray = runner.invoke(app, ["run", str(path), "--backend", "ray", "--workers", "2"])
    assert ray.exit_code == 2 and "pip install 'bambo[ray]'" in " ".join(ray.output.split())
    assert not (tmp_path / "run" / "journal.sqlite").exists()
    done = runner.invoke(app, ["run", str(path)])
    assert done.exit_code == 0, done.output
    again = runner.invoke(app, ["resume", str(tmp_path / "run"), "--backend", "ray"])
    assert again.exit_code == 2 and "pip install 'bambo[ray]'" in " ".join(again.output.split())


def test_mode_async_from_the_command_line_proposes_one_trial_per_freed_worker(tmp_path):
    path = toy_config(tmp_path, strategy={"name": "nsga2"})
    refused = runner.invoke(app, ["run", str(path), "--mode", "async"])
    assert refused.exit_code == 2 and "'nsga2' learns whole batches" in " ".join(refused.output.split())
    assert not (tmp_path / "run" / "journal.sqlite").exists()
    path = toy_config(tmp_path, strategy={"name": "bambo", "options": FAST_BAMBO}, budget=7)
    done = runner.invoke(app, ["run", str(path), "--mode", "async"])
    assert done.exit_code == 0, done.output
    with Journal(tmp_path / "run" / "journal.sqlite") as journal:
        assert [len(b) for b in journal.batches()] == [1] * 7  # the local executor has one worker
        assert all(t.status == "completed" for t in journal.trials())
