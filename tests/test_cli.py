"""The command line: help texts and the demo's outputs."""

import json

import pytest
from typer.testing import CliRunner

from bambo.cli import app

runner = CliRunner()


@pytest.mark.parametrize("args", [["--help"], ["demo", "--help"], ["digits", "--help"]])
def test_help(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_demo_writes_the_three_files(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["demo", "--budget", "12", "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "Pareto set" in result.output
    for name in ("pareto.csv", "pareto.json", "pareto.png"):
        assert (out / name).stat().st_size > 0
    payload = json.loads((out / "pareto.json").read_text())
    assert len(payload["evaluations"]) == 12
    assert [o["name"] for o in payload["objectives"]] == ["acc/inverted", "acc/noisy"]
    header = (out / "pareto.csv").read_text().splitlines()[0].split(",")
    assert header == ["model/inverted", "model/noisy", "acc/inverted", "acc/noisy"]


def test_demo_reports_bad_input_clearly(tmp_path):
    result = runner.invoke(
        app, ["demo", "--method", "tie", "--budget", "2", "--out", str(tmp_path), "--cache-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "unknown merge method 'tie'" in result.output


def test_digits_report_shows_base_experts_and_merges(tmp_path):
    result = runner.invoke(app, ["digits", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for row in ("base", "noisy", "TA all c=0.3", "task vector L1 ratio"):
        assert row in result.output
