"""Surrogates behind one model interface: every one is a BoTorch ``Model``, built then fitted."""

from bambo.surrogates.gp import (
    QuadraticMean,
    batched_gp,
    build_gp,
    build_quadratic_mean_gp,
    fit_gp,
    fit_gp_model,
    fit_quadratic_mean_gp,
    hyperparameters,
    set_hyperparameters,
)
from bambo.surrogates.parametric import ParametricTaskGP, build_parametric_task_gp, fit_parametric_task_gp
from bambo.surrogates.quadratic import QuadraticSurrogate, quadratic_features
from bambo.surrogates.registry import SURROGATES, available_surrogates, build_surrogate, fit_model, fit_surrogate
from bambo.surrogates.task_model import TaskModel

__all__ = [
    "SURROGATES",
    "ParametricTaskGP",
    "QuadraticMean",
    "QuadraticSurrogate",
    "TaskModel",
    "available_surrogates",
    "batched_gp",
    "build_gp",
    "build_parametric_task_gp",
    "build_quadratic_mean_gp",
    "build_surrogate",
    "fit_gp",
    "fit_gp_model",
    "fit_model",
    "fit_parametric_task_gp",
    "fit_quadratic_mean_gp",
    "fit_surrogate",
    "hyperparameters",
    "quadratic_features",
    "set_hyperparameters",
]
