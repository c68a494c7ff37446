"""bambo inside Ax: the example, every bambo surrogate as an Ax model, and the JSON export."""

import json
import logging
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ax.api.client import Client
from ax.utils.common.logger import set_stderr_log_level
from botorch.models.transforms.input import Normalize

import bambo.ax as bax
from bambo.benchmarks.digits import DigitsBenchmark, DigitsConfig
from bambo.errors import ConfigError, UnknownNameError
from bambo.experiment import Experiment
from bambo.facade import optimize
from bambo.pareto import pareto_mask
from bambo.problem import SyntheticProblem
from bambo.strategies import get_strategy
from bambo.surrogates import SURROGATES, QuadraticMean, QuadraticSurrogate

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ax_client.py"
FAST = {"num_restarts": 2, "raw_samples": 64}  # small acquisition optimisation: this is about plumbing


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    set_stderr_log_level(logging.WARNING)
    torch.set_flush_denormal(True)
    root = tmp_path_factory.mktemp("bambo_cache")
    DigitsBenchmark.build(DigitsConfig(), cache_dir=root / "digits")  # trained once, shared with the example
    return root


@pytest.fixture(scope="module")
def problem(cache):
    bench = DigitsBenchmark.build(DigitsConfig(), cache_dir=cache / "digits")
    return bench.problem(["rotated", "inverted"], granularity="block", blocks=3, partitioner="hybrid")


def _run(problem, surrogate, budget, n_initial, **options):
    client = Client(random_seed=0)
    names = bax.configure_client(client, problem)
    client.set_generation_strategy(bax.generation_strategy(surrogate, n_initial, seed=0, **FAST, **options))
    for _ in range(budget):
        for index, parameters in client.get_next_trials(max_trials=1).items():
            client.complete_trial(
                index, raw_data=names.outcome(problem.to_user(problem.evaluate_one(names.vector(parameters))))
            )
    return client


def test_example_runs_and_prints_a_frontier_within_the_objective_ranges(cache, problem, monkeypatch, capsys):
    ranges = {bax.ax_safe_names([o.name])[o.name]: o.bounds for o in problem.objectives}  # accuracies: (0, 1)
    monkeypatch.setenv("BAMBO_CACHE_DIR", str(cache))
    example = runpy.run_path(str(EXAMPLE), run_name="ax_client_example")
    assert example["main"](["--budget", "8", "--n-initial", "5"]) == 0
    out = capsys.readouterr().out
    assert "8 trials (8 completed) with quadratic" in out
    points = [line.split() for line in out.splitlines() if line.startswith("  acc_")]
    assert points, out
    for words in points:
        metrics = dict(zip(words[::2], map(float, words[1::2]), strict=True))
        assert set(metrics) == set(ranges)
        assert all(ranges[m][0] <= v <= ranges[m][1] for m, v in metrics.items()), metrics

    client, frontier = example["run"](budget=6, n_initial=5, cache_dir=cache / "digits")
    summary = client.summarize()
    assert summary["generation_node"].tolist() == ["Sobol"] * 5 + ["MBM"]  # the surrogate proposed the last one
    observed = torch.tensor(summary[list(ranges)].to_numpy(), dtype=torch.float64)
    front = {tuple(y) for y in observed[pareto_mask(observed, deduplicate=False)].tolist()}
    assert frontier and {tuple(point[m] for m in ranges) for point in frontier} == front


@pytest.mark.parametrize("name", bax.AX_SURROGATES)
def test_each_bambo_surrogate_proposes_a_trial_inside_ax(problem, name):
    client = _run(problem, name, budget=5, n_initial=4)
    summary = client.summarize()
    assert summary["generation_node"].tolist()[-1] == "MBM"
    assert (summary["trial_status"] == "COMPLETED").all()
    models = getattr(client._generation_strategy.adapter.generator.surrogate.model, "models", None)
    assert models is not None and len(models) == 2  # one model per objective
    expected = bax.AxQuadraticSurrogate if name.startswith("quadratic") and name != "quadratic-mean-gp" else bax.AxGP
    assert all(type(m) is expected for m in models)
    if expected is bax.AxQuadraticSurrogate:
        assert models[0].link == {"quadratic": "identity"}.get(name, name.removeprefix("quadratic-"))
        Y = models[0].train_targets_
        # the links see accuracies in [0, 1]; the identity quadratic sees Ax-standardised values
        assert (Y.min() >= 0 and Y.max() <= 1) == (name != "quadratic")
    else:
        assert isinstance(models[0].mean_module, QuadraticMean) == (name == "quadratic-mean-gp")
    prediction = client.predict([{p: 0.5 for p in summary.columns if p.startswith(("embed", "block", "head"))}])
    assert set(prediction[0]) == {"acc_rotated", "acc_inverted"}


def test_generation_strategy_with_a_bambo_model_survives_the_json_store(problem, tmp_path):
    client = _run(problem, "quadratic-sigmoid", budget=4, n_initial=3, lower=0.0, upper=1.0)
    path = tmp_path / "client.json"
    client.save_to_json_file(str(path))
    assert "AxQuadraticSurrogate" in path.read_text()
    resumed = Client.load_from_json_file(str(path))
    (index,) = resumed.get_next_trials(max_trials=1)
    assert resumed.summarize()["generation_node"].tolist()[index] == "MBM"

    # importing bambo.ax registers nothing with Ax; a fresh process loads the strategy after register_with_ax()
    script = (
        "import sys, bambo.ax as bax\n"
        "from ax.api.client import Client\n"
        "try:\n    Client.load_from_json_file(sys.argv[1])\nexcept ValueError as e:\n    print('refused:', e)\n"
        "bax.register_with_ax()\n"
        "print('loaded', len(Client.load_from_json_file(sys.argv[1]).summarize()))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True).stdout
    assert "refused: Index 'AxQuadraticSurrogate' is not registered" in out and "loaded 4" in out, out


def test_unsupported_and_unknown_surrogates_fail_clearly():
    for name in SURROGATES:  # every bambo surrogate is either usable in Ax or refused with a reason
        if name not in bax.AX_SURROGATES:
            with pytest.raises(ConfigError, match=rf"{name}.*cannot be used in Ax.*quadratic-mean-gp"):
                bax.generation_strategy(name)
    with pytest.raises(UnknownNameError, match="'nope'.*quadratic-sigmoid"):
        bax.surrogate_spec("nope")
    with pytest.raises(ConfigError, match=r"no options \['upper'\]"):
        bax.surrogate_spec("quadratic-softplus", upper=2.0)
    with pytest.raises(ConfigError, match="n_initial must be >= 1, got 0"):
        bax.generation_strategy("gp", n_initial=0)
    bax.register_with_ax()
    bax.register_with_ax()  # idempotent


def test_ax_quadratic_applies_the_input_transform_ax_passes():
    g = torch.Generator().manual_seed(0)
    X = 10 * torch.rand(20, 2, generator=g, dtype=torch.float64)
    Y = ((X - 4) ** 2).sum(-1, keepdim=True) + X[:, :1]
    bounds = torch.tensor([[0.0, 0.0], [10.0, 10.0]], dtype=torch.float64)
    model = bax.AxQuadraticSurrogate(X, Y, input_transform=Normalize(2, bounds=bounds)).fit()
    reference = QuadraticSurrogate(X, Y, bounds=bounds).fit()
    test = 10 * torch.rand(5, 2, generator=g, dtype=torch.float64)
    assert torch.allclose(model.posterior(test).mean, reference.posterior(test).mean, atol=1e-6)
    assert torch.allclose(model.subset_output([0]).posterior(test).mean, reference.posterior(test).mean, atol=1e-6)


def test_safe_names_are_deterministic_identifiers_and_one_to_one():
    names = ["block.1[1-2]/rotated", "block.1[1-2]/rotated!", "3/x", "pi", "embed/rotated"]
    safe = bax.ax_safe_names(names)
    assert list(safe.values()) == ["block_1_1_2_rotated", "block_1_1_2_rotated_2", "p_3_x", "pi_", "embed_rotated"]
    assert bax.ax_safe_names(names) == safe
    with pytest.raises(ConfigError, match="distinct"):
        bax.ax_safe_names(["a", "a"])
    mapping = bax.AxNames({"a/b": "a_b", "c": "c"}, {"acc/x": "acc_x"})
    x = torch.tensor([0.25, 0.75], dtype=torch.float64)
    assert torch.equal(mapping.vector(mapping.parameterization(x)), x)
    with pytest.raises(ConfigError, match=r"lacks parameters \['c'\]"):
        mapping.vector({"a_b": 0.1})


def test_export_round_trips_through_the_json_store(problem, tmp_path):
    search = Experiment(problem, get_strategy("sobol", problem, 0))
    for trial in search.ask(6):
        if trial.id == 2:
            search.fail(trial.id, "evaluator raised RuntimeError: boom")
        else:
            search.tell(trial.id, problem.metrics(torch.tensor(trial.x, dtype=torch.float64)))
    result = search.result()

    path = bax.export_to_ax(problem, result, tmp_path / "run" / "ax.json")  # checks itself on the way out
    experiment, names = bax.load_ax_export(path)
    assert list(names.parameters) == problem.space.parameter_names
    assert list(names.objectives.values()) == ["acc_rotated", "acc_inverted"]
    assert len(experiment.trials) == 6 and experiment.trials[2].status_reason == "evaluator raised RuntimeError: boom"
    params = experiment.search_space.parameters
    assert [(params[a].lower, params[a].upper) for a in names.parameters.values()] == [(0.0, 1.0)] * problem.dim
    assert json.loads(path.read_text())["experiment"]["properties"]["bambo"]["strategy"] == "sobol"

    # the Client resumes it: 5 completed trials of data, then Ax proposes with a bambo surrogate
    client = Client.load_from_json_file(str(path))
    assert (client.summarize()["trial_status"] == "COMPLETED").sum() == 5
    client.set_generation_strategy(bax.generation_strategy("quadratic", n_initial=3, **FAST))
    (index,) = client.get_next_trials(max_trials=1)
    assert client.summarize()["generation_node"].tolist()[index] == "MBM"

    altered = search.result()
    altered.Y_max[0, 0] += 1e-3
    with pytest.raises(ConfigError, match="trial 0 metric 'acc_rotated'"):
        bax.check_ax_export(path, altered)
    with pytest.raises(ConfigError, match="result has 10 variables"):
        bax.export_to_ax(SyntheticProblem("zdt1"), result, tmp_path / "wrong.json")


def test_export_keeps_minimised_objectives_in_their_own_direction(tmp_path):
    problem = SyntheticProblem("zdt1", dim=3)  # two objectives to minimise
    result = optimize(problem, "sobol", budget=4, progress=False)
    experiment, names = bax.load_ax_export(bax.export_to_ax(problem, result, tmp_path / "zdt1.json"))
    config = experiment.optimization_config
    assert config.objective.expression == "-f0, -f1"  # Ax 1.3.1 objectives are expressions
    assert [str(t) for t in config.objective_thresholds] == [
        "OutcomeConstraint(f0 <= 11)",
        "OutcomeConstraint(f1 <= 11)",
    ]
    data = experiment.lookup_data().df.set_index(["trial_index", "metric_name"])["mean"]
    assert data[(3, "f1")] == pytest.approx(float(result.Y[3, 1]), rel=1e-9) and result.Y[3, 1] > 0
