"""Gaussian-process surrogates: BAMBO's GP and a GP with a quadratic prior mean.

Each is built (``build_gp``, ``build_quadratic_mean_gp``: models with their priors, not
fitted) and fitted separately (:func:`fit_gp_model`, optionally from given
hyperparameters: :func:`hyperparameters` reads them, :func:`set_hyperparameters`
writes them); ``fit_gp`` and ``fit_quadratic_mean_gp`` do both. :func:`batched_gp`
turns BAMBO's fitted list of GPs into one equal multi-output GP that acquisition
functions evaluate in one call instead of one per objective.

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

from collections.abc import Mapping, Sequence

import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import ModelListGP, SingleTaskGP
from botorch.models.model import Model
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
from gpytorch.kernels import MaternKernel
from gpytorch.means import ConstantMean, Mean
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import NormalPrior
from torch import Tensor
from torch.nn import Module

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


def _single_gp(X: Tensor, Y: Tensor, bounds: Tensor, mean_module: Mean | None = None) -> SingleTaskGP:
    """BAMBO's GP on ``Y`` of shape ``(n, k)``: one output, or ``k`` outputs as a batch of independent GPs."""
    d, k = X.shape[1], Y.shape[1]
    return SingleTaskGP(
        X,
        Y,
        covar_module=get_covar_module_with_dim_scaled_prior(
            ard_num_dims=d, use_rbf_kernel=False, batch_shape=torch.Size([k]) if k > 1 else torch.Size()
        ),
        mean_module=mean_module,
        input_transform=Normalize(d, bounds=bounds),
        outcome_transform=Standardize(k),
    )


def hyperparameters(model: Module) -> dict[str, list]:
    """A model's raw hyperparameters by name, as (nested) lists of floats: JSON-serialisable.

    Args:
        model: A GPyTorch model (or a ``ModelListGP``).
    """
    return {name: p.detach().tolist() for name, p in model.named_parameters()}


def set_hyperparameters(model: Module, values: Mapping[str, Sequence]) -> bool:
    """Write raw hyperparameters read by :func:`hyperparameters` into ``model``.

    Nothing is written unless every parameter of ``model`` has a finite value of its
    shape in ``values`` (another model's hyperparameters, e.g. before the number of
    objectives or inputs changed, are ignored).

    Returns:
        Whether they were written.
    """
    params = dict(model.named_parameters())
    if set(params) != set(values):
        return False
    tensors = {}
    for name, p in params.items():
        t = torch.as_tensor(values[name], dtype=p.dtype)
        if t.shape != p.shape or not bool(torch.isfinite(t).all()):
            return False
        tensors[name] = t
    with torch.no_grad():
        for name, t in tensors.items():
            params[name].copy_(t)
    return True


WARM_FIT_MAXITER = 100  # L-BFGS iterations of a fit that starts from an earlier optimum


def fit_gp_model(
    model: SingleTaskGP | ModelListGP, start: Mapping[str, Sequence] | None = None
) -> SingleTaskGP | ModelListGP:
    """Fit a GP's hyperparameters by marginal likelihood (each GP of a ``ModelListGP`` in turn).

    Args:
        model: A built exact GP, or a ``ModelListGP`` of them.
        start: Raw hyperparameters to start L-BFGS from (:func:`hyperparameters` of an
            earlier fit of the same kind of model, e.g. on the data before the last batch);
            ignored unless they match the model (:func:`set_hyperparameters`). Ax refits
            this way too (``warm_start_refit``). From the priors, L-BFGS took 120-1500
            iterations per GP on DTLZ2 at d = 6-16 (the likelihood is flat along the
            lengthscales of inputs that matter little), and 170-470 from the previous
            optimum; a fit that starts there stops after :data:`WARM_FIT_MAXITER`. On
            held-out points (DTLZ2 d = 16 with 4 objectives at n = 100, d = 6 at n = 40,
            ZDT1, BraninCurrin; 500 test points) such fits had the R^2 and predictive
            log density of a fit from the priors run to convergence, in a third to a
            seventh of the time.

    Returns:
        The same model, fitted and in eval mode.
    """
    warm = start is not None and set_hyperparameters(model, start)
    subs = model.models if isinstance(model, ModelListGP) else [model]
    options = {"optimizer_kwargs": {"options": {"maxiter": WARM_FIT_MAXITER}}} if warm else {}
    for sub in subs:
        fit_gpytorch_mll(ExactMarginalLogLikelihood(sub.likelihood, sub), **options)
        sub.eval()
    return model


def batched_gp(model: Model, train_X: Tensor, train_Y: Tensor, bounds: Tensor) -> Model:
    """One multi-output ``SingleTaskGP`` equal to a fitted ``ModelListGP`` of BAMBO's GPs.

    The list's GPs share the training inputs; a batched GP with each output's fitted
    hyperparameters in its batch dimension has the same posterior (to rounding) and
    is evaluated in one call, so an acquisition function's forward and backward pass
    cost about one GP's instead of ``m`` posterior calls.
    Fitting stays per output: a joint L-BFGS over all outputs' hyperparameters runs
    until the slowest output converges.

    Args:
        model: A fitted model; only a ``ModelListGP`` of :func:`build_gp`'s GPs (constant
            mean, Matern kernel, ``Normalize`` and ``Standardize`` transforms) is batched.
        train_X: The training inputs the list was fitted on, shape ``(n, d)``.
        train_Y: The training outcomes, shape ``(n, m)``.
        bounds: The input bounds the list was built with, shape ``(2, d)``.

    Returns:
        The batched GP in eval mode, or ``model`` itself when it is not such a list.
    """
    if not isinstance(model, ModelListGP) or len(model.models) < 2:
        return model
    subs = model.models
    plain = all(
        type(sub) is SingleTaskGP
        and type(sub.mean_module) is ConstantMean
        and type(sub.covar_module) is MaternKernel
        and isinstance(getattr(sub, "input_transform", None), Normalize)
        and isinstance(getattr(sub, "outcome_transform", None), Standardize)
        for sub in subs
    )
    if not plain or train_Y.shape[1] != len(subs):
        return model
    batched = _single_gp(train_X, train_Y, bounds)
    with torch.no_grad():
        for name, param in batched.named_parameters():
            parts = [dict(sub.named_parameters())[name] for sub in subs]
            param.copy_(torch.stack(parts).reshape(param.shape))
    return batched.eval()


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
