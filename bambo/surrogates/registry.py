"""One registry of surrogates: build by name, fit as a separate step.

Each entry of :data:`SURROGATES` is a builder ``(train_X, train_Y, bounds=None,
**options) -> Model`` that returns the model *not fitted*; :func:`fit_model` fits any
model a builder returns; :func:`fit_surrogate` does both. A new surrogate is one module
with a builder, one line in :data:`SURROGATES`, and (if it is neither an exact GP nor
has a ``fit()`` method) one case in :func:`fit_model`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from botorch.models import ModelListGP
from botorch.models.model import Model
from gpytorch.models import ExactGP
from torch import Tensor

from bambo.errors import ConfigError, UnknownNameError
from bambo.surrogates.gp import build_gp, build_quadratic_mean_gp, fit_gp_model
from bambo.surrogates.parametric import build_parametric_task_gp
from bambo.surrogates.quadratic import QuadraticSurrogate

SURROGATES: dict[str, Callable[..., Model]] = {
    "quadratic": partial(QuadraticSurrogate, link="identity"),
    "quadratic-sigmoid": partial(QuadraticSurrogate, link="sigmoid"),
    "quadratic-softplus": partial(QuadraticSurrogate, link="softplus"),
    "gp": build_gp,
    "quadratic-mean-gp": build_quadratic_mean_gp,
    "parametric-task-gp": build_parametric_task_gp,
}


def available_surrogates() -> list[str]:
    """Registered surrogate names."""
    return list(SURROGATES)


def _options_of(builder: Callable[..., Model]) -> list[str]:
    fixed = builder.keywords if isinstance(builder, partial) else {}
    target = builder.func if isinstance(builder, partial) else builder
    names = list(inspect.signature(target).parameters)
    return [n for n in names if n not in ("self", "train_X", "train_Y", "bounds") and n not in fixed]


def build_surrogate(spec: str, train_X: Tensor, train_Y: Tensor, bounds: Tensor | None = None, **options: Any) -> Model:
    """Build a registered surrogate on its training data, without fitting it.

    Args:
        spec: A name from :data:`SURROGATES`.
        train_X: Shape ``(n, d)``.
        train_Y: Shape ``(n, m)``, completed evaluations only.
        bounds: Input bounds ``(2, d)`` (default: the data's range).
        **options: The surrogate's options (e.g. ``lower``/``upper`` for the links,
            ``task_dims`` for the parametric-task GP).

    Returns:
        A BoTorch ``Model`` with ``m`` outputs, to be fitted by :func:`fit_model`.

    Raises:
        UnknownNameError: Unknown spec; the message lists the valid names.
        ConfigError: An unknown option, or bad data.
    """
    if spec not in SURROGATES:
        raise UnknownNameError("surrogate", spec, SURROGATES)
    builder = SURROGATES[spec]
    allowed = _options_of(builder)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"surrogate {spec!r} has no options {unknown}; its options: {', '.join(allowed) or 'none'}")
    return builder(train_X, train_Y, bounds=bounds, **options)


def fit_model(model: Model, start: Mapping[str, Sequence] | None = None) -> Model:
    """Fit a built surrogate in place: exact GPs (and lists of them) by marginal likelihood,
    models with a ``fit()`` method (:class:`~bambo.surrogates.quadratic.QuadraticSurrogate`) by it.

    Args:
        model: A model from a builder of :data:`SURROGATES`.
        start: Raw hyperparameters to start an exact GP's fit from (see
            :func:`~bambo.surrogates.gp.fit_gp_model`); other models ignore it.

    Returns:
        The same model, fitted.

    Raises:
        ConfigError: A model this function cannot fit; the message names its type.
    """
    if isinstance(model, ModelListGP | ExactGP):
        return fit_gp_model(model, start)
    fit = getattr(model, "fit", None)
    if callable(fit):
        fit()
        return model
    raise ConfigError(f"cannot fit a {type(model).__name__}: neither an exact GP nor a model with a fit() method")


def fit_surrogate(spec: str, train_X: Tensor, train_Y: Tensor, bounds: Tensor | None = None, **options: Any) -> Model:
    """Build and fit a registered surrogate (:func:`build_surrogate`, then :func:`fit_model`).

    Args:
        spec: A name from :data:`SURROGATES`.
        train_X: Shape ``(n, d)``.
        train_Y: Shape ``(n, m)``, completed evaluations only.
        bounds: Input bounds ``(2, d)`` (default: the data's range).
        **options: The surrogate's options (see :func:`build_surrogate`).

    Returns:
        A fitted BoTorch ``Model`` with ``m`` outputs.

    Raises:
        UnknownNameError: Unknown spec; the message lists the valid names.
        ConfigError: An unknown option, or bad data.
    """
    return fit_model(build_surrogate(spec, train_X, train_Y, bounds=bounds, **options))
