"""The example configs parse, and the digits one runs end to end at a small budget."""

from pathlib import Path

import pytest

from bambo.config import RunConfig
from bambo.runner import start

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize(
    "name",
    [
        "digits.yaml",
        "digits_preferences.yaml",
        "digits_halving.yaml",
        "minilm.yaml",
        "your_models.yaml",
        "arithmetic.yaml",
        "dataflow.yaml",
    ],
)
def test_example_configs_are_valid(name):
    config = RunConfig.from_yaml(EXAMPLES / name)
    assert config.budget >= 24


def test_digits_example_runs(tmp_path):
    config = RunConfig.from_yaml(EXAMPLES / "digits.yaml")
    small = config.model_copy(update={"budget": 10, "output": tmp_path / "run"})
    path = tmp_path / "digits.yaml"
    small.to_yaml(path)
    run_dir, result = start(path, progress=False)
    assert result.n_evaluations == 10 and result.ok.all()
    assert len(result.parameter_names) == 10 and (run_dir / "pareto.png").exists()
