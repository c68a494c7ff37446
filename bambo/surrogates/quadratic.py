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
from typing import Any, Literal

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
from bambo.surrogates.data import check_training_data, resolve_bounds

Link = Literal["identity", "sigmoid", "softplus"]
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


def _log_evidence(
    alpha: Tensor, beta: Tensor, singular: Tensor, projected: Tensor, outside: float, n: int, p: int
) -> Tensor:
    """Log evidence of Bayesian linear regression in the SVD basis of the features.

    Args:
        alpha: Prior precisions, any shape ``S`` broadcastable with ``beta``.
        beta: Noise precisions, broadcastable with ``alpha``.
        singular: Singular values of ``Phi``, shape ``(k,)``, ``k = min(n, p)``.
        projected: ``U^T y``, shape ``(k,)``.
        outside: ``||y - U U^T y||^2``, the part of ``y`` no weights can fit.
        n: Number of points.
        p: Number of features.

    Returns:
        Log evidence, shape ``broadcast(alpha, beta)``.
    """
    alpha, beta = torch.broadcast_tensors(alpha, beta)
    a, b = alpha.unsqueeze(-1), beta.unsqueeze(-1)
    denominator = a + b * singular**2  # eigenvalues of the posterior precision in the row space
    residual = outside + ((projected * a / denominator) ** 2).sum(-1)
    weight_norm = ((b * singular * projected / denominator) ** 2).sum(-1)
    log_det = torch.log(denominator).sum(-1) + (p - singular.numel()) * torch.log(alpha)
    return 0.5 * (
        p * torch.log(alpha)
        + n * torch.log(beta)
        - beta * residual
        - alpha * weight_norm
        - log_det
        - n * math.log(2 * math.pi)
    )


def evidence_fit(Phi: Tensor, y: Tensor, iterations: int = 200) -> tuple[Tensor, Tensor, float, float]:
    """Bayesian linear regression with evidence-optimal ``alpha``, ``beta`` (type-II ML).

    The log evidence can have several local maxima (e.g. "part of ``y`` is noise"
    next to "``y`` is exact"), so it is searched globally: on a log grid of
    ``(alpha, beta)`` (cheap in the SVD basis of ``Phi``), then refined from the
    best grid point by MacKay's fixed-point updates, keeping whichever is higher.
    The noise variance ranges from ``1e4`` down to ``1e-12`` times ``var(y)``.

    When the points leave no residual degree of freedom (``Phi`` has full row
    rank, e.g. ``n <= p`` distinct points), every ``y`` is fitted exactly and the
    data say nothing about the noise; the evidence's preference then only
    reflects how well the prior matches ``w``. The noise-free limit (the
    least-squares interpolant of MAP's Corollary 1) is taken, and only ``alpha``
    is chosen by the evidence. Likewise, whenever the evidence's optimum is at
    the lowest noise considered, the posterior mean is the noise-free limit (the
    least-squares solution) rather than the slightly shrunk fit at that noise.

    With very few points the evidence prefers a large ``alpha`` (a flat function),
    and the posterior of ``f`` would then claim certainty about a flat function,
    the worst belief to start a search from; so ``alpha`` is capped at the mean of
    ``||phi(x_i)||^2`` over ``var(y)``, which keeps the prior standard deviation of
    ``f`` at about the data's own spread wherever the data cannot say more.

    Args:
        Phi: Features, shape ``(n, p)``.
        y: Targets, shape ``(n,)``.
        iterations: Most fixed-point updates of the refinement.

    Returns:
        ``(posterior mean (p,), posterior covariance (p, p), noise variance 1/beta, prior precision alpha)``.
    """
    n, p = Phi.shape
    U, singular, Vh = torch.linalg.svd(Phi, full_matrices=False)
    projected = U.T @ y
    outside = float(((y - U @ projected) ** 2).sum())
    top = float(singular.max()) if singular.numel() else 0.0
    rank = int((singular > top * max(n, p) * torch.finfo(Phi.dtype).eps).sum()) if top > 0 else 0
    scale = max(float(y.var()) if n > 1 else 1.0, 1e-12)
    alpha_max = max(float((Phi * Phi).sum(dim=1).mean()) / scale, 1e-6)
    alpha_min = min(1e-8, alpha_max)
    beta_max = 1e12 / scale
    beta_min = beta_max if rank >= n else 1e-4 / scale

    def evidence(alpha: Tensor, beta: Tensor) -> Tensor:
        return _log_evidence(alpha, beta, singular, projected, outside, n, p)

    alphas = torch.logspace(math.log10(alpha_min), math.log10(alpha_max), 41, dtype=Phi.dtype)
    n_betas = 49 if beta_min < beta_max else 1
    betas = torch.logspace(math.log10(beta_min), math.log10(beta_max), n_betas, dtype=Phi.dtype)
    grid = evidence(alphas.unsqueeze(-1), betas)
    row, column = divmod(int(grid.argmax()), betas.numel())
    best = (float(grid[row, column]), float(alphas[row]), float(betas[column]))
    eig = singular**2
    alpha, beta = best[1], best[2]
    for _ in range(iterations):  # MacKay's updates from the best grid point
        denominator = alpha + beta * eig
        gamma = float((beta * eig / denominator).sum())
        weight_norm = float(((beta * singular * projected / denominator) ** 2).sum())
        residual = outside + float(((projected * alpha / denominator) ** 2).sum())
        new_alpha = min(max(gamma / max(weight_norm, 1e-300), alpha_min), alpha_max)
        new_beta = min(max((n - gamma) / max(residual, 1e-300), beta_min), beta_max)
        converged = abs(math.log(new_alpha / alpha)) < 1e-7 and abs(math.log(new_beta / beta)) < 1e-7
        alpha, beta = new_alpha, new_beta
        if converged:
            break
    refined = float(evidence(torch.tensor(alpha, dtype=Phi.dtype), torch.tensor(beta, dtype=Phi.dtype)))
    if refined > best[0]:
        best = (refined, alpha, beta)
    _, alpha, beta = best
    denominator = alpha + beta * eig
    if rank >= n or beta >= beta_max * (1.0 - 1e-9):
        # The evidence wants no noise: take the noise-free limit (beta -> inf) itself, the least-squares
        # solution on the row space of Phi, rather than the slight shrinkage of the cap.
        m = Vh[:rank].T @ (projected[:rank] / singular[:rank])
    else:
        m = Vh.T @ (beta * singular * projected / denominator)
    row_space = Vh.T @ Vh
    cov = (Vh.T / denominator) @ Vh + (torch.eye(p, dtype=Phi.dtype) - row_space) / alpha
    return m, 0.5 * (cov + cov.T), 1.0 / beta, alpha


def _inverse_softplus(v: Tensor) -> Tensor:
    """``log(exp(v) - 1)`` without overflow: ``v + log(-expm1(-v))``."""
    return v + torch.log(-torch.expm1(-v))


def _link_fns(link: Link, lower: float, upper: float) -> tuple[Any, Any, Any]:
    """(g, g', g^-1) of a link, on tensors."""
    if link == "sigmoid":
        scale = upper - lower
        return (
            lambda eta: (lower + scale * torch.sigmoid(eta)).clamp(lower, upper),  # exact range despite rounding
            lambda eta: scale * torch.sigmoid(eta) * (1.0 - torch.sigmoid(eta)),
            lambda y: torch.logit(((y - lower) / scale).clamp(1e-4, 1.0 - 1e-4)),
        )
    if link == "softplus":
        return (
            lambda eta: lower + torch.nn.functional.softplus(eta),
            lambda eta: torch.sigmoid(eta),
            lambda y: _inverse_softplus((y - lower).clamp_min(1e-4)),
        )
    raise ConfigError(f"unknown link {link!r}; valid: identity, sigmoid, softplus")


def _link_fit(
    Phi: Tensor, y: Tensor, link: Link, lower: float, upper: float, iterations: int = 100
) -> tuple[Tensor, Tensor, float]:
    """MAP Eq. 5 by Gauss-Newton with the evidence of each linearised problem, and its Laplace posterior.

    The start is the evidence fit of the clamped latent problem ``g^-1(y) ~ Phi w``
    (targets clamped away from the link's bounds, so that a metric at its bound
    cannot pull the start to infinity). Then, MacKay's evidence framework for
    non-linear regression: at ``w``, the model is linearised,
    ``y ~ g(Phi w) + J (w' - w)`` with ``J = g'(Phi w) Phi``, and the evidence fit
    of that linear problem (prior ``N(centre, alpha^-1 I)``) gives the next ``w'``
    and the prior and noise precisions; a step that raises the penalised squared
    error ``||g(Phi w) - y||^2 + (alpha / beta) ||w - centre||^2`` is halved. This
    works on the unclamped outputs, so exact data are fitted exactly also where the
    link saturates (targets within ``1e-4`` of a bound), and noisy data are
    regularised as the evidence says. The posterior is the last linearised one
    (Gauss-Newton Hessian: a Laplace approximation).

    Args:
        Phi: Features, shape ``(n, p)``.
        y: Targets inside the link's range, shape ``(n,)``.
        link: ``"sigmoid"`` or ``"softplus"``.
        lower: ``l`` of the link.
        upper: ``u`` of the sigmoid link.
        iterations: Most Gauss-Newton steps.

    Returns:
        ``(weights (p,), weight covariance (p, p), noise variance in output units)``.
    """
    g, dg, g_inv = _link_fns(link, lower, upper)
    p = Phi.shape[1]
    # The prior is centred on the constant model eta = mean(g^-1(y)) (the last feature is
    # the intercept), so scarce data shrinks towards the data's level, not towards g(0).
    latent = g_inv(y)
    centre = torch.zeros(p, dtype=Phi.dtype)
    centre[-1] = latent.mean()
    delta, _, _, _ = evidence_fit(Phi, latent - centre[-1])
    w = centre + delta

    def linearised(w: Tensor) -> tuple[Tensor, Tensor, float, float]:
        eta = Phi @ w
        J = dg(eta).unsqueeze(-1) * Phi
        return evidence_fit(J, y - g(eta) + J @ (w - centre))

    def penalised(w: Tensor, ridge: float) -> float:
        return float(((g(Phi @ w) - y) ** 2).sum()) + ridge * float((w - centre) @ (w - centre))

    for _ in range(iterations):
        delta, _, noise, alpha = linearised(w)
        ridge = alpha * noise
        step = centre + delta - w
        current = penalised(w, ridge)
        for _ in range(40):
            if penalised(w + step, ridge) <= current:
                break
            step = 0.5 * step
        else:
            break  # no step lowers the penalised error: converged as far as rounding allows
        w = w + step
        if float(step.abs().max()) <= 1e-12 * (1.0 + float(w.abs().max())):
            break
    _, cov, noise, _ = linearised(w)
    return w, cov, noise


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
            _link_fns(link, 0.0, 1.0)  # validates the name
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
                w, S, noise = _link_fit(Phi, Y[:, j], self.link, self.lower[j], self.upper[j])
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
        outputs = [_link_fns(self.link, self.lower[j], self.upper[j])[0](eta[..., j]) for j in range(self.num_outputs)]
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
