"""Checks and normalisation of surrogate training data, shared by every surrogate."""

from __future__ import annotations

import torch
from torch import Tensor

from bambo.errors import ConfigError


def check_training_data(train_X: Tensor, train_Y: Tensor) -> tuple[Tensor, Tensor]:
    """Validate and cast training data to float64.

    Args:
        train_X: Shape ``(n, d)``.
        train_Y: Shape ``(n, m)`` (a 1-D ``(n,)`` tensor is one output).

    Raises:
        ConfigError: Wrong shapes, no points, or non-finite values (failed
            evaluations must be dropped before fitting).
    """
    X = torch.as_tensor(train_X, dtype=torch.float64)
    Y = torch.as_tensor(train_Y, dtype=torch.float64)
    if Y.dim() == 1:
        Y = Y.unsqueeze(-1)
    if X.dim() != 2 or Y.dim() != 2:
        raise ConfigError(f"train_X must be (n, d) and train_Y (n, m), got {tuple(X.shape)} and {tuple(Y.shape)}")
    if X.shape[0] != Y.shape[0]:
        raise ConfigError(f"train_X has {X.shape[0]} points but train_Y has {Y.shape[0]}")
    if X.shape[0] == 0:
        raise ConfigError("no training points")
    if not torch.isfinite(X).all():
        raise ConfigError("train_X contains non-finite values")
    if not torch.isfinite(Y).all():
        raise ConfigError("train_Y contains non-finite values; drop failed evaluations before fitting")
    return X, Y


def resolve_bounds(X: Tensor, bounds: Tensor | None) -> Tensor:
    """Input bounds ``(2, d)``: the given ones, or the data's range (unit width where constant)."""
    if bounds is not None:
        b = torch.as_tensor(bounds, dtype=torch.float64)
        if b.shape != (2, X.shape[1]):
            raise ConfigError(f"bounds must have shape (2, {X.shape[1]}), got {tuple(b.shape)}")
        if (b[1] <= b[0]).any():
            raise ConfigError(f"bounds need lower < upper, got {b.tolist()}")
        return b
    lower, upper = X.min(dim=0).values, X.max(dim=0).values
    upper = torch.where(upper > lower, upper, lower + 1.0)
    return torch.stack([lower, upper])
