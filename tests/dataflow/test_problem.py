"""The data-flow problem and BAMBO on it: built models, the hops metric, canonical bits and scales."""

import pytest
import torch

from bambo.dataflow import DataFlowSpace
from bambo.dataflow.problem import HOPS, DataFlowProblem
from bambo.errors import ConfigError, EvaluationError
from bambo.experiment import optimize
from bambo.problem import Objective
from tests.dataflow.test_build import ResidualMLP

X_DATA = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))


def sources() -> dict[str, ResidualMLP]:
    return {"a": ResidualMLP(0).eval(), "b": ResidualMLP(1).eval()}


def agreement_with(target: torch.nn.Module):
    reference = target(X_DATA).detach()

    def evaluator(model: torch.nn.Module) -> dict[str, float]:
        return {"error": float(((model(X_DATA) - reference) ** 2).mean())}

    return evaluator


def problem(**kwargs) -> DataFlowProblem:
    models = sources()
    space = DataFlowSpace({"a": 4, "b": 4}, repeats=1, **kwargs)
    objectives = [Objective(name="error", direction="minimize"), Objective(name=HOPS, direction="minimize")]
    return DataFlowProblem(models, space, agreement_with(models["b"]), objectives, ref_point=[1.0, 9.0])


def test_metrics_score_the_built_path_and_count_its_hops():
    p = problem(pin_first=False, pin_last=False)
    b_only = p.space.encode(p.path(p.canonical(torch.tensor([0.0] * 4 + [1.0] * 4 + [1.0] * 8))))
    metrics = p.metrics(b_only)
    assert p.path(b_only).describe() == "b:0 b:1 b:2 b:3" and metrics[HOPS] == 4.0
    assert metrics["error"] > 0  # the frame is a's: a's input and head around b's layers
    assert p.discrete_dims == {i: [0.0, 1.0] for i in range(8)}
    nothing = torch.tensor([0.0] * 8 + [1.0] * 8, dtype=torch.float64)
    with pytest.raises(EvaluationError, match="keeps no slot"):
        p.metrics(nothing)


def test_heuristic_points_are_canonical_distinct_paths():
    p = problem(pin_first=False, pin_last=False)
    H = p.heuristic_points()
    assert torch.equal(p.canonical(H), H)
    assert [p.path(h).describe() for h in H][:2] == ["a:0 a:1 a:2 a:3", "b:0 b:1 b:2 b:3"]
    assert len({p.path(h) for h in H}) == H.shape[0]


def test_bambo_asks_canonical_points_and_the_journal_has_hops():
    p = problem()
    result = optimize(p, "bambo", budget=10, batch_size=2, options={"n_initial": 6}, progress=False)
    X = result.X
    assert X.shape == (10, p.dim) and torch.equal(p.canonical(X), X)
    bits = X[:, : len(p.space.free)]
    assert ((bits == 0) | (bits == 1)).all()
    assert bool(result.ok.all())
    hops = torch.tensor([p.space.cost(x) for x in X], dtype=torch.float64)
    assert torch.equal(p.to_user(result.Y_max)[:, 1], hops)


def test_bad_problems_are_named():
    models = sources()
    objectives = [Objective(name="error", direction="minimize")]
    with pytest.raises(ConfigError, match="sources"):
        DataFlowProblem(models, DataFlowSpace({"a": 4, "c": 4}), agreement_with(models["a"]), objectives)
    with pytest.raises(ConfigError, match="has 4 layers, the space 3"):
        DataFlowProblem(models, DataFlowSpace({"a": 3, "b": 3}), agreement_with(models["a"]), objectives)
    p = DataFlowProblem(models, DataFlowSpace({"a": 4, "b": 4}), lambda m: {HOPS: 1.0}, objectives)
    with pytest.raises(EvaluationError, match="named 'hops'"):
        p.metrics(p.heuristic_points()[0])
