"""Gaussian-process surrogates: BAMBO's GP and a GP with a quadratic prior mean.

Each is built (``build_gp``, ``build_quadratic_mean_gp``: models with their priors, not
fitted) and fitted separately (:func:`fit_gp_model`); ``fit_gp`` and
``fit_quadratic_mean_gp`` do both.

``build_gp`` (BAMBO App. B): one ``SingleTaskGP`` per objective with a constant
mean and a Matern-5/2 ARD kernel (BoTorch's dimension-scaled lengthscale prior,
Hvarfner et al. 2024), inputs normalised to the unit cube, outcomes
standardised, hyperparameters fitted by marginal likelihood; several objectives
form a ``ModelListGP``.

``build_quadratic_mean_gp``: the same GP whose prior mean is MAP's quadratic in the
normalised inputs, its coefficients learned jointly with the kernel
hyperparameters by marginal likelihood (initialised at the ridge solution, with a
Gaussian prior on them). The idea: the quadratic's data efficiency at 10-30
points (MAP), with the GP's flexibility for what the quadratic misses.
"""

from __future__ import annotations

import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import ModelListGP, SingleTaskGP
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
from gpytorch.means import Mean
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import NormalPrior
from torch import Tensor

from bambo.surrogates.bayes_linear import evidence_fit
from bambo.surrogates.data import check_training_data, resolve_bounds
from bambo.surrogates.quadratic import quadratic_features


class QuadraticMean(Mean):
    """A learnable quadratic prior mean ``w^T C(z)`` on (normalised) inputs ``z``.

    Args:
        dim: Input dimension d.
        init: Initial coefficients, shape ``((d + 1)(d + 2) / 2,)``.
        prior_std: Standard deviation of the Gaussian prior on the coefficients
            (outcomes are standardised and inputs in the unit cube).
    """

    def __init__(self, dim: int, init: Tensor | None = None, prior_std: float = 1.0, learn: bool = True) -> None:
        super().__init__()
        p = (dim + 1) * (dim + 2) // 2
        start = init if init is not None else torch.zeros(p, dtype=torch.float64)
        if learn:
            self.register_parameter("weights", torch.nn.Parameter(start.clone()))
            self.register_prior("weights_prior", NormalPrior(0.0, prior_std), lambda m: m.weights)
        else:
            self.register_buffer("weights", start.clone())

    def forward(self, x: Tensor) -> Tensor:
        return quadratic_features(x) @ self.weights.to(x)


def _single_gp(X: Tensor, y: Tensor, bounds: Tensor, mean_module: Mean | None = None) -> SingleTaskGP:
    d = X.shape[1]
    return SingleTaskGP(
        X,
        y,
        covar_module=get_covar_module_with_dim_scaled_prior(ard_num_dims=d, use_rbf_kernel=False),
        mean_module=mean_module,
        input_transform=Normalize(d, bounds=bounds),
        outcome_transform=Standardize(1),
    )


def fit_gp_model(model: SingleTaskGP | ModelListGP) -> SingleTaskGP | ModelListGP:
    """Fit a GP's hyperparameters by marginal likelihood (each GP of a ``ModelListGP`` in turn).

    Args:
        model: A built exact GP, or a ``ModelListGP`` of them.

    Returns:
        The same model, fitted and in eval mode.
    """
    if isinstance(model, ModelListGP):
        for sub in model.models:
            fit_gp_model(sub)
        return model
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    model.eval()
    return model


def build_gp(train_X: Tensor, train_Y: Tensor, bounds: Tensor | None = None) -> ModelListGP:
    """Build BAMBO's GP surrogate, not fitted: one Matern-5/2 ARD ``SingleTaskGP`` per output.

    Args:
        train_X: Shape ``(n, d)``.
        train_Y: Shape ``(n, m)``.
        bounds: Input bounds ``(2, d)`` (default: the data's range).
    """
    X, Y = check_training_data(train_X, train_Y)
    b = resolve_bounds(X, bounds)
    return ModelListGP(*[_single_gp(X, Y[:, j : j + 1], b) for j in range(Y.shape[1])])


def fit_gp(train_X: Tensor, train_Y: Tensor, bounds: Tensor | None = None) -> ModelListGP:
    """Build and fit BAMBO's GP surrogate (:func:`build_gp`, then :func:`fit_gp_model`)."""
    return fit_gp_model(build_gp(train_X, train_Y, bounds))


def _evidence_init(X: Tensor, y: Tensor, bounds: Tensor) -> tuple[Tensor, float]:
    """Start and prior width of the quadratic mean from the Bayesian quadratic's evidence fit."""
    Phi = quadratic_features((X - bounds[0]) / (bounds[1] - bounds[0]))
    ys = (y - y.mean()) / (y.std() if y.numel() > 1 and y.std() > 0 else 1.0)
    weights, _, _, alpha = evidence_fit(Phi, ys)
    return weights, alpha**-0.5


def build_quadratic_mean_gp(
    train_X: Tensor,
    train_Y: Tensor,
    bounds: Tensor | None = None,
    prior_std: float | None = None,
    learn_mean: bool = True,
) -> ModelListGP:
    """Build GPs whose prior mean is a learnable quadratic, one per output, not fitted.

    The quadratic mean starts at the Bayesian quadratic's evidence fit (part of the prior).

    Args:
        train_X: Shape ``(n, d)``.
        train_Y: Shape ``(n, m)``.
        bounds: Input bounds ``(2, d)`` (default: the data's range).
        prior_std: Prior standard deviation of the quadratic coefficients (in
            standardised outcome units, on unit-cube inputs). Default: empirical
            Bayes, ``alpha^-1/2`` from the evidence fit of the Bayesian quadratic
            (which also gives the starting coefficients). A fixed width is wrong
            somewhere: a narrow one underfits an exact quadratic, a wide one makes
            the intervals overconfident with few points (coverage of the
            quadratic-mean GP: ``benchmarks/results/surrogates.md``).
    """
    X, Y = check_training_data(train_X, train_Y)
    b = resolve_bounds(X, bounds)
    models = []
    for j in range(Y.shape[1]):
        init, width = _evidence_init(X, Y[:, j], b)
        mean = QuadraticMean(X.shape[1], init, prior_std if prior_std is not None else width, learn=learn_mean)
        models.append(_single_gp(X, Y[:, j : j + 1], b, mean_module=mean))
    return ModelListGP(*models)


def fit_quadratic_mean_gp(
    train_X: Tensor,
    train_Y: Tensor,
    bounds: Tensor | None = None,
    prior_std: float | None = None,
    learn_mean: bool = True,
) -> ModelListGP:
    """Build and fit quadratic-mean GPs (:func:`build_quadratic_mean_gp`, then :func:`fit_gp_model`)."""
    return fit_gp_model(build_quadratic_mean_gp(train_X, train_Y, bounds, prior_std, learn_mean))
