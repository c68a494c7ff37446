"""Surrogates behind one model interface: every one is a BoTorch ``Model``."""

from bambo.surrogates.gp import QuadraticMean, fit_gp, fit_quadratic_mean_gp
from bambo.surrogates.parametric import ParametricTaskGP, acquisition_for_task, fit_parametric_task_gp
from bambo.surrogates.quadratic import QuadraticSurrogate, quadratic_features
from bambo.surrogates.registry import SURROGATES, available_surrogates, fit_surrogate
from bambo.surrogates.task_model import TaskModel

__all__ = [
    "SURROGATES",
    "ParametricTaskGP",
    "QuadraticMean",
    "QuadraticSurrogate",
    "TaskModel",
    "acquisition_for_task",
    "available_surrogates",
    "fit_gp",
    "fit_parametric_task_gp",
    "fit_quadratic_mean_gp",
    "fit_surrogate",
    "quadratic_features",
]
