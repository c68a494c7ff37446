"""Smoke test of the surrogate benchmark and checks of its scoring."""

import math

import pytest
import torch
from typer.testing import CliRunner

from bambo.benchmarks import surrogate_bench as sb
from bambo.cli import app


def test_score_on_known_predictions():
    truth = torch.tensor([[0.0], [1.0], [2.0], [3.0]], dtype=torch.float64)
    exact = sb.score(truth.clone(), torch.full_like(truth, 0.01), truth)
    assert exact["r2"] == pytest.approx(1.0) and exact["rmse"] == pytest.approx(0.0) and exact["coverage"] == 1.0
    assert exact["nlpd"] == pytest.approx(0.5 * math.log(2 * math.pi * 0.01))
    mean_only = sb.score(torch.full_like(truth, 1.5), torch.full_like(truth, 1e-6), truth)
    assert mean_only["r2"] == pytest.approx(0.0) and mean_only["coverage"] == 0.0


def test_every_applicable_surrogate_is_scored():
    problems = [sb.sphere_family(), sb.synthetic_landscape("branin_currin")]
    results = sb.run(problems, sizes=(12,), seeds=(0,), n_test=30)
    family = {s for p, _, s in results if p.startswith("sphere-family")}
    assert family == {"quadratic", "quadratic-softplus", "gp", "quadratic-mean-gp", "parametric-task-gp"}
    branin = {s for p, _, s in results if p == "branin_currin"}
    assert branin == {"quadratic", "gp", "quadratic-mean-gp"}  # unbounded outputs: no links; no task parameter
    for scores in results.values():
        assert not scores.failures and len(scores.r2) == 1 and math.isfinite(scores.r2[0])
    table = sb.markdown_table(results)
    assert table.count("\n") == len(results) + 1


def test_bench_cli_quick_suite_writes_report_and_plot(tmp_path, monkeypatch):
    monkeypatch.setitem(sb.SUITES, "quick", {"sizes": (10,), "seeds": (0,), "n_test": 20})
    result = CliRunner().invoke(app, ["bench", "surrogates", "--suite", "quick", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "surrogates_quick.md").read_text()
    assert "| digits-2 model | 10 | quadratic |" in report and (tmp_path / "surrogates_quick.png").stat().st_size > 0
    bad = CliRunner().invoke(app, ["bench", "surrogates", "--suite", "huge"])
    assert bad.exit_code == 2 and "unknown suite 'huge'" in bad.output
