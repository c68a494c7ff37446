"""Each malformed input of the validation issue, refused before the run with one message naming it (exit 2)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from bambo.cli import app
from bambo.errors import ConfigError
from bambo.validation import check_safetensors, check_yaml_shape
from tests.run_helpers import write_toy_models
from tests.test_fuzz_inputs import invoke, outcome
from tests.test_runner import toy_config

runner = CliRunner()
DEEP: list = [0]
for _ in range(40):
    DEEP = [DEEP]


def rejected(tmp_path: Path, args: list[str], *parts: str) -> str:
    """Run ``bambo run ARGS``; it must be refused (exit 2, one message, no run folder) naming ``parts``."""
    result = invoke(args)
    assert outcome(result, tmp_path) == "rejected", result.output if result else "hang"
    text = "".join(result.output.split())  # rich wraps long lines
    for part in parts:
        assert "".join(part.split()) in text, result.output
    return result.output


def edited(tmp_path: Path, change) -> Path:
    path = toy_config(tmp_path)
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_fifo_or_a_device_as_config_is_refused_unread(tmp_path):
    os.mkfifo(tmp_path / "config.yaml")
    rejected(tmp_path, [str(tmp_path / "config.yaml")], "is a FIFO (named pipe), not a regular file")
    rejected(tmp_path, ["/dev/zero"], "config: /dev/zero is a device")


def test_the_config_loader_refuses_a_fifo_too(tmp_path):
    from bambo.config import RunConfig

    os.mkfifo(tmp_path / "config.yaml")
    with pytest.raises(ConfigError, match="FIFO"):
        RunConfig.from_yaml(tmp_path / "config.yaml")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its permissions, so none is unreadable")
def test_an_unreadable_config_is_refused(tmp_path):
    path = toy_config(tmp_path)
    path.chmod(0)
    rejected(tmp_path, [str(path)], "not readable")


def test_fifo_weights_are_refused_naming_the_field(tmp_path):
    os.mkfifo(tmp_path / "fifo.safetensors")
    path = edited(tmp_path, lambda c: c["models"].update(base=str(tmp_path / "fifo.safetensors")))
    rejected(tmp_path, [str(path)], "models.base:", "FIFO")
    folder = tmp_path / "hf"
    folder.mkdir()
    os.mkfifo(folder / "model.safetensors")
    path = edited(tmp_path, lambda c: c["models"]["experts"].update(a=str(folder)))
    rejected(tmp_path, [str(path)], "models.experts.a/model.safetensors:", "FIFO")


def test_corrupt_weights_are_refused_naming_the_file(tmp_path):
    (tmp_path / "random.bin").write_bytes(bytes(range(256)) * 8)
    path = edited(tmp_path, lambda c: c["models"]["experts"].update(a=str(tmp_path / "random.bin")))
    rejected(tmp_path, [str(path)], "models.experts.a:", "random.bin", "weights_only=True")


def test_safetensors_headers_are_parsed_within_bounds(tmp_path):
    good = write_toy_models(tmp_path / "m")["a"].read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good[:-4])
    with pytest.raises(ConfigError, match="models.base: .* data offsets"):
        check_safetensors(cut, "models.base")
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes((2**63).to_bytes(8, "little") + b"{}")
    with pytest.raises(ConfigError, match="header length 9223372036854775808 exceeds the file"):
        check_safetensors(huge, "models.base")


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("a_file", "is a file, not a folder"),
        ("/dev/null", "inside /dev"),
        ("/proc/x", "inside /proc"),
        ("run\0x", "contains a NUL byte"),
    ],
)
def test_bad_outputs_are_refused_before_anything_is_created(tmp_path, output, message):
    (tmp_path / "a_file").write_text("x")
    path = edited(tmp_path, lambda c: c.update(output=output))
    rejected(tmp_path, [str(path)], "output:", message)
    if "\0" not in output:
        rejected(tmp_path, [str(toy_config(tmp_path)), "--output", output], "--output:", message)
    assert (tmp_path / "a_file").read_text() == "x"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["strategy"].update(name="bambo", options={"n_initial": 2**63}), "strategy.options.n_initial"),
        (lambda c: c["strategy"].update(name="bambo", options={"n_initial": 9}), "n_initial is 9, more than the"),
        (lambda c: c["strategy"].update(name="bambo", options={"heuristics": 1}), "heuristics must be true or false"),
        (lambda c: c["merge"].update(blocks=True), "merge: blocks: Input should be a valid integer"),
        (lambda c: c["merge"].update(method="dare_linear", options={"seed": -0.0}), "merge.options.seed must be an"),
        (lambda c: c.update(seed=-0.0), "seed: Input should be a valid integer"),
        (lambda c: c.update(budget=2**63), "budget: Input should be less than or equal to 1000000"),
        (lambda c: c["evaluator"].update(timeout_s=float("inf")), "timeout_s: Input should be a finite number"),
        (lambda c: c["evaluator"].update(timeout_s=1e12), "timeout_s: Input should be less than or equal"),
        (lambda c: c.update(ref_point=[float("nan"), 0.0]), "ref_point.0: Input should be a finite number"),
        (lambda c: c.update(objectives=[{"name": "a"}, {"name": "a"}]), "distinct, non-empty names"),
        (lambda c: c["models"]["experts"].update({1: c["models"]["experts"]["a"]}), "key 1 of type int"),
        (lambda c: c["evaluator"]["options"].update(x=DEEP), "nested deeper than 32 levels"),
    ],
)  # fmt: skip
def test_coerced_or_unbounded_values_are_refused(tmp_path, change, message):
    path = edited(tmp_path, change)
    rejected(tmp_path, [str(path)], message)


def test_yaml_aliases_are_measured_once():
    laugh: list = ["lol"] * 9
    for _ in range(8):
        laugh = [laugh] * 9  # 9**8 leaves when expanded, 9 lists in memory
    with pytest.raises(ConfigError, match="more than 100000 values"):
        check_yaml_shape({"x": laugh})


def test_an_evaluator_module_that_hangs_at_import_is_given_up_on(tmp_path):
    release = tmp_path / "release"
    (tmp_path / "hangs_at_import.py").write_text(
        f"import os, time\nwhile not os.path.exists({str(release)!r}):\n    time.sleep(0.01)\n"
        "def score(sd): return {}\n"
    )
    path = edited(tmp_path, lambda c: c["evaluator"].update(entry_point="hangs_at_import:score", import_timeout_s=0.2))
    try:
        rejected(tmp_path, [str(path)], "importing module 'hangs_at_import' took longer than 0.2 s")
    finally:
        release.write_text("")  # the abandoned import thread ends
    sys.modules.pop("hangs_at_import", None)


def test_an_evaluator_beside_the_config_is_found_and_a_missing_one_says_where_it_looked(tmp_path):
    (tmp_path / "my_eval_beside.py").write_text("from tests.run_helpers import toy_metrics as score\n")
    path = edited(tmp_path, lambda c: c["evaluator"].update(entry_point="my_eval_beside:score"))
    result = runner.invoke(app, ["run", str(path), "--check"])
    assert result.exit_code == 0, result.output
    assert str(tmp_path) not in sys.path
    missing = edited(tmp_path, lambda c: c["evaluator"].update(entry_point="my_eval_absent:score"))
    rejected(tmp_path, [str(missing)], "no module named 'my_eval_absent'", f"the config's folder {tmp_path}")


def test_a_run_resumes_with_an_evaluator_beside_its_config(tmp_path):
    from bambo.runner import resume, start

    (tmp_path / "my_eval_resumed.py").write_text("from tests.run_helpers import toy_metrics as score\n")
    path = edited(tmp_path, lambda c: c["evaluator"].update(entry_point="my_eval_resumed:score"))
    run_dir, result = start(path, progress=False)
    sys.modules.pop("my_eval_resumed", None)
    assert resume(run_dir, progress=False).n_evaluations == result.n_evaluations == 8


def test_check_evaluates_the_base_model_once_and_writes_nothing(tmp_path):
    path = toy_config(tmp_path)
    result = runner.invoke(app, ["run", str(path), "--check"])
    assert result.exit_code == 0, result.output
    assert "'a': -1.0" in result.output and "'b': -1.0" in result.output  # the all-zero base
    assert not (tmp_path / "run").exists()
    absent = edited(tmp_path, lambda c: c.update(objectives=[{"name": "a"}, {"name": "acc"}]))
    out = rejected(tmp_path, [str(absent), "--check"], "objective 'acc': the evaluator returned no metric 'acc'")
    assert "'b'" in out
    nan = edited(tmp_path, lambda c: c["evaluator"]["options"].update(nan_above=-1.0))
    rejected(tmp_path, [str(nan), "--check"], "objective 'b': metric 'b' is not finite: nan")


def test_a_wrong_evaluator_signature_is_refused(tmp_path):
    path = edited(tmp_path, lambda c: c["evaluator"]["options"].update(limit=3))
    rejected(tmp_path, [str(path)], "cannot be called as toy_metrics(state_dict, limit=...)")


def test_torch_checkpoints_of_tensors_are_accepted(tmp_path):
    path = toy_config(tmp_path)
    config = yaml.safe_load(path.read_text())
    from safetensors.torch import load_file

    torch.save(load_file(tmp_path / "models" / "a.safetensors"), tmp_path / "a.bin")
    config["models"]["experts"]["a"] = str(tmp_path / "a.bin")
    path.write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["run", str(path), "--check"])
    assert result.exit_code == 0, result.output


def test_an_evaluator_naming_trial_id_and_x_as_plain_parameters_is_accepted_and_given_them(tmp_path):
    """The signature check (issue 23) and the trial_id/x arguments (issue 24) agree on one evaluator."""
    (tmp_path / "my_eval_ids.py").write_text(
        "import json\n"
        "from tests.run_helpers import toy_metrics\n"
        "def score(state_dict, trial_id, x, log):\n"
        "    with open(log, 'a') as f:\n"
        "        f.write(json.dumps([trial_id, len(x)]) + '\\n')\n"
        "    return toy_metrics(state_dict)\n"
    )
    log = tmp_path / "calls.jsonl"
    path = edited(tmp_path, lambda c: c["evaluator"].update(entry_point="my_eval_ids:score", options={"log": str(log)}))
    result = runner.invoke(app, ["run", str(path)])
    sys.modules.pop("my_eval_ids", None)
    assert result.exit_code == 0, result.output
    calls = [yaml.safe_load(line) for line in log.read_text().splitlines()]
    assert [c[0] for c in calls] == list(range(len(calls))) and len(calls) == 8
    assert all(c[1] > 0 for c in calls)
