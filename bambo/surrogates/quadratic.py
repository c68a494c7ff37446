"""MAP's quadratic surrogate as a BoTorch ``Model`` (MAP Sec. 3.1, Eq. 3-5, Corollary 1).

Each output is ``M(c) = link(eta(c))`` with ``eta(c) = 1/2 c^T A c + b^T c + e``,
i.e. a linear model on the features ``C(c) = (c_i^2, c_i c_j (i < j), c_i, 1)``
((d + 1)(d + 2)/2 of them). Inputs are scaled to the unit cube by ``bounds``
first (this only reparametrises the quadratic).

- ``link="identity"`` (MAP Case 1, unbounded metric): Bayesian linear regression
  with prior ``w ~ N(0, alpha^-1 I)`` and noise precision ``beta`` on
  standardised outputs. ``alpha`` and ``beta`` maximise the evidence (a global
  grid search refined by MacKay's fixed-point updates), so with little data the
  prior keeps the fit sane (fewer points than coefficients is fine) and with exact
  quadratic data the posterior mean is Corollary 1's least-squares solution (from
  ``p`` points on: with no residual degree of freedom the fit interpolates). The
  posterior over ``M`` at a q-batch is Gaussian with full joint covariance
  ``Phi S Phi^T``.
- ``link="sigmoid"`` (Case 2, metric in ``[l, u]``): ``M = l + (u - l) sigmoid(eta)``;
  ``link="softplus"`` (Case 3, metric in ``[l, inf)``): ``M = l + softplus(eta)``.
  ``w`` minimises the squared error of Eq. 5 plus a ridge ``r ||w - w_0||^2``
  (``w_0`` the constant model at the data's mean latent level) by Gauss-Newton,
  starting from the evidence fit of the clamped latent problem ``g^-1(y) ~ Phi w``;
  at each step the evidence of the linearised problem picks ``r``, the
  prior-to-noise precision ratio (so noise-free data is fitted exactly, also where
  the link saturates, and scarce data is regularised). The posterior is a Laplace
  approximation: ``w ~ N(w_hat, H^-1)`` with the Gauss-Newton Hessian
  ``H = alpha I + J^T J / s^2`` (``J`` the Jacobian of the predictions, ``alpha``
  and the noise variance ``s^2`` the evidence's), pushed through the link: samples
  are exact transforms of Gaussian ``eta`` samples, and the mean and variance come
  from 32-point Gauss-Hermite quadrature. Predictions stay inside ``[l, u]`` /
  ``[l, inf)``. With ``observation_noise=True`` the variance (not the samples)
  includes ``s^2``.

Written here because BoTorch has no Bayesian polynomial regression model; a
``SingleTaskGP`` with a degree-2 polynomial kernel is the same Gaussian model in
theory but was singular and slow in practice (``shared/notes``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from botorch.exceptions.errors import UnsupportedError
from botorch.models.model import Model
from botorch.posteriors.gpytorch import GPyTorchPosterior
from botorch.posteriors.posterior import Posterior
from botorch.posteriors.transformed import TransformedPosterior
from gpytorch.distributions import MultitaskMultivariateNormal, MultivariateNormal
from torch import Tensor

from bambo.errors import ConfigError, NotFittedError
from bambo.surrogates.bayes_linear import Link, evidence_fit, link_fit, link_functions
from bambo.surrogates.data import check_training_data, resolve_bounds

_JITTER = 1e-9
_HERMITE_X, _HERMITE_W = (torch.as_tensor(a, dtype=torch.float64) for a in np.polynomial.hermite.hermgauss(32))


def _jitter(cov: Tensor, tries: int = 6) -> float:
    """The smallest diagonal jitter (from ``1e-9`` of the mean variance, times 10 per try) that
    makes the low-rank covariance ``cov`` ``(..., q, q)`` positive definite.

    The covariance of ``q > p`` points has rank at most ``p``; with (nearly) no fitted noise,
    as for noise-free data, a fixed relative jitter can leave it numerically indefinite.
    """
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    jitter = _JITTER * (1.0 + float(cov.detach().diagonal(dim1=-2, dim2=-1).mean()))
    for _ in range(tries):
        if not bool(torch.linalg.cholesky_ex(cov.detach() + jitter * eye).info.any()):
            return jitter
        jitter *= 10.0
    return jitter


def quadratic_features(Z: Tensor) -> Tensor:
    """MAP's features ``(z_i^2, z_i z_j for i < j, z_i, 1)``.

    Args:
        Z: Shape ``(..., d)``.

    Returns:
        Shape ``(..., (d + 1)(d + 2) / 2)``.
    """
    d = Z.shape[-1]
    i, j = torch.triu_indices(d, d, offset=1, device=Z.device)
    return torch.cat([Z * Z, Z[..., i] * Z[..., j], Z, torch.ones_like(Z[..., :1])], dim=-1)


class QuadraticSurrogate(Model):
    """One quadratic per output with a Gaussian (or Laplace) posterior; see the module docstring.

    Construction stores and checks the data; :meth:`fit` computes the posterior of the
    coefficients (closed form for the identity link, Gauss-Newton for the others).

    Args:
        train_X: Shape ``(n, d)``.
        train_Y: Shape ``(n, m)``.
        bounds: Input bounds ``(2, d)`` (default: the data's range).
        link: ``"identity"``, ``"sigmoid"`` or ``"softplus"``.
        lower: ``l`` of the links (a float or one per output).
        upper: ``u`` of the sigmoid link (a float or one per output).

    Raises:
        ConfigError: Bad data, an unknown link, or outputs outside the link's range.
    """

    _is_ensemble = False

    def __init__(
        self,
        train_X: Tensor,
        train_Y: Tensor,
        bounds: Tensor | None = None,
        link: Link = "identity",
        lower: float | Sequence[float] = 0.0,
        upper: float | Sequence[float] = 1.0,
    ) -> None:
        super().__init__()
        X, Y = check_training_data(train_X, train_Y)
        m = Y.shape[1]
        self.link = link
        self.register_buffer("bounds", resolve_bounds(X, bounds))
        self.register_buffer("train_inputs_", X)
        self.register_buffer("train_targets_", Y)
        lows = _per_output(lower, m, "lower")
        ups = _per_output(upper, m, "upper")
        self.lower, self.upper = lows, ups
        if link != "identity":
            link_functions(link, 0.0, 1.0)  # validates the name
            for j in range(m):
                y = Y[:, j]
                if not (math.isfinite(lows[j]) and (link == "softplus" or math.isfinite(ups[j]) and ups[j] > lows[j])):
                    raise ConfigError(
                        f"the {link} link needs finite bounds with lower < upper, got [{lows[j]}, {ups[j]}]"
                    )
                if (y < lows[j]).any() or (link == "sigmoid" and (y > ups[j]).any()):
                    rng = f"[{lows[j]}, {ups[j]}]" if link == "sigmoid" else f"[{lows[j]}, inf)"
                    raise ConfigError(f"train_Y[:, {j}] has values outside the link's range {rng}")

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return "weight_mean" in self._buffers

    def fit(self) -> QuadraticSurrogate:
        """Fit the coefficients' posterior to the training data, per output.

        Returns:
            ``self``, fitted.
        """
        X, Y = self.train_inputs_, self.train_targets_
        m = Y.shape[1]
        Phi = quadratic_features(self._normalize(X))
        means, covs, noises = [], [], []
        if self.link == "identity":
            self.register_buffer("y_mean", Y.mean(dim=0))
            std = Y.std(dim=0) if Y.shape[0] > 1 else torch.ones(m, dtype=Y.dtype)
            self.register_buffer("y_std", torch.where(std > 0, std, torch.ones_like(std)))
            Ys = (Y - self.y_mean) / self.y_std
            for j in range(m):
                w, S, noise, _ = evidence_fit(Phi, Ys[:, j])
                means.append(w), covs.append(S), noises.append(noise)
        else:
            for j in range(m):
                w, S, noise = link_fit(Phi, Y[:, j], self.link, self.lower[j], self.upper[j])
                means.append(w), covs.append(S), noises.append(noise)
        self.register_buffer("weight_mean", torch.stack(means))  # (m, p)
        self.register_buffer("weight_cov", torch.stack(covs))  # (m, p, p)
        self.register_buffer("noise", torch.tensor(noises, dtype=torch.float64))  # (m,)
        return self

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise NotFittedError(f"this {type(self).__name__} is built but not fitted; call fit() first")

    # -- BoTorch Model API ----------------------------------------------------------------------

    @property
    def num_outputs(self) -> int:
        return self.train_targets_.shape[1]

    @property
    def batch_shape(self) -> torch.Size:
        return torch.Size([])

    def _normalize(self, X: Tensor) -> Tensor:
        return (X - self.bounds[0]) / (self.bounds[1] - self.bounds[0])

    def subset_output(self, idcs: list[int]) -> QuadraticSurrogate:
        new = self.__class__.__new__(self.__class__)
        Model.__init__(new)
        new.link = self.link
        new.lower = [self.lower[i] for i in idcs]
        new.upper = [self.upper[i] for i in idcs]
        for name in ("bounds", "train_inputs_"):
            new.register_buffer(name, getattr(self, name))
        new.register_buffer("train_targets_", self.train_targets_[:, idcs])
        for name in ("weight_mean", "weight_cov", "noise", "y_mean", "y_std"):
            if hasattr(self, name):
                new.register_buffer(name, getattr(self, name)[idcs])
        return new

    def latent_mvns(self, X: Tensor, observation_noise: bool | Tensor = False) -> list[MultivariateNormal]:
        """Gaussian posteriors of ``eta`` (identity link: of the metric) per output.

        Args:
            X: Shape ``(..., q, d)``.
            observation_noise: Add the fitted noise variance (``True``), or a given
                noise variance (a tensor broadcastable to ``(..., q)``).
        """
        self._check_fitted()
        d = self.bounds.shape[1]
        if X.dim() < 2 or X.shape[-1] != d:
            raise ConfigError(f"X must have shape (..., q, {d}), got {tuple(X.shape)}")
        Phi = quadratic_features(self._normalize(X.to(self.weight_mean)))
        q = Phi.shape[-2]
        eye = torch.eye(q, dtype=Phi.dtype, device=Phi.device)
        mvns = []
        for j in range(self.num_outputs):
            mean = Phi @ self.weight_mean[j]
            cov = Phi @ self.weight_cov[j] @ Phi.transpose(-1, -2)
            cov = 0.5 * (cov + cov.transpose(-1, -2))
            fitted_noise = float(self.noise[j]) if observation_noise is True else 0.0
            cov = cov + (_jitter(cov) + fitted_noise) * eye
            if self.link == "identity":
                mean = mean * self.y_std[j] + self.y_mean[j]
                cov = cov * self.y_std[j] ** 2
            if isinstance(observation_noise, Tensor):  # given noise variances, in output units
                noise = observation_noise.to(cov)
                noise = noise[..., j] if noise.dim() >= 1 and noise.shape[-1] == self.num_outputs else noise
                cov = cov + torch.diag_embed(noise.expand(cov.shape[:-1]))
            mvns.append(MultivariateNormal(mean, cov))
        return mvns

    def posterior(
        self,
        X: Tensor,
        output_indices: list[int] | None = None,
        observation_noise: bool | Tensor = False,
        posterior_transform: Any | None = None,
        **kwargs: Any,
    ) -> Posterior:
        """Posterior at ``X`` (shape ``(..., q, d)``), event shape ``(..., q, m)``."""
        if output_indices is not None:
            bad = [i for i in output_indices if not 0 <= i < self.num_outputs]
            if bad:
                raise ConfigError(f"output_indices {bad} out of range for {self.num_outputs} outputs")
        model = self.subset_output(output_indices) if output_indices is not None else self
        noise = observation_noise if model.link == "identity" else False
        mvns = model.latent_mvns(X, observation_noise=noise)
        if len(mvns) == 1:
            inner = GPyTorchPosterior(mvns[0])  # event shape (..., q, 1)
        else:
            inner = GPyTorchPosterior(MultitaskMultivariateNormal.from_independent_mvns(mvns))
        wants_noise = isinstance(observation_noise, Tensor) or bool(observation_noise)
        posterior: Posterior = inner if model.link == "identity" else model._transformed(inner, wants_noise)
        if posterior_transform is not None:
            if model.link != "identity":
                raise UnsupportedError(
                    f"a posterior_transform needs a Gaussian posterior; the {model.link} link's is not. "
                    "Use a Monte-Carlo acquisition with an MC objective (e.g. qUpperConfidenceBound with "
                    "LinearMCObjective), or a single output without a transform"
                )
            return posterior_transform(posterior)
        return posterior

    # -- links -------------------------------------------------------------------------------------

    def _apply_link(self, eta: Tensor) -> Tensor:
        outputs = [
            link_functions(self.link, self.lower[j], self.upper[j])[0](eta[..., j]) for j in range(self.num_outputs)
        ]
        return torch.stack(outputs, dim=-1)

    def _quadrature(self, mean: Tensor, variance: Tensor, power: int) -> Tensor:
        nodes = _HERMITE_X.to(mean)
        weights = _HERMITE_W.to(mean) / math.sqrt(math.pi)
        eta = mean.unsqueeze(-1) + math.sqrt(2.0) * variance.clamp_min(0).sqrt().unsqueeze(-1) * nodes
        values = self._apply_link(eta.movedim(-1, 0)).movedim(0, -1)
        return (values**power * weights).sum(dim=-1)

    def _transformed(self, inner: GPyTorchPosterior, observation_noise: bool = False) -> TransformedPosterior:
        lower = torch.tensor(self.lower, dtype=torch.float64)
        upper = torch.tensor(
            self.upper if self.link == "sigmoid" else [math.inf] * len(self.lower), dtype=torch.float64
        )

        def mean_transform(mean: Tensor, variance: Tensor) -> Tensor:
            # quadrature weights sum to 1 only up to rounding: keep the mean exactly in range
            value = self._quadrature(mean, variance, 1)
            return torch.minimum(torch.maximum(value, lower.to(value)), upper.to(value))

        extra = self.noise if observation_noise else torch.zeros_like(self.noise)

        def variance_transform(mean: Tensor, variance: Tensor) -> Tensor:
            first = self._quadrature(mean, variance, 1)
            return (self._quadrature(mean, variance, 2) - first**2).clamp_min(0.0) + extra.to(mean)

        return TransformedPosterior(inner, self._apply_link, mean_transform, variance_transform)

    # -- inspection ----------------------------------------------------------------------------------

    def coefficients(self, output: int = 0) -> tuple[Tensor, Tensor, float]:
        """``(A, b, e)`` of ``eta(x) = 1/2 x^T A x + b^T x + e`` in the original input space.

        The posterior mean of ``eta`` is exactly quadratic in ``x``, so its
        coefficients are recovered by solving the feature regression in ``x`` on
        ``(d + 1)(d + 2)/2`` generic points.

        Raises:
            NotFittedError: :meth:`fit` has not run.
        """
        self._check_fitted()
        d = self.bounds.shape[1]
        p = (d + 1) * (d + 2) // 2
        g = torch.Generator().manual_seed(0)
        X = self.bounds[0] + (self.bounds[1] - self.bounds[0]) * torch.rand(3 * p, d, generator=g, dtype=torch.float64)
        eta = quadratic_features(self._normalize(X)) @ self.weight_mean[output]
        if self.link == "identity":
            eta = eta * self.y_std[output] + self.y_mean[output]
        w = torch.linalg.lstsq(quadratic_features(X), eta.unsqueeze(-1)).solution.squeeze(-1)
        i, j = torch.triu_indices(d, d, offset=1)
        A = torch.diag(2.0 * w[:d])
        A[i, j] = w[d : d + len(i)]
        A[j, i] = w[d : d + len(i)]
        return A, w[d + len(i) : d + len(i) + d], float(w[-1])


def _per_output(value: float | Sequence[float], m: int, name: str) -> list[float]:
    if isinstance(value, (int, float)):
        return [float(value)] * m
    values = [float(v) for v in value]
    if len(values) != m:
        raise ConfigError(f"{name} has {len(values)} values for {m} outputs")
    return values
