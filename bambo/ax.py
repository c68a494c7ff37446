"""Ax integration: bambo's surrogates inside Ax, and bambo runs as Ax experiments.

``client.set_generation_strategy(generation_strategy("quadratic"))`` runs Ax's modular
BoTorch generator on a bambo surrogate (:data:`AX_SURROGATES`; :func:`generator_kwargs`
and :func:`surrogate_spec` serve hand-built strategies). Ax builds the models from its
unit-cube inputs and standardises outcomes, except for the quadratic's sigmoid and
softplus links, whose ``lower``/``upper`` are in metric units. :func:`register_with_ax`
adds the fit dispatch and JSON-storage registry entries (the functions here call it; a
process that only *loads* a saved strategy must call it first).

:func:`export_to_ax` writes a :class:`~bambo.strategies.base.ParetoResult` as an
``ax.Client`` JSON snapshot. Ax names must be identifiers (objectives are parsed by
SymPy, ``[`` is forbidden), so bambo's names are mapped by :func:`ax_safe_names`; the
mapping is kept in the experiment's properties under ``"bambo"``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ax.adapter.registry import Generators, MBM_X_trans, Y_trans
from ax.adapter.transforms.standardize_y import StandardizeY
from ax.api.client import Client
from ax.core.experiment import Experiment
from ax.core.parameter import ParameterType, RangeParameter
from ax.core.search_space import SearchSpace
from ax.core.trial_status import TrialStatus
from ax.generation_strategy.generation_node import GenerationNode
from ax.generation_strategy.generation_strategy import GenerationStrategy
from ax.generation_strategy.generator_spec import GeneratorSpec
from ax.generation_strategy.transition_criterion import MinTrials
from ax.generators.torch.botorch_modular.surrogate import SurrogateSpec
from ax.generators.torch.botorch_modular.utils import ModelConfig, fit_botorch_model
from ax.storage.botorch_modular_registry import register_model
from ax.storage.json_store.decoder import object_from_json
from ax.storage.json_store.registry import CORE_CLASS_DECODER_REGISTRY, CORE_DECODER_REGISTRY
from ax.utils.common.string_utils import SYMPY_GLOBALS
from botorch.models import SingleTaskGP
from botorch.models.model import Model
from botorch.models.transforms.input import InputTransform
from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
from botorch.posteriors.posterior import Posterior
from botorch.utils.datasets import SupervisedDataset
from gpytorch.likelihoods import Likelihood
from torch import Tensor

from bambo.atomic import atomic_path
from bambo.errors import ConfigError, UnknownNameError
from bambo.extensions import prepare_fused_kernel
from bambo.problem import Problem
from bambo.result import ParetoResult
from bambo.surrogates.gp import QuadraticMean, _evidence_init
from bambo.surrogates.quadratic import Link, QuadraticSurrogate

PROPERTY_KEY = "bambo"
_FAILED = "failed evaluation"
_DATA_RTOL = 1e-9  # Ax's JSON store writes data frames with pandas' to_json: 10 significant digits


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

    Fitted in closed form on construction, on unit-cube inputs (Ax's ``UnitX``), so Ax's
    fit is a no-op and a loaded state dict is ignored (Ax loads one to reuse GP
    hyperparameters, e.g. in cross-validation; the quadratic has none). ``train_Yvar`` is
    ignored: the quadratic estimates its own noise.

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
        """Ignored: the model keeps its closed-form fit to its own data."""


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


def _no_fit(model: Model, mll_class: Any = None, mll_options: dict[str, Any] | None = None) -> None:
    """The quadratic is fitted in closed form when Ax constructs it."""


def register_with_ax() -> None:
    """Register bambo's models with Ax: a (no-op) fit dispatch for :class:`AxQuadraticSurrogate`
    (the GPs use Ax's GPyTorch one) and JSON-storage registry entries. Idempotent."""
    global _registered
    if not _registered:
        fit_botorch_model.register(AxQuadraticSurrogate)(_no_fit)
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


def ax_safe_names(names: Sequence[str]) -> dict[str, str]:
    """Map names to Ax-safe identifiers, deterministically and one-to-one: runs of other characters
    than letters, digits and ``_`` become ``_`` (``block.1[1-2]/rotated`` -> ``block_1_1_2_rotated``),
    a leading digit gets ``p_``, a SymPy name a ``_`` suffix, a clash ``_2``, ``_3``, ...

    Args:
        names: Distinct names, in order.

    Returns:
        ``{name: safe name}`` in the same order.

    Raises:
        ConfigError: Duplicate names.
    """
    if len(set(names)) != len(names):
        raise ConfigError(f"names must be distinct, got {list(names)}")
    out: dict[str, str] = {}
    for name in names:
        base = re.sub(r"[^0-9A-Za-z_]+", "_", name).strip("_") or "x"
        base = f"p_{base}" if base[0].isdigit() else base
        base = f"{base}_" if base in SYMPY_GLOBALS else base
        safe, k = base, 2
        while safe in out.values():
            safe, k = f"{base}_{k}", k + 1
        out[name] = safe
    return out


@dataclass(frozen=True)
class AxNames:
    """bambo's names -> Ax's, in decision-vector and objective order.

    Attributes:
        parameters: ``{bambo parameter name: Ax parameter name}``.
        objectives: ``{bambo objective name: Ax metric name}``.
    """

    parameters: dict[str, str]
    objectives: dict[str, str]

    def vector(self, parameterization: Mapping[str, Any]) -> Tensor:
        """An Ax parameterization as bambo's decision vector, shape ``(d,)``.

        Raises:
            ConfigError: A parameter is missing.
        """
        missing = [a for a in self.parameters.values() if a not in parameterization]
        if missing:
            raise ConfigError(f"parameterization lacks parameters {missing}")
        return torch.tensor([float(parameterization[a]) for a in self.parameters.values()], dtype=torch.float64)

    def parameterization(self, x: Tensor) -> dict[str, float]:
        """bambo's decision vector (shape ``(d,)``) as an Ax parameterization."""
        return {a: float(v) for a, v in zip(self.parameters.values(), x.tolist(), strict=True)}

    def outcome(self, y_user: Tensor) -> dict[str, float]:
        """Objectives in their own directions (shape ``(m,)``) as Ax raw data."""
        return {a: float(v) for a, v in zip(self.objectives.values(), y_user.tolist(), strict=True)}


def _configure(
    client: Client, problem: Problem, names: AxNames, name: str, ref_max: Tensor | None, extra: dict[str, Any]
) -> None:
    """Experiment (search space, name mapping) and optimization config (objectives, thresholds)."""
    lower, upper = problem.bounds.tolist()
    parameters = [
        RangeParameter(name=a, parameter_type=ParameterType.FLOAT, lower=lo, upper=hi)
        for a, lo, hi in zip(names.parameters.values(), lower, upper, strict=True)
    ]
    properties = {PROPERTY_KEY: {"parameters": names.parameters, "objectives": names.objectives, **extra}}
    description = f"bambo merge search; properties[{PROPERTY_KEY!r}] maps bambo names to Ax names"
    client.set_experiment(Experiment(SearchSpace(parameters), name, description=description, properties=properties))
    metrics, signs = list(names.objectives.values()), problem.signs.tolist()
    objective = ", ".join(("-" if s < 0 else "") + m for m, s in zip(metrics, signs, strict=True))
    constraints = None
    if ref_max is not None:  # the reference point as Ax's objective thresholds
        ref = (ref_max * problem.signs).tolist()
        constraints = [f"{m} {'>=' if s > 0 else '<='} {r!r}" for m, s, r in zip(metrics, signs, ref, strict=True)]
    client.configure_optimization(objective=objective, outcome_constraints=constraints)


def configure_client(client: Client, problem: Problem, name: str = "bambo", thresholds: bool = True) -> AxNames:
    """Configure a fresh ``ax.Client`` for a problem: a float ``RangeParameter`` per decision
    variable (safe names, the problem's bounds), an objective per bambo objective.

    Args:
        client: A client without an experiment.
        problem: The problem (named by ``problem.space.parameter_names`` if it has a space).
        name: Experiment name.
        thresholds: The problem's reference point as Ax's objective thresholds (else Ax infers them).

    Returns:
        The name mapping, to translate Ax parameterizations and outcomes.
    """
    space = getattr(problem, "space", None)
    parameter_names = space.parameter_names if space is not None else [f"x{i}" for i in range(problem.dim)]
    names = AxNames(ax_safe_names(parameter_names), ax_safe_names(problem.objective_names))
    _configure(client, problem, names, name, problem.ref_point if thresholds else None, {})
    return names


def export_to_ax(problem: Problem, result: ParetoResult, path: str | Path, name: str = "bambo") -> Path:
    """Write a bambo run as an ``ax.Client`` JSON snapshot and :func:`check_ax_export` it.

    Each evaluation becomes a trial, completed with its objectives (own directions) as
    data or failed with its error text; the reference point gives the objective thresholds.

    Args:
        problem: The problem the run searched (bounds, objectives).
        result: The run.
        path: JSON file to write.
        name: Experiment name.

    Returns:
        The path written.

    Raises:
        ConfigError: The result does not fit the problem.
    """
    if result.X.shape[1] != problem.dim or list(result.objective_names) != problem.objective_names:
        raise ConfigError(
            f"result has {result.X.shape[1]} variables and objectives {result.objective_names}, "
            f"the problem {problem.dim} and {problem.objective_names}"
        )
    names = AxNames(ax_safe_names(result.parameter_names), ax_safe_names(result.objective_names))
    ref = result.ref_point if result.ref_point is not None else problem.ref_point
    client = Client()
    extra = {"strategy": result.strategy, "ref_point": None if ref is None else ref.tolist()}
    _configure(client, problem, names, name, ref, extra)
    for i in range(result.n_evaluations):
        index = client.attach_trial(names.parameterization(result.X[i]), arm_name=f"bambo_{i}")
        if result.ok[i]:
            client.complete_trial(index, raw_data=names.outcome(result.Y[i]))
        else:
            client.mark_trial_failed(index, failed_reason=result.errors.get(i, _FAILED))
    path = Path(path)
    with atomic_path(path) as tmp:  # checked before it replaces a previous export
        client.save_to_json_file(str(tmp))
        check_ax_export(tmp, result)
    return path


def load_ax_export(path: str | Path) -> tuple[Experiment, AxNames]:
    """The decoded experiment of a snapshot from :func:`export_to_ax`, and its name mapping.

    (To continue the search in Ax, use ``Client.load_from_json_file(path)``.)

    Raises:
        ConfigError: The experiment carries no bambo name mapping.
    """
    register_with_ax()
    snapshot = json.loads(Path(path).read_text())["experiment"]
    mapping = (snapshot.get("properties") or {}).get(PROPERTY_KEY)
    if not mapping:
        raise ConfigError(f"{path} has no bambo name mapping in its experiment properties")
    registries = {"decoder_registry": CORE_DECODER_REGISTRY, "class_decoder_registry": CORE_CLASS_DECODER_REGISTRY}
    experiment = object_from_json(snapshot, **registries)
    return experiment, AxNames(dict(mapping["parameters"]), dict(mapping["objectives"]))


def check_ax_export(path: str | Path, result: ParetoResult) -> None:
    """Check that a snapshot holds ``result``: one trial per evaluation, in order, with the
    same parameters; completed trials with the same objectives (to Ax's 10 stored digits),
    failed ones with their error text.

    Raises:
        ConfigError: A difference; the message names the trial and the value.
    """
    experiment, names = load_ax_export(path)
    trials = [experiment.trials[i] for i in sorted(experiment.trials)]
    n_done, n_ok = sum(t.status == TrialStatus.COMPLETED for t in trials), int(result.ok.sum())
    if len(trials) != result.n_evaluations or n_done != n_ok:
        raise ConfigError(f"{path}: {len(trials)} trials, {n_done} completed; expected {result.n_evaluations}, {n_ok}")
    values = {(int(r.trial_index), r.metric_name): float(r.mean) for r in experiment.lookup_data().df.itertuples()}
    for row, trial in enumerate(trials):
        x = names.vector(trial.arm.parameters)
        if not torch.equal(x, result.X[row]):
            raise ConfigError(f"{path}: trial {row} has parameters {x.tolist()}, expected {result.X[row].tolist()}")
        if not result.ok[row]:
            want = result.errors.get(row, _FAILED)
            if trial.status != TrialStatus.FAILED or trial.status_reason != want:
                raise ConfigError(f"{path}: trial {row} is {trial.status.name} ({trial.status_reason!r}), not failed")
            continue
        for j, metric in enumerate(names.objectives.values()):
            got, want_y = values.get((trial.index, metric)), float(result.Y[row, j])
            if got is None or not math.isclose(got, want_y, rel_tol=_DATA_RTOL, abs_tol=1e-12):
                raise ConfigError(f"{path}: trial {row} metric {metric!r} is {got}, expected {want_y}")
