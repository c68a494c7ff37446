"""The contract every registered surrogate satisfies: a BoTorch Model usable by any acquisition."""

import pytest
import torch
from botorch.acquisition.monte_carlo import qUpperConfidenceBound
from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
from botorch.acquisition.multi_objective.monte_carlo import qExpectedHypervolumeImprovement
from botorch.acquisition.objective import LinearMCObjective
from botorch.optim import optimize_acqf
from botorch.sampling import SobolQMCNormalSampler
from botorch.utils.multi_objective.box_decompositions.non_dominated import FastNondominatedPartitioning

from bambo.surrogates import available_surrogates, fit_surrogate

torch.set_flush_denormal(True)
pytestmark = pytest.mark.filterwarnings("ignore:.*qExpectedHypervolumeImprovement.*")


def training_data(d: int, n: int):
    """Two smooth outputs inside (0, 1), so every link's range holds."""
    g = torch.Generator().manual_seed(d)
    X = torch.rand(n, d, generator=g, dtype=torch.float64)
    centre = torch.linspace(0.2, 0.8, d, dtype=torch.float64)
    a = torch.exp(-((X - centre) ** 2).sum(-1))
    b = torch.exp(-((X - centre.flip(0)) ** 2).sum(-1) * 0.5)
    return X, torch.stack([0.1 + 0.8 * a, 0.1 + 0.8 * b], dim=-1)


def fit(name: str, d: int, n: int):
    X, Y = training_data(d, n)
    options = {"task_dims": [d - 1]} if name == "parametric-task-gp" else {}
    bounds = torch.stack([torch.zeros(d), torch.ones(d)]).double()
    return fit_surrogate(name, X, Y, bounds=bounds, **options), X, Y, bounds


OPTIMIZE = {"num_restarts": 2, "raw_samples": 16, "options": {"maxiter": 15, "batch_limit": 2}}


@pytest.mark.parametrize("d", [2, 8])
@pytest.mark.parametrize("name", available_surrogates())
def test_surrogate_contract(name, d):
    model, X, Y, bounds = fit(name, d, n=12 if d == 2 else 24)
    assert model.num_outputs == 2

    # posterior shapes for a plain batch and for a batch of q-batches
    post = model.posterior(torch.rand(5, d, dtype=torch.float64))
    assert post.mean.shape == (5, 2) and post.variance.shape == (5, 2)
    assert (post.variance > 0).all()
    post = model.posterior(torch.rand(3, 4, d, dtype=torch.float64))
    assert post.mean.shape == (3, 4, 2) and post.variance.shape == (3, 4, 2)
    samples = post.rsample(torch.Size([6]))
    assert samples.shape == (6, 3, 4, 2) and torch.isfinite(samples).all()

    # gradients reach the inputs (through the mean and through samples)
    Xg = torch.rand(2, 3, d, dtype=torch.float64, requires_grad=True)
    posterior = model.posterior(Xg)
    (posterior.mean.sum() + posterior.rsample(torch.Size([2])).sum()).backward()
    assert Xg.grad is not None and torch.isfinite(Xg.grad).all() and Xg.grad.abs().sum() > 0

    # acquisition functions built on it optimise without error
    sampler = SobolQMCNormalSampler(sample_shape=torch.Size([16]), seed=0)
    ref = torch.zeros(2, dtype=torch.float64)
    acquisitions = [
        qLogNoisyExpectedHypervolumeImprovement(model, ref, X_baseline=X, sampler=sampler, prune_baseline=True),
        qExpectedHypervolumeImprovement(model, ref, FastNondominatedPartitioning(ref, Y), sampler=sampler),
        qUpperConfidenceBound(model, beta=0.2, sampler=sampler, objective=LinearMCObjective(torch.ones(2).double())),
    ]
    for acqf in acquisitions:
        candidates, value = optimize_acqf(acqf, bounds=bounds, q=2, **OPTIMIZE)
        assert candidates.shape == (2, d) and torch.isfinite(value).all()
        assert ((candidates >= 0) & (candidates <= 1)).all()


@pytest.mark.parametrize("name", available_surrogates())
def test_analytic_ucb_on_one_output(name):
    from botorch.acquisition.analytic import UpperConfidenceBound

    X, Y = training_data(3, 14)
    options = {"task_dims": [2]} if name == "parametric-task-gp" else {}
    bounds = torch.stack([torch.zeros(3), torch.ones(3)]).double()
    model = fit_surrogate(name, X, Y[:, :1], bounds=bounds, **options)
    candidate, value = optimize_acqf(UpperConfidenceBound(model, beta=0.5), bounds=bounds, q=1, **OPTIMIZE)
    assert candidate.shape == (1, 3) and torch.isfinite(value).all()
