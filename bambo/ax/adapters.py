"""bambo's surrogates inside Ax's modular BoTorch generator.

``client.set_generation_strategy(generation_strategy("quadratic"))`` runs Ax's modular
BoTorch generator on a bambo surrogate (:data:`AX_SURROGATES`; :func:`generator_kwargs`
and :func:`surrogate_spec` serve hand-built strategies). Ax builds the models from its
unit-cube inputs and standardises outcomes, except for the quadratic's sigmoid and
softplus links, whose ``lower``/``upper`` are in metric units. Ax builds a model, then
fits it through ``fit_botorch_model``; :func:`register_with_ax` adds the quadratic's fit
dispatch and the JSON-storage registry entries (the functions here call it; a process
that only *loads* a saved strategy must call it first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from ax.adapter.registry import Generators, MBM_X_trans, Y_trans
from ax.adapter.transforms.standardize_y import StandardizeY
from ax.core.trial_status import TrialStatus
from ax.generation_strategy.generation_node import GenerationNode
from ax.generation_strategy.generation_strategy import GenerationStrategy
from ax.generation_strategy.generator_spec import GeneratorSpec
from ax.generation_strategy.transition_criterion import MinTrials
from ax.generators.torch.botorch_modular.surrogate import SurrogateSpec
from ax.generators.torch.botorch_modular.utils import ModelConfig, fit_botorch_model
from ax.storage.botorch_modular_registry import register_model
from botorch.models import SingleTaskGP
from botorch.models.model import Model
from botorch.models.transforms.input import InputTransform
from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
from botorch.posteriors.posterior import Posterior
from botorch.utils.datasets import SupervisedDataset
from gpytorch.likelihoods import Likelihood
from torch import Tensor

from bambo.errors import ConfigError, UnknownNameError
from bambo.extensions import prepare_fused_kernel
from bambo.surrogates.gp import QuadraticMean, _evidence_init
from bambo.surrogates.quadratic import Link, QuadraticSurrogate

__all__ = [
    "AX_SURROGATES",
    "AxGP",
    "AxQuadraticSurrogate",
    "generation_strategy",
    "generator_kwargs",
    "register_with_ax",
    "surrogate_spec",
]


def _transformed(train_X: Tensor, input_transform: InputTransform | None) -> Tensor:
    if input_transform is None:
        return train_X
    input_transform.to(train_X)
    with torch.no_grad():
        return input_transform.preprocess_transform(train_X)


def _unit_bounds(X: Tensor) -> Tensor:
    return torch.stack([torch.zeros(X.shape[-1]), torch.ones(X.shape[-1])]).to(X)


class _AxInputs:
    @classmethod
    def construct_inputs(cls, training_data: SupervisedDataset, **options: Any) -> dict[str, Any]:
        """Training data plus the ``model_options`` of an Ax ``ModelConfig``."""
        return {**Model.construct_inputs(training_data), **options}


class AxQuadraticSurrogate(_AxInputs, QuadraticSurrogate):
    """:class:`~bambo.surrogates.quadratic.QuadraticSurrogate` with the constructor Ax calls.

    Built on unit-cube inputs (Ax's ``UnitX``) and fitted by Ax's ``fit_botorch_model``
    (dispatched to :meth:`~bambo.surrogates.quadratic.QuadraticSurrogate.fit` by
    :func:`register_with_ax`). A loaded state dict is not used: Ax loads one to reuse GP
    hyperparameters (e.g. in cross-validation, without refitting); the quadratic has none,
    so it is fitted to its own data instead. ``train_Yvar`` is ignored: the quadratic
    estimates its own noise.

    Args:
        train_X: Shape ``(n, d)``.
        train_Y: Shape ``(n, m)``.
        train_Yvar: Ignored.
        input_transform: Applied to inputs before the quadratic features.
        link: ``"identity"``, ``"sigmoid"`` or ``"softplus"``.
        lower: ``l`` of the links, in metric units.
        upper: ``u`` of the sigmoid link, in metric units.
    """

    def __init__(
        self,
        train_X: Tensor,
        train_Y: Tensor,
        train_Yvar: Tensor | None = None,
        input_transform: InputTransform | None = None,
        link: Link = "identity",
        lower: float | Sequence[float] = 0.0,
        upper: float | Sequence[float] = 1.0,
    ) -> None:
        X = _transformed(train_X, input_transform)
        inside = bool(((X >= 0) & (X <= 1)).all())
        super().__init__(X, train_Y, bounds=_unit_bounds(X) if inside else None, link=link, lower=lower, upper=upper)
        if input_transform is not None:
            self.input_transform = input_transform

    def posterior(self, X: Tensor, output_indices: list[int] | None = None, **kwargs: Any) -> Posterior:
        """The posterior at untransformed inputs ``X``; see :meth:`QuadraticSurrogate.posterior`."""
        return super().posterior(self.transform_inputs(X), output_indices=output_indices, **kwargs)

    def subset_output(self, idcs: list[int]) -> AxQuadraticSurrogate:
        new = super().subset_output(idcs)
        if hasattr(self, "input_transform"):
            new.input_transform = self.input_transform
        return new

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> None:
        """Not used: the model is fitted to its own data (if it is not already)."""
        if not self.fitted:
            self.fit()


class AxGP(_AxInputs, SingleTaskGP):
    """BAMBO's GP for Ax, one per outcome: a ``SingleTaskGP`` with a Matern-5/2 ARD kernel and
    BoTorch's dimension-scaled lengthscale prior (Ax's default kernel is RBF), optionally with
    MAP's quadratic as a learned prior mean (as :func:`~bambo.surrogates.gp.fit_quadratic_mean_gp`,
    started at the Bayesian quadratic's evidence fit on the unit-cube inputs).

    Args:
        train_X: Shape ``(n, d)``.
        train_Y: Shape ``(n, 1)``.
        train_Yvar: Observed noise variances, or ``None`` to infer the noise.
        likelihood: A likelihood (default: Gaussian).
        covar_module: A kernel (default: the Matern-5/2 above).
        outcome_transform: An outcome transform (default: none; Ax standardises outcomes).
        input_transform: An input transform.
        quadratic_mean: Use the learned quadratic prior mean (else a constant mean).
        prior_std: Prior standard deviation of the quadratic's coefficients (default:
            empirical Bayes from the evidence fit).
        learn_mean: Learn the quadratic's coefficients by marginal likelihood.
    """

    _supports_batched_models = False  # Ax then builds a ModelListGP of single-output models

    def __init__(
        self,
        train_X: Tensor,
        train_Y: Tensor,
        train_Yvar: Tensor | None = None,
        likelihood: Likelihood | None = None,
        covar_module: torch.nn.Module | None = None,
        outcome_transform: Any = None,
        input_transform: InputTransform | None = None,
        quadratic_mean: bool = False,
        prior_std: float | None = None,
        learn_mean: bool = True,
    ) -> None:
        if train_Y.dim() != 2 or train_Y.shape[-1] != 1:
            raise ConfigError(f"AxGP models one outcome, got train_Y of shape {tuple(train_Y.shape)}")
        d = train_X.shape[-1]
        if covar_module is None:
            covar_module = get_covar_module_with_dim_scaled_prior(ard_num_dims=d, use_rbf_kernel=False)
        mean = None
        if quadratic_mean:
            Z = _transformed(train_X, input_transform).to(torch.float64)
            init, width = _evidence_init(Z, train_Y[:, 0].to(torch.float64), _unit_bounds(Z))
            mean = QuadraticMean(d, init, prior_std if prior_std is not None else width, learn=learn_mean).to(train_X)
        transforms = {"outcome_transform": outcome_transform, "input_transform": input_transform}
        super().__init__(train_X, train_Y, train_Yvar, likelihood, covar_module, mean, **transforms)


# name -> (model class, its fixed options, its user options, whether Ax must not standardise outcomes)
_AX_MODELS: dict[str, tuple[type[Model], dict[str, Any], tuple[str, ...], bool]] = {
    "quadratic": (AxQuadraticSurrogate, {"link": "identity"}, (), False),
    "quadratic-sigmoid": (AxQuadraticSurrogate, {"link": "sigmoid"}, ("lower", "upper"), True),
    "quadratic-softplus": (AxQuadraticSurrogate, {"link": "softplus"}, ("lower",), True),
    "gp": (AxGP, {}, (), False),
    "quadratic-mean-gp": (AxGP, {"quadratic_mean": True}, ("prior_std", "learn_mean"), False),
}
_NOT_IN_AX = {"parametric-task-gp": "it models a task parameter next to x; in Ax, use a task (choice) parameter"}
AX_SURROGATES: tuple[str, ...] = tuple(_AX_MODELS)
_registered = False


def _fit_quadratic(
    model: AxQuadraticSurrogate, mll_class: Any = None, mll_options: dict[str, Any] | None = None
) -> None:
    """Ax's fit of the quadratic: its own fit (it has no marginal likelihood to optimise)."""
    model.fit()


def register_with_ax() -> None:
    """Register bambo's models with Ax: a fit dispatch for :class:`AxQuadraticSurrogate` (the GPs
    use Ax's GPyTorch one) and JSON-storage registry entries. Idempotent."""
    global _registered
    if not _registered:
        fit_botorch_model.register(AxQuadraticSurrogate)(_fit_quadratic)
        register_model(AxQuadraticSurrogate)
        register_model(AxGP)
        _registered = True


def surrogate_spec(name: str, **options: Any) -> SurrogateSpec:
    """An Ax ``SurrogateSpec`` with one bambo model per outcome (registers bambo with Ax).

    Args:
        name: One of :data:`AX_SURROGATES`.
        **options: ``lower``/``upper`` of the links (metric units, default 0 and 1),
            ``prior_std``/``learn_mean`` of the quadratic-mean GP.

    Returns:
        The spec (for the links, :func:`generator_kwargs` also turns off ``StandardizeY``).

    Raises:
        ConfigError: Unknown name or option, or a surrogate Ax cannot use; names the supported ones.
    """
    if name in _NOT_IN_AX:
        raise ConfigError(f"surrogate {name!r} cannot be used in Ax: {_NOT_IN_AX[name]}; supported: {AX_SURROGATES}")
    if name not in _AX_MODELS:
        raise UnknownNameError("Ax surrogate", name, AX_SURROGATES)
    cls, fixed, allowed, _ = _AX_MODELS[name]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"Ax surrogate {name!r} has no options {unknown}; its options: {list(allowed)}")
    register_with_ax()
    config = ModelConfig(botorch_model_class=cls, model_options={**fixed, **options}, name=f"bambo:{name}")
    return SurrogateSpec(model_configs=[config], allow_batched_models=False)


def generator_kwargs(name: str, **options: Any) -> dict[str, Any]:
    """``generator_kwargs`` of an Ax ``GeneratorSpec(Generators.BOTORCH_MODULAR, ...)`` for a
    bambo surrogate: its :func:`surrogate_spec`, and for the sigmoid and softplus links
    Ax's default transforms without ``StandardizeY``."""
    kwargs: dict[str, Any] = {"surrogate_spec": surrogate_spec(name, **options)}
    if _AX_MODELS[name][3]:
        kwargs["transforms"] = MBM_X_trans + [t for t in Y_trans if t is not StandardizeY]
    return kwargs


def generation_strategy(
    name: str = "quadratic",
    n_initial: int = 5,
    seed: int | None = None,
    num_restarts: int | None = None,
    raw_samples: int | None = None,
    **options: Any,
) -> GenerationStrategy:
    """Sobol trials, then Ax's modular BoTorch generator (qLogNEHVI for several objectives)
    on a bambo surrogate.

    Args:
        name: One of :data:`AX_SURROGATES`.
        n_initial: Sobol trials before the model takes over (failed ones do not count).
        seed: Seed of the Sobol sequence.
        num_restarts: Restarts of the acquisition optimiser (default: Ax's).
        raw_samples: Raw samples of the acquisition optimiser (default: Ax's).
        **options: See :func:`surrogate_spec`.

    Returns:
        A strategy for ``Client.set_generation_strategy``.
    """
    if n_initial < 1:
        raise ConfigError(f"n_initial must be >= 1, got {n_initial}")
    prepare_fused_kernel()  # before Ax builds a qLogNEHVI: BoTorch's own build can hang on a stale lock
    optimizer = {k: v for k, v in {"num_restarts": num_restarts, "raw_samples": raw_samples}.items() if v is not None}
    mbm = GeneratorSpec(
        generator_enum=Generators.BOTORCH_MODULAR,
        generator_kwargs=generator_kwargs(name, **options),
        generator_gen_kwargs={"model_gen_options": {"optimizer_kwargs": optimizer}} if optimizer else {},
    )
    every = {"use_all_trials_in_exp": True}
    criteria = [  # n_initial trials proposed (failed ones not counted) and n_initial completed
        MinTrials(n_initial, "MBM", not_in_statuses=[TrialStatus.FAILED, TrialStatus.ABANDONED], **every),
        MinTrials(
            n_initial, "MBM", only_in_statuses=[TrialStatus.COMPLETED], count_only_trials_with_data=True, **every
        ),
    ]
    sobol = GeneratorSpec(generator_enum=Generators.SOBOL, generator_kwargs={"seed": seed})
    nodes = [
        GenerationNode("Sobol", [sobol], criteria, should_deduplicate=True),
        GenerationNode("MBM", [mbm], should_deduplicate=True),
    ]
    return GenerationStrategy(name=f"Sobol+MBM:bambo:{name}", nodes=nodes)
