"""Bayesian linear regression with evidence-chosen precisions: the fitting of MAP's quadratic.

:func:`evidence_fit` fits ``y ~ Phi w`` with prior ``w ~ N(0, alpha^-1 I)`` and noise
precision ``beta``, both maximising the evidence (a global grid search refined by MacKay's
fixed-point updates; with no residual degree of freedom the noise-free limit, which
interpolates). :func:`link_fit` fits ``y ~ g(Phi w)`` for MAP's sigmoid and softplus links
(MAP Eq. 5) by Gauss-Newton, the evidence of each linearised problem choosing the ridge.
:class:`~bambo.surrogates.quadratic.QuadraticSurrogate` is the BoTorch model built on them.

Written here because neither BoTorch nor scikit-learn's ``BayesianRidge`` (MacKay's updates from
one start, no link) fits this model.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from bambo.errors import ConfigError

Link = Literal["identity", "sigmoid", "softplus"]


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


def link_functions(link: Link, lower: float, upper: float) -> tuple[Any, Any, Any]:
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


def link_fit(
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
    g, dg, g_inv = link_functions(link, lower, upper)
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
