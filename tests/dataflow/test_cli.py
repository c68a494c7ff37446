"""A data-flow run from a config: ``bambo run``, ``resume``, ``report`` and ``export``, and bad paths refused."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bambo.cli import app
from bambo.dataflow import LayerPath
from bambo.store import JOURNAL

runner = CliRunner()


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("digits-cache")


def write_config(folder: Path, cache: Path, **dataflow) -> Path:
    config = {
        "models": {"benchmark": "digits", "tasks": ["inverted", "noisy"], "cache_dir": str(cache)},
        "merge": {"kind": "dataflow", "dataflow": {"repeats": 1, **dataflow}},
        "strategy": {"name": "bambo", "options": {"n_initial": 6}},
        "budget": 8,
        "batch_size": 2,
        "output": "run",
    }
    path = folder / "dfs.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_dataflow_run_reports_resumes_and_exports_its_path(tmp_path, cache):
    config = write_config(tmp_path, cache, repeats=2, paths=["inverted:0 inverted:1 noisy:2x1.3 inverted:5"])
    result = runner.invoke(app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    payload = json.loads((run / "pareto.json").read_text())
    assert [o["name"] for o in payload["objectives"]] == ["acc/inverted", "acc/noisy", "hops"]
    assert len(payload["evaluations"]) == 8
    first = payload["evaluations"][0]
    assert first["objectives"][2] == 4  # the start path is evaluated first (hops, its depth)
    assert runner.invoke(app, ["resume", str(run)]).exit_code == 0
    assert len(json.loads((run / "pareto.json").read_text())["evaluations"]) == 8  # nothing evaluated again
    assert runner.invoke(app, ["report", str(run)]).exit_code == 0
    exported = runner.invoke(app, ["export", str(run), "--preference", "0.45,0.45,0.1"])
    assert exported.exit_code == 0, exported.output
    record = json.loads((run / "layer_path.json").read_text())
    path = LayerPath.parse(record["path"])
    assert record["frame"] == "inverted" and len(record["hops"]) == len(path)
    assert {hop.source for hop in path.hops} <= {"inverted", "noisy"}


@pytest.mark.parametrize(
    ("dataflow", "message"),
    [
        ({"paths": ["inverted:0 tilted:1"]}, "hop 1: unknown source 'tilted'"),
        ({"paths": ["inverted:0 noisy:6"]}, "hop 1: layer 6 is out of range for source 'noisy'"),
        ({"paths": [""]}, "the path is empty"),
        ({"paths": ["inverted:0 noisy"]}, "hop 1 'noisy' is not source:layer"),
        ({"sources": ["inverted", "rotated"]}, "unknown model(s) ['rotated']"),
        ({"paths": ["noisy:0"]}, "does not run pinned slot 0"),
        ({"paths": ["inverted:0 noisy:2 inverted:5"]}, "hop 2 (inverted:5) has no slot left"),
    ],
)
def test_bad_paths_and_sources_exit_2_before_any_evaluation(tmp_path, cache, dataflow, message):
    config = write_config(tmp_path, cache, **dataflow)
    result = runner.invoke(app, ["run", str(config)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "run" / JOURNAL).exists()


def test_a_merge_source_is_the_parameter_space_merge_at_merge_point(tmp_path, cache):
    import torch

    from bambo.config import RunConfig
    from bambo.errors import ConfigError
    from bambo.runner import build_merge_problem, build_problem

    config = RunConfig.from_yaml(write_config(tmp_path, cache, sources=["merge", "inverted"], merge_point=[0.5] * 10))
    problem = build_problem(config, tmp_path)
    assert problem.space.sources == ["merge", "inverted"] and problem.frame == "merge"
    merged = build_merge_problem(config, tmp_path).merge(torch.full((10,), 0.5, dtype=torch.float64))
    state = problem.sources["merge"].state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in merged.items())
    short = RunConfig.from_yaml(write_config(tmp_path, cache, sources=["merge"], merge_point=[0.5] * 3))
    with pytest.raises(ConfigError, match="merge_point has 3 values; the merge problem has 10"):
        build_problem(short, tmp_path)
    with pytest.raises(ConfigError, match="a `merge` source and merge_point go together"):
        write_config(tmp_path, cache, sources=["merge"]) and RunConfig.from_yaml(tmp_path / "dfs.yaml")
