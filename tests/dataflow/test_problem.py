"""The data-flow problem and BAMBO on it: built models, the hops metric, canonical bits and scales."""

import pytest
import torch

from bambo.dataflow import DataFlowSpace
from bambo.dataflow.problem import HOPS, DataFlowProblem
from bambo.errors import ConfigError, EvaluationError
from bambo.facade import optimize
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
    space = DataFlowSpace({"a": 4, "b": 4}, repeats=1, **{"pin_last": True, **kwargs})
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


def test_the_acquisition_scores_equivalent_vectors_alike_and_ignores_dropped_scales():
    from bambo.acquisition import CanonicalAcquisition
    from bambo.strategies import get_strategy

    p = problem()
    strategy = get_strategy("bambo", p, seed=0, n_initial=6)
    X = strategy.ask(6)
    strategy.tell(X, p.evaluate(X))
    X_ok, Y_ok = strategy.completed
    model = __import__("bambo.surrogates.registry", fromlist=["x"]).build_surrogate("gp", X_ok, Y_ok, bounds=p.bounds)
    acqf = strategy._acquisition(model, X_ok, Y_ok, seed=0)
    assert isinstance(acqf, CanonicalAcquisition)
    # slots a:0-3 then b:0-3, the first and last pinned: bits for slots 1-6
    x = torch.tensor([0.0, 0.0, 1.0, 0.0, 1.0, 0.0] + [0.7, 1.2, 1.4, 0.6, 0.9, 1.3, 0.8, 1.1]).double()
    other = x.clone()
    other[:6] = torch.tensor([0.2, 0.4, 0.7, 0.1, 0.9, 0.3]).double()  # the same bits after rounding
    other[6 + 2] = 0.5  # slot 2 (a:2) is dropped: its scale does nothing
    assert torch.equal(acqf(x.view(1, 1, -1)), acqf(other.view(1, 1, -1)))
    x.requires_grad_(True)
    acqf(x.view(1, 1, -1)).sum().backward()
    kept = p.space.kept(x.detach())
    scale_grad = x.grad[6:]
    assert all((g == 0) != keep for g, keep in zip(scale_grad.tolist(), kept, strict=True))
    acqf.set_X_pending(other.view(1, -1))
    assert torch.equal(acqf.X_pending, p.canonical(other.view(1, -1)))


def test_the_ablation_without_canonical_forms_asks_raw_vectors():
    p = problem()
    result = optimize(p, "bambo", budget=10, batch_size=2, options={"n_initial": 6, "canonical": False}, progress=False)
    assert bool(result.ok.all()) and not torch.equal(p.canonical(result.X[6:]), result.X[6:])
