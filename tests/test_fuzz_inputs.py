"""Malformed inputs to ``bambo run``, generated: each gets one message and exit code 2 before anything is created.

The inputs are mutations of the example configs in ``examples/`` (their ``merge``,
``evaluator``, ``strategy`` and run settings, with the models replaced by small
safetensors files and the evaluator by ``tests.run_helpers:toy_metrics``): missing,
misspelled and extra keys, wrong types (bool or float for an integer, ...), extreme
numbers, broken YAML (non-text keys, deep nesting, aliases), special files (FIFOs,
devices) as config or weights, corrupt weights, bad outputs and bad evaluator entry
points. Every one is run in-process (typer's ``CliRunner``) and must end with exit
code 2, exactly one ``error:`` line, no traceback, and no run folder (so no journal).

Figures. With this validation, measured by
``BAMBO_FUZZ_REPORT=/tmp/fuzz.txt OMP_NUM_THREADS=1 python -m pytest -q tests/test_fuzz_inputs.py``
(hypothesis derandomized: the same inputs every time; the counts land in the file):
473 inputs tried (400 generated + 73 fixed: weights, entry points, outputs, config paths),
473 rejected with exit 2 and one message before the run folder exists, 0 hangs,
0 tracebacks, 0 accepted (39 s on a loaded 2-core machine).

On the code before it (commit ab4c36a's ``bambo/`` with these tests beside it,
``BAMBO_FUZZ_COUNT_ONLY=1 BAMBO_FUZZ_HANG_S=5 ... -k generated``, the 400 generated inputs):
314 rejected before the run, 43 accepted and run to exit 0, 14 exit 1 ("the run stopped"),
20 stopped after the run folder was made (16 exit 2, 4 exit 1), 9 not finished within 5 s
(hangs and slow runs of accepted inputs alike, e.g. a budget of 2**63). The fixed cases
cannot be counted in-process on that code: a FIFO as weights blocks ``safe_open`` while
it holds the GIL, freezing the interpreter.
"""

from __future__ import annotations

import copy
import json
import os
import struct
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from typer.testing import CliRunner, Result

from bambo.cli import app
from tests.run_helpers import write_toy_models

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
OUTCOMES: Counter[str] = Counter()
HANG_S = float(os.environ.get("BAMBO_FUZZ_HANG_S", "120"))  # a guard that turns a hang into a failure
runner = CliRunner()

FIELDS = {  # the keys each section accepts: a misspelled or extra key must not be one of them
    (): {"models", "merge", "evaluator", "objectives", "ref_point", "strategy", "budget", "batch_size", "seed"}
    | {"output"},
    ("models",): {"benchmark", "tasks", "settings", "cache_dir", "base", "experts"},
    ("merge",): {"method", "options", "granularity", "blocks", "partitioner", "bounds", "engine"},
    ("evaluator",): {"entry_point", "options", "timeout_s", "import_timeout_s", "module_path"},
    ("strategy",): {"name", "options"},
    ("objectives", 0): {"name", "direction", "metrics", "anchors", "bounds"},
    ("merge", "options"): {"density", "normalize", "drop_rate", "seed", "gamma", "epsilon", "colinear_threshold"},
    ("evaluator", "options"): {"delay", "log", "fail_above", "nan_above", "hang_above", "hold_after", "release"},
}
STRATEGY_OPTIONS = {  # every option of the strategies the examples use (bambo, pmto)
    "n_initial", "n_iterations", "surrogate", "acquisition", "ref_point", "heuristics", "mc_samples",
    "num_restarts", "raw_samples", "maxiter", "sequential", "n_initial_tasks", "samples_per_task", "beta",
    "task_selection", "best_share", "population", "generations", "restarts", "preferences",
}  # fmt: skip
FIELDS[("strategy", "options")] = STRATEGY_OPTIONS


def toy_example(name: str, models: Path) -> dict[str, Any]:
    """An example config with its models replaced by the toy safetensors files (valid: checked below)."""
    config = yaml.safe_load((EXAMPLES / name).read_text())
    config["models"] = {
        "base": str(models / "base.safetensors"),
        "experts": {"a": str(models / "a.safetensors"), "b": str(models / "b.safetensors")},
    }
    evaluator = config.get("evaluator", {})
    config["evaluator"] = {"entry_point": "tests.run_helpers:toy_metrics", "options": {"delay": 0.0}}
    config["evaluator"]["timeout_s"] = evaluator.get("timeout_s", 60)
    config["objectives"] = [{"name": "a"}, {"name": "b", "bounds": [-100, 0]}]
    config["ref_point"] = [-10.0, -10.0]
    config["merge"]["blocks"] = 2
    config["merge"].setdefault("partitioner", "hybrid")
    config["merge"].setdefault("bounds", [0.0, 1.0])
    config["budget"] = 8
    config["seed"] = 0
    config["output"] = "run"
    return config


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Toy models, the special and corrupt files the inputs point at, and the valid base configs."""
    root = tmp_path_factory.mktemp("fuzz")
    models = root / "models"
    write_toy_models(models)
    bad = root / "bad"
    bad.mkdir()
    os.mkfifo(bad / "fifo.safetensors")
    (bad / "hf_fifo").mkdir()
    os.mkfifo(bad / "hf_fifo" / "model.safetensors")
    (bad / "hf_shard_fifo").mkdir()
    index = json.dumps({"weight_map": {"w": "s.safetensors"}})
    (bad / "hf_shard_fifo" / "model.safetensors.index.json").write_text(index)
    os.mkfifo(bad / "hf_shard_fifo" / "s.safetensors")
    (bad / "hf_bin_fifo").mkdir()
    os.mkfifo(bad / "hf_bin_fifo" / "pytorch_model.bin")
    (bad / "empty_folder").mkdir()
    (bad / "folder.safetensors").mkdir()
    rng = torch.Generator().manual_seed(0)
    noise = bytes(torch.randint(0, 256, (4096,), generator=rng, dtype=torch.uint8).tolist())
    (bad / "random.bin").write_bytes(noise)
    (bad / "random.pt").write_bytes(noise[:100])
    (bad / "empty.bin").write_bytes(b"")
    (bad / "random.safetensors").write_bytes(noise)
    (bad / "empty.safetensors").write_bytes(b"")
    (bad / "short.safetensors").write_bytes(b"\x01\x02")
    (bad / "huge_header.safetensors").write_bytes(struct.pack("<Q", 2**62) + b"{}")
    (bad / "not_json.safetensors").write_bytes(struct.pack("<Q", 5) + b"{nope" + b"\0" * 16)
    good = (models / "a.safetensors").read_bytes()
    (bad / "truncated.safetensors").write_bytes(good[: len(good) - 5])
    (bad / "weights.txt").write_text("not weights")
    save_file({"embed.weight": torch.zeros(7)}, bad / "other_model.safetensors")
    torch.save({"x": [1, 2]}, bad / "not_tensors.bin")
    (root / "a_file").write_text("x")
    (root / "bad_import.py").write_text("raise RuntimeError('this module fails at import')\n")
    (root / "bad_syntax.py").write_text("def score(:\n")
    # not dataflow.yaml: a data-flow search runs models bambo can build, never plain weights files (its bad
    # inputs are tests/dataflow/test_cli.py's)
    names = sorted(p.name for p in EXAMPLES.glob("*.yaml") if p.name != "dataflow.yaml")
    bases = {name: toy_example(name, models) for name in names}
    return {"root": root, "models": models, "bad": bad, "bases": bases, "count": [0]}


def invoke(args: list[str]) -> Result | None:
    """``bambo run ARGS`` in-process; ``None`` if it has not returned after :data:`HANG_S` seconds."""
    box: dict[str, Result] = {}
    thread = threading.Thread(target=lambda: box.update(result=runner.invoke(app, ["run", *args])), daemon=True)
    thread.start()
    thread.join(HANG_S)
    return box.get("result")


def outcome(result: Result | None, case: Path) -> str:
    """What became of one input: ``rejected`` is the one right answer."""
    if result is None:
        return "hang"
    out = result.output
    if "Traceback" in out or (result.exception is not None and not isinstance(result.exception, SystemExit)):
        return "traceback"
    if result.exit_code == 0:
        return "accepted"
    if (case / "run").exists():
        return f"failed late (exit {result.exit_code}, after the run folder was made)"
    if result.exit_code != 2:
        return f"exit {result.exit_code}"
    if sum(line.startswith("error:") for line in out.splitlines()) != 1:
        return "exit 2 without exactly one message"
    return "rejected"


def run_case(
    ws: dict[str, Any], text: str | bytes | None, args: tuple[str, ...] = (), config: str | None = None
) -> None:
    """Write the config text into a fresh folder, run it, record and check the outcome."""
    ws["count"][0] += 1
    case = ws["root"] / f"case{ws['count'][0]}"
    case.mkdir()
    for helper in ("bad_import.py", "bad_syntax.py"):
        (case / helper).write_bytes((ws["root"] / helper).read_bytes())
    path = case / "config.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    result = invoke([config or str(path), *args])
    kind = outcome(result, case)
    OUTCOMES[kind] += 1
    if os.environ.get("BAMBO_FUZZ_LOG"):  # each input's outcome and first 200 characters of output
        with open(os.environ["BAMBO_FUZZ_LOG"], "a") as handle:
            handle.write(f"{kind} | " + " ".join((result.output if result else "").split())[:200] + "\n")
    if os.environ.get("BAMBO_FUZZ_COUNT_ONLY"):  # measuring another version: count, do not stop (or shrink)
        return
    assert kind == "rejected", f"{kind}: {result.output if result else ''}\ninput: {text!r} {args} {config}"


@pytest.fixture(scope="module", autouse=True)
def report() -> Any:
    yield
    if os.environ.get("BAMBO_FUZZ_REPORT"):
        Path(os.environ["BAMBO_FUZZ_REPORT"]).write_text(f"{sum(OUTCOMES.values())} inputs: {dict(OUTCOMES)}\n")


def dump(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def get(config: Any, path: tuple) -> Any:
    for key in path:
        config = config[key]
    return config


def has_dict(config: Any, path: tuple) -> bool:
    try:
        return isinstance(get(config, path), dict)
    except (KeyError, IndexError):
        return False


def with_value(config: dict[str, Any], path: tuple, value: Any) -> dict[str, Any]:
    new = copy.deepcopy(config)
    get(new, path[:-1])[path[-1]] = value
    return new


def without(config: dict[str, Any], path: tuple) -> dict[str, Any]:
    new = copy.deepcopy(config)
    del get(new, path[:-1])[path[-1]]
    return new


def leaves(config: dict[str, Any], kind: str) -> list[tuple]:
    """Paths of the base's values of one kind: ``int`` fields, ``float`` fields, ``str`` fields."""
    ints = [("budget",), ("batch_size",), ("seed",), ("merge", "blocks")]
    ints += [("strategy", "options", k) for k, v in config["strategy"].get("options", {}).items() if type(v) is int]
    ints += [("merge", "options", "seed")] if "seed" in config["merge"].get("options", {}) else []
    floats = [("merge", "bounds", 0), ("merge", "bounds", 1), ("evaluator", "timeout_s"), ("ref_point", 0)]
    floats += [("merge", "options", k) for k in ("density", "drop_rate") if k in config["merge"].get("options", {})]
    strs = [("merge", "method"), ("merge", "granularity"), ("merge", "partitioner"), ("strategy", "name")]
    strs += [("evaluator", "entry_point"), ("objectives", 0, "name"), ("models", "base"), ("models", "experts", "a")]
    return {"int": ints, "float": floats, "str": strs}[kind]


@st.composite
def mutated(draw: st.DrawFn, bases: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """``(mutation kind, YAML text)`` of an invalid config derived from one of the examples."""
    base = bases[draw(st.sampled_from(sorted(bases)))]
    kind = draw(st.sampled_from(["missing", "misspelled", "extra", "wrong type", "extreme", "broken yaml"]))
    if kind == "missing":
        path = draw(
            st.sampled_from(
                [("models",), ("models", "base"), ("models", "experts"), ("evaluator",), ("evaluator", "entry_point"),
                 ("objectives",), ("objectives", 0, "name")]
            )
        )  # fmt: skip
        return kind, dump(without(base, path))
    if kind in ("misspelled", "extra"):
        section = draw(st.sampled_from([s for s in FIELDS if has_dict(base, s)]))
        keys = list(get(base, section))
        if kind == "misspelled" and keys:
            old = draw(st.sampled_from(keys))
            i = draw(st.integers(0, len(old) - 1))
            edit = draw(st.sampled_from(["drop", "double", "swap", "upper", "append"]))
            new = {
                "drop": old[:i] + old[i + 1 :],
                "double": old[:i] + old[i] + old[i:],
                "swap": old[:i] + old[i + 1 : i + 2] + old[i] + old[i + 2 :],
                "upper": old[:i] + old[i].upper() + old[i + 1 :],
                "append": old + "s",
            }[edit]
            if new == old or new in FIELDS[section] or new in keys or not new:
                new = old + "_"
            config = copy.deepcopy(base)
            target = get(config, section)
            target[new] = target.pop(old)
            return kind, dump(config)
        extra = draw(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).filter(lambda k: k not in keys))
        if extra in FIELDS[section]:
            extra += "_x"
        config = copy.deepcopy(base)
        get(config, section)[extra] = draw(st.one_of(st.integers(0, 9), st.text(max_size=5), st.booleans()))
        return kind, dump(config)
    if kind == "wrong type":
        field = draw(st.sampled_from(["int", "float", "str", "section"]))
        if field == "section":
            path = draw(st.sampled_from([("models",), ("merge",), ("evaluator",), ("strategy",), ("objectives", 0),
                                         ("objectives",), ("models", "experts"), ("merge", "options")]))  # fmt: skip
            nothing = [None] if path != ("merge", "options") else []
            value = draw(st.sampled_from([1, "x", True, 2.5, [1, 2], *nothing]))
            return kind, dump(with_value(base, path, value))
        path = draw(st.sampled_from(leaves(base, field)))
        value = draw(
            st.sampled_from(
                {
                    "int": [True, False, 3.0, -0.0, 2.5, "8", [1], {"a": 1}, None],
                    "float": [True, False, "0.5", [0.5], {"x": 1}],
                    "str": [1, 2.5, True, ["x"], {"x": "y"}, None, ""],
                }[field]
            )
        )
        return kind, dump(with_value(base, path, value))
    if kind == "extreme":
        lists = [("ref_point",), ("merge", "bounds")]
        path = draw(st.sampled_from(leaves(base, "int") + leaves(base, "float") + lists))
        if path in (("ref_point",), ("merge", "bounds")):
            inf, nan = float("inf"), float("nan")
            values = [[nan, 0.0], [0.0, inf], [-inf, 0.0], [0.0], [0.0, 0.0, 0.0]]
            values += [[1.0, 0.0], [0.5, 0.5]] if path == ("merge", "bounds") else []
        elif path in leaves(base, "int"):
            values = [-1, -(2**63), 2**63, 2**64, 10**100] + ([2**32] if path[-1] == "seed" else [10**6 + 1])
            values += [0] if path in (("budget",), ("batch_size",), ("merge", "blocks")) else []
            if path[-1] == "n_initial":
                values.append(base["budget"] + 1)
        elif path == ("evaluator", "timeout_s"):
            values = [0, -1.0, float("inf"), float("nan"), 1e300, -float("inf")]
        elif path[0] == "merge" and path[1] == "bounds":
            values = [float("inf"), float("nan"), -float("inf")]
        else:  # densities, drop rates, a reference point's values
            values = [float("inf"), float("nan"), -float("inf")] + ([-0.5, 1.5] if path[0] == "merge" else [])
        return kind, dump(with_value(base, path, draw(st.sampled_from(values))))
    text = dump(base)
    lines = text.splitlines()
    breaker = draw(st.sampled_from(["unclosed", "tab", "colons", "key", "deep", "aliases", "document", "nul", "bytes"]))
    if breaker == "unclosed":
        lines.insert(draw(st.integers(0, len(lines))), "x: [unclosed")
    elif breaker == "tab":
        i = draw(st.integers(0, len(lines)))
        lines[i:i] = ["x:", "\tkey: value"]
    elif breaker == "colons":
        lines.append("merge: : :")
    elif breaker == "key":
        section = draw(st.sampled_from(["models", "merge", "evaluator", "strategy", "  experts"]))
        key = draw(st.sampled_from(["1", "null", "true", "3.5", "2024-01-01", "[1, 2]", "~"]))
        indent = " " * (section.count(" ") + 2)
        mutated = text.replace(f"{section}:\n", f"{section}:\n{indent}{key}: x\n", 1)
        assert mutated != text
        return f"non-text key {key}", mutated
    elif breaker == "deep":
        n = draw(st.integers(MAX_DEPTH_PLUS, 3000))
        lines.append("ref_point: " + "[" * n + "]" * n)
    elif breaker == "aliases":
        laughs = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
        laughs += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
        return kind, "x_laughs:\n" + "\n".join("  " + line for line in laughs) + "\n" + text
    elif breaker == "document":
        return kind, draw(st.sampled_from(["", "~", "42", "- a\n- b", "just text", "[models, merge]", "---\n---"]))
    elif breaker == "nul":
        lines.append('output: "run\\0x"')
    else:
        return kind, b"models: \xff\xfe broken\n"  # type: ignore[return-value] - bytes: not UTF-8
    return kind, "\n".join(lines) + "\n"


MAX_DEPTH_PLUS = 40


@settings(
    max_examples=400,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_generated_malformed_configs_are_rejected_before_the_run(workspace, data):
    kind, text = data.draw(mutated(workspace["bases"]), label="config")
    run_case(workspace, text)


def test_the_toy_examples_the_mutations_start_from_are_valid(workspace):
    for name, config in workspace["bases"].items():
        case = workspace["root"] / f"valid_{name}"
        case.mkdir()
        (case / "config.yaml").write_text(dump(config))
        result = runner.invoke(app, ["run", str(case / "config.yaml"), "--check"])
        assert result.exit_code == 0, (name, result.output)
        assert not (case / "run").exists()


WEIGHTS = [
    "fifo.safetensors", "hf_fifo", "hf_shard_fifo", "hf_bin_fifo", "empty_folder", "folder.safetensors",
    "random.bin", "random.pt", "empty.bin", "random.safetensors", "empty.safetensors", "short.safetensors",
    "huge_header.safetensors", "not_json.safetensors", "truncated.safetensors", "weights.txt",
    "other_model.safetensors", "not_tensors.bin", "missing.safetensors", "/dev/zero", "/dev/null",
]  # fmt: skip
ENTRY_POINTS = [
    "nocolon", "a:b:c", ":score", "mod:", "no_such_module_xyz:score", "tests.run_helpers:nothing",
    "tests.run_helpers:N_LAYERS", "os:getcwd", "bad_import:score", "bad_syntax:score", "tests.no_such:score",
]  # fmt: skip
OUTPUTS = ["a_file", "a_file/sub", "/dev/null", "/dev/zero/run", "/proc/x", "/sys/run", "/proc", "run\0x"]


@pytest.mark.parametrize("field", ["base", "a"])
@pytest.mark.parametrize("weights", WEIGHTS)
def test_bad_weights_are_refused_naming_the_field(workspace, field, weights):
    base = workspace["bases"]["your_models.yaml"]
    path = weights if weights.startswith("/") else str(workspace["bad"] / weights)
    config = with_value(base, ("models", "base") if field == "base" else ("models", "experts", "a"), path)
    run_case(workspace, dump(config))


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_bad_entry_points_are_refused(workspace, entry_point):
    run_case(workspace, dump(with_value(workspace["bases"]["digits.yaml"], ("evaluator", "entry_point"), entry_point)))


@pytest.mark.parametrize("output", OUTPUTS)
def test_bad_outputs_are_refused(workspace, output):
    target = output if output.startswith("/") or "\0" in output else str(workspace["root"] / output)
    run_case(workspace, dump(with_value(workspace["bases"]["digits.yaml"], ("output",), target)))
    if "\0" not in target:
        run_case(workspace, dump(workspace["bases"]["digits.yaml"]), ("--output", target))


@pytest.mark.parametrize("config", ["fifo", "/dev/zero", "/dev/null", "folder", "missing.yaml"])
def test_special_config_paths_are_refused(workspace, config):
    path = workspace["root"] / "special"
    path.mkdir(exist_ok=True)
    if config == "fifo" and not (path / "fifo").exists():
        os.mkfifo(path / "fifo")
    (path / "folder").mkdir(exist_ok=True)
    where = config if config.startswith("/") else str(path / config)
    run_case(workspace, None, config=where)
