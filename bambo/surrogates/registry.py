"""One registry of surrogates and one entry point, ``fit_surrogate``.

A new surrogate is one module with a builder ``(train_X, train_Y, bounds=None,
**options) -> Model`` and one line in :data:`SURROGATES`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

from botorch.models.model import Model
from torch import Tensor

from bambo.errors import ConfigError, UnknownNameError
from bambo.surrogates.gp import fit_gp, fit_quadratic_mean_gp
from bambo.surrogates.parametric import fit_parametric_task_gp
from bambo.surrogates.quadratic import QuadraticSurrogate

SURROGATES: dict[str, Callable[..., Model]] = {
    "quadratic": partial(QuadraticSurrogate, link="identity"),
    "quadratic-sigmoid": partial(QuadraticSurrogate, link="sigmoid"),
    "quadratic-softplus": partial(QuadraticSurrogate, link="softplus"),
    "gp": fit_gp,
    "quadratic-mean-gp": fit_quadratic_mean_gp,
    "parametric-task-gp": fit_parametric_task_gp,
}


def available_surrogates() -> list[str]:
    """Registered surrogate names."""
    return list(SURROGATES)


def _options_of(builder: Callable[..., Model]) -> list[str]:
    fixed = builder.keywords if isinstance(builder, partial) else {}
    target = builder.func if isinstance(builder, partial) else builder
    names = list(inspect.signature(target).parameters)
    return [n for n in names if n not in ("self", "train_X", "train_Y", "bounds") and n not in fixed]


def fit_surrogate(spec: str, train_X: Tensor, train_Y: Tensor, bounds: Tensor | None = None, **options: Any) -> Model:
    """Fit a registered surrogate.

    Args:
        spec: A name from :data:`SURROGATES`.
        train_X: Shape ``(n, d)``.
        train_Y: Shape ``(n, m)``, completed evaluations only.
        bounds: Input bounds ``(2, d)`` (default: the data's range).
        **options: The surrogate's options (e.g. ``lower``/``upper`` for the links,
            ``task_dims`` for the parametric-task GP).

    Returns:
        A fitted BoTorch ``Model`` with ``m`` outputs.

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
