"""The command line: help texts and the demo's outputs."""

import json

import pytest
from typer.testing import CliRunner

from bambo.cli import app

runner = CliRunner()


@pytest.mark.parametrize("args", [["--help"], ["demo", "--help"], ["describe", "--help"], ["export", "--help"]])
def test_help(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_demo_writes_a_run_that_report_and_export_read(tmp_path):
    out = tmp_path / "run"
    args = ["demo", "--strategy", "sobol", "--granularity", "model", "--budget", "12", "--output", str(out)]
    result = runner.invoke(app, [*args, "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "Pareto set" in result.output
    for name in ("pareto.csv", "pareto.json", "pareto.png"):
        assert (out / name).stat().st_size > 0
    payload = json.loads((out / "pareto.json").read_text())
    assert len(payload["evaluations"]) == 12
    assert [o["name"] for o in payload["objectives"]] == ["acc/inverted", "acc/noisy"]
    lines = (out / "pareto.csv").read_text().splitlines()
    assert lines[0].split(",") == ["trial_id", "same_as", "model/inverted", "model/noisy", "acc/inverted", "acc/noisy"]
    assert len(lines) >= 3  # at least two Pareto points: the experts trade off
    assert len(payload["pareto"]) == len(lines) - 1
    assert payload["ref_point"] == [0.1, 0.1] and payload["hypervolume_history"][-1] > 0
    report = runner.invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    assert (out / "front.png").stat().st_size > 0 and (out / "hypervolume.png").stat().st_size > 0
    export = runner.invoke(app, ["export", str(out), "--preference", "0.5,0.5"])
    assert export.exit_code == 0 and (out / "merged.safetensors").exists(), export.output
    again = runner.invoke(app, [*args, "--cache-dir", str(tmp_path / "cache")])  # the demo replaces its run
    assert again.exit_code == 0 and len(json.loads((out / "pareto.json").read_text())["evaluations"]) == 12


def test_demo_runs_bambo_block_wise_by_default(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["demo", "--budget", "12", "--output", str(out), "--cache-dir", str(tmp_path / "cache")]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "pareto.json").read_text())
    merge = payload["metadata"]["config"]["merge"]
    assert payload["strategy"] == "bambo" and merge["granularity"] == "block" and merge["partitioner"] == "hybrid"
    assert len(payload["parameter_names"]) == 10  # (3 blocks + embed + head) x 2 experts
    assert len(payload["info"]["timings"]) == 1  # 8 warm-start points, then one batch of 4
    assert "model-based batches" in result.output


@pytest.mark.parametrize("strategy", ["map", "nested-map"])
def test_demo_runs_the_map_family_at_model_level(tmp_path, strategy):
    out = tmp_path / "run"
    args = ["demo", "--strategy", strategy, "--budget", "30", "--output", str(out), "--cache-dir", str(tmp_path / "c")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "pareto.json").read_text())
    assert payload["parameter_names"] == ["model/inverted", "model/noisy"]
    if strategy == "map":
        assert len(payload["predicted_front"]) > 10 and len(payload["evaluations"]) == 20
    else:
        assert "recommended_x" in payload["info"]


def test_demo_reports_bad_input_clearly(tmp_path):
    result = runner.invoke(
        app, ["demo", "--method", "tie", "--budget", "2", "--output", str(tmp_path), "--cache-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "unknown merge method 'tie'" in result.output
    result = runner.invoke(app, ["demo", "--strategy", "bo", "--output", str(tmp_path), "--cache-dir", str(tmp_path)])
    assert result.exit_code == 2 and "unknown strategy 'bo'; valid: bambo" in result.output


def test_describe_shows_base_experts_and_merges(tmp_path):
    result = runner.invoke(app, ["describe", "digits", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for row in ("base", "noisy", "TA all c=0.3", "task vector L1 ratio"):
        assert row in result.output
    unknown = runner.invoke(app, ["describe", "digitz"])
    assert unknown.exit_code == 2
    assert "unknown benchmark 'digitz'; valid names: arithmetic, digits, text" in unknown.output


def test_partition_on_hf_folders(tmp_path):
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    base = BertModel(
        BertConfig(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32, vocab_size=60)
    )
    base.save_pretrained(tmp_path / "base")
    for i in range(2):
        expert = BertModel(base.config)
        expert.load_state_dict(
            {
                k: v + 0.01 * (k.count("layer.3") * 4 + 1) * torch.randn_like(v) if v.is_floating_point() else v
                for k, v in base.state_dict().items()
            }
        )
        expert.save_pretrained(tmp_path / f"expert{i}")
    out = tmp_path / "fig" / "partition.png"
    args = [
        "partition",
        str(tmp_path / "base"),
        str(tmp_path / "expert0"),
        str(tmp_path / "expert1"),
        "-k",
        "2",
        "--output",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "hybrid (chosen)" in result.output and out.stat().st_size > 0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["blocks"]["variance"] == [[0, 2], [3, 3]]  # the heavily changed last layer stands alone


def test_partition_errors(tmp_path):
    result = runner.invoke(app, ["partition", "--benchmark", "digits", "-k", "9", "--output", str(tmp_path / "p.png")])
    assert result.exit_code == 2 and "K=9 exceeds the number of layers L=6" in result.output
    result = runner.invoke(app, ["partition", str(tmp_path)])
    assert result.exit_code == 2 and "at least one expert" in result.output


def test_the_cli_starts_without_torch_and_rejects_a_missing_run_folder_before_importing_it(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from typer.testing import CliRunner; from bambo.cli import app; "
        f"r = CliRunner().invoke(app, ['export', {str(tmp_path / 'nope')!r}, '--preference', '1,1']); "
        "heavy = ('torch', 'botorch', 'ax', 'matplotlib', 'transformers'); "
        "print(r.exit_code, sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")[
        -2
    ]
    assert out == "2 []", out
