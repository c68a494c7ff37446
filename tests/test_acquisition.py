"""The acquisition registry's contract: every entry builds and optimises; names, options and users' entries."""

import pytest
import torch
from botorch.acquisition import UpperConfidenceBound, qLogNoisyExpectedImprovement
from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
from botorch.optim import optimize_acqf
from botorch.sampling import SobolQMCNormalSampler

import bambo.acquisition as acquisition
from bambo.acquisition import (
    ACQUISITIONS,
    available_acquisitions,
    default_acquisition,
    get_acquisition,
    register_acquisition,
    resolve_acquisition,
)
from bambo.errors import ConfigError, UnknownNameError
from bambo.facade import optimize
from bambo.problem import SyntheticProblem
from bambo.strategies import BAMBO
from bambo.surrogates import fit_gp

torch.set_flush_denormal(True)
pytestmark = pytest.mark.filterwarnings("ignore:.*qExpectedHypervolumeImprovement.*")
D = torch.float64
BOUNDS = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=D)
FAST = {"num_restarts": 2, "raw_samples": 16, "options": {"maxiter": 15, "batch_limit": 2}}


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    X = torch.rand(10, 2, generator=g, dtype=D)
    Y = torch.stack([-((X - 0.3) ** 2).sum(-1), -((X - 0.7) ** 2).sum(-1)], dim=-1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = fit_gp(X, Y, bounds=BOUNDS)
    return model, X, Y


@pytest.fixture(autouse=True)
def own_registry(monkeypatch):
    """Each test sees (and may change) its own copy of the registry."""
    monkeypatch.setattr(acquisition, "ACQUISITIONS", dict(ACQUISITIONS))


@pytest.mark.parametrize("name", list(ACQUISITIONS))
def test_every_registered_acquisition_builds_and_optimises_in_bounds(name, data):
    model, X, Y = data
    spec = ACQUISITIONS[name]
    if spec.objectives == "single":
        model, Y = model.subset_output([0]), Y[:, :1]
    inputs = {
        "X_baseline": X,
        "Y_baseline": Y,
        "best_f": Y.max(),
        "ref_point": Y.min(dim=0).values - 0.1,
        "sampler": SobolQMCNormalSampler(sample_shape=torch.Size([16]), seed=0),
        "X_pending": X[:1] if spec.batch else None,
    }
    options = {"scalarization_weights": torch.tensor([0.3, 0.7], dtype=D)} if spec.scalarized else {}
    acqf = get_acquisition(name, model, **inputs, **options)
    q = 2 if spec.batch else 1
    candidates, value = optimize_acqf(acqf, bounds=BOUNDS, q=q, **FAST)
    assert candidates.shape == (q, 2) and torch.isfinite(value).all()
    assert ((candidates >= BOUNDS[0]) & (candidates <= BOUNDS[1])).all()


def test_auto_follows_the_number_of_objectives(data):
    model, X, Y = data
    assert [default_acquisition(m) for m in (1, 2, 3, 4, 6)] == [
        "qlognei",
        "qlognehvi",
        "qlognehvi",
        "qlognparego",
        "qlognparego",
    ]
    auto = get_acquisition("auto", model, X_baseline=X, ref_point=Y.min(dim=0).values)
    assert isinstance(auto, qLogNoisyExpectedHypervolumeImprovement)
    assert isinstance(get_acquisition("auto", model.subset_output([0]), X_baseline=X), qLogNoisyExpectedImprovement)
    assert resolve_acquisition("auto", 4) == "qlognparego"
    with pytest.raises(ConfigError, match="'qlognei' is for single objective.*has 2"):
        resolve_acquisition("qlognei", 2)


def test_names_options_and_inputs_fail_clearly(data):
    model, X, Y = data
    with pytest.raises(UnknownNameError, match="unknown acquisition 'qnehvi'; valid names: auto, qehvi, .*ucb"):
        get_acquisition("qnehvi", model)
    with pytest.raises(ConfigError, match=r"has no options \['betta'\]; its options: beta"):
        get_acquisition("ucb", model.subset_output([0]), betta=1.0)
    with pytest.raises(ConfigError, match="'qlognehvi' needs X_baseline, ref_point"):
        get_acquisition("qlognehvi", model)
    with pytest.raises(ConfigError, match="beta >= 0, got -1"):
        get_acquisition("ucb", model.subset_output([0]), beta=-1.0)
    with pytest.raises(ConfigError, match="'qehvi' is already registered"):
        register_acquisition("qehvi", lambda model: None)
    with pytest.raises(ConfigError, match="'auto' is reserved"):
        register_acquisition("auto", lambda model: None)
    with pytest.raises(UnknownNameError, match="valid names: auto, qehvi"):
        BAMBO(SyntheticProblem("branin_currin"), acquisition="qnehvi")


def test_ucb_is_the_confidence_bound_pmto_uses(data):
    model, X, _ = data
    single = model.subset_output([0])
    Z = torch.rand(7, 1, 2, dtype=D)
    posterior = single.posterior(Z)
    expected = (posterior.mean + 2.0 * posterior.variance.sqrt()).reshape(-1)
    ucb = get_acquisition("ucb", single, beta=4.0, X_baseline=X)  # inputs it does not take are not passed
    assert isinstance(ucb, UpperConfidenceBound)
    torch.testing.assert_close(ucb(Z), expected)


def test_a_user_registered_acquisition_is_used_by_bambo():
    calls = []

    def optimistic(model, X_baseline, sampler=None, X_pending=None, weight: float = 1.0):
        calls.append({"n": X_baseline.shape[0], "pending": X_pending, "weight": weight})
        from botorch.acquisition.monte_carlo import qUpperConfidenceBound
        from botorch.acquisition.objective import LinearMCObjective

        objective = LinearMCObjective(torch.tensor([weight, 1.0], dtype=D))
        return qUpperConfidenceBound(model, beta=0.5, sampler=sampler, objective=objective, X_pending=X_pending)

    assert "optimistic" not in available_acquisitions()
    register_acquisition("optimistic", optimistic, objectives="multi", summary="a test's qUCB of a weighted sum")
    assert "optimistic" in available_acquisitions()
    problem = SyntheticProblem("branin_currin")
    fast = {"num_restarts": 2, "raw_samples": 32, "mc_samples": 16, "maxiter": 30}
    strategy = BAMBO(problem, seed=0, n_initial=6, acquisition="optimistic", **fast)
    result = optimize(problem, strategy, budget=10, batch_size=4, progress=False)
    assert result.n_evaluations == 10 and result.info["acquisition"] == "optimistic"
    assert len(calls) == 1 and calls[0]["n"] == 6 and calls[0]["weight"] == 1.0
    new = result.X[6:]
    assert ((new >= problem.bounds[0]) & (new <= problem.bounds[1])).all()
    with pytest.raises(ConfigError, match="'optimistic' is for multi objective.*has 1"):
        resolve_acquisition("optimistic", 1)
