"""Acquisition functions by name: one registry on BoTorch's conventions, for BAMBO and PMTO.

:data:`ACQUISITIONS` maps a name to an :class:`AcquisitionSpec`, whose builder returns a
BoTorch ``AcquisitionFunction`` from BoTorch's usual inputs. :func:`get_acquisition` builds
one; :func:`register_acquisition` adds a user's own (an explicit call: importing a module
registers nothing); :func:`default_acquisition` is the ``"auto"`` rule.

A builder is called as ``builder(model, **inputs, **options)``, where ``inputs`` are those
of :data:`INPUTS` that the caller has and the builder declares as parameters (a builder
with ``**kwargs`` receives all of them):

- ``X_baseline``: observed inputs ``(n, d)`` (noisy acquisitions integrate over their values);
- ``Y_baseline``: observed outcomes ``(n, m)``, maximisation form;
- ``best_f``: the best observed value (one objective), a scalar tensor;
- ``ref_point``: the hypervolume reference point ``(m,)``, maximisation form;
- ``sampler``: the quasi-Monte-Carlo sampler (``MCSampler``);
- ``X_pending``: points asked for but not yet evaluated ``(p, d)``;
- ``objective``: an ``MCAcquisitionObjective`` (or ``MCMultiOutputObjective``).

Every other keyword is an option of that builder (``prune_baseline``, ``beta``,
``scalarization_weights``, ...); an option it does not declare is an error.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from botorch.acquisition import (
    AcquisitionFunction,
    FixedFeatureAcquisitionFunction,
    UpperConfidenceBound,
    qLogNoisyExpectedImprovement,
)
from botorch.acquisition.multi_objective import qExpectedHypervolumeImprovement
from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
from botorch.acquisition.multi_objective.parego import qLogNParEGO
from botorch.acquisition.objective import MCAcquisitionObjective
from botorch.models.model import Model
from botorch.sampling.base import MCSampler
from botorch.utils.multi_objective.box_decompositions.non_dominated import FastNondominatedPartitioning
from torch import Tensor

from bambo.errors import ConfigError, UnknownNameError
from bambo.extensions import prepare_fused_kernel

__all__ = [
    "ACQUISITIONS",
    "AUTO",
    "INPUTS",
    "AcquisitionSpec",
    "CanonicalAcquisition",
    "acquisition_for_task",
    "acquisition_spec",
    "available_acquisitions",
    "default_acquisition",
    "get_acquisition",
    "register_acquisition",
    "resolve_acquisition",
]

AUTO = "auto"
INPUTS = ("X_baseline", "Y_baseline", "best_f", "ref_point", "sampler", "X_pending", "objective")
Objectives = Literal["single", "multi", "any"]


@dataclass(frozen=True)
class AcquisitionSpec:
    """A registered acquisition: its builder and what it is for.

    Attributes:
        builder: ``builder(model, *, <inputs it declares>, **options) -> AcquisitionFunction``.
        objectives: ``"single"`` (a one-output model), ``"multi"`` (several outputs) or ``"any"``.
        batch: It scores a q-batch jointly and takes ``X_pending`` (Monte-Carlo
            acquisitions); ``False`` for analytic ones, which score one candidate.
        scalarized: It scalarises the objectives with ``scalarization_weights``; a batch
            then draws random weights per candidate and picks the candidates one by one.
        summary: One line for listings.
    """

    builder: Callable[..., AcquisitionFunction]
    objectives: Objectives = "any"
    batch: bool = True
    scalarized: bool = False
    summary: str = ""

    def supports(self, num_objectives: int) -> bool:
        """Whether it applies to a model with ``num_objectives`` outputs."""
        if self.objectives == "single":
            return num_objectives == 1
        if self.objectives == "multi":
            return num_objectives > 1
        return True


def _ref_list(ref_point: Tensor | Sequence[float]) -> list[float]:
    return torch.as_tensor(ref_point, dtype=torch.float64).reshape(-1).tolist()


def build_qlognehvi(
    model: Model,
    X_baseline: Tensor,
    ref_point: Tensor | Sequence[float],
    sampler: MCSampler | None = None,
    X_pending: Tensor | None = None,
    objective: MCAcquisitionObjective | None = None,
    prune_baseline: bool = True,
    cache_root: bool | None = None,
) -> AcquisitionFunction:
    """qLogNEHVI (Daulton et al. 2021; Ament et al. 2023) over the observed ``X_baseline``.

    ``cache_root=None`` lets BoTorch cache the baseline's Cholesky factor where the model
    supports it (GPyTorch models).
    """
    prepare_fused_kernel()  # BoTorch would build its C++ kernel on a shared lock that can hang forever
    return qLogNoisyExpectedHypervolumeImprovement(
        model,
        _ref_list(ref_point),
        X_baseline,
        sampler=sampler,
        objective=objective,
        X_pending=X_pending,
        prune_baseline=prune_baseline,
        cache_root=cache_root,
    )


def build_qehvi(
    model: Model,
    ref_point: Tensor | Sequence[float],
    Y_baseline: Tensor | None = None,
    X_baseline: Tensor | None = None,
    sampler: MCSampler | None = None,
    X_pending: Tensor | None = None,
    objective: MCAcquisitionObjective | None = None,
) -> AcquisitionFunction:
    """qEHVI (Daulton et al. 2020) on the box decomposition of ``Y_baseline``'s front.

    Without ``Y_baseline``, the front is the posterior mean at ``X_baseline`` (BoTorch's
    input-constructor convention).

    Raises:
        ConfigError: Neither ``Y_baseline`` nor ``X_baseline`` given.
    """
    if Y_baseline is None:
        if X_baseline is None:
            raise ConfigError("acquisition 'qehvi' needs Y_baseline or X_baseline, got neither")
        with torch.no_grad():
            Y_baseline = model.posterior(X_baseline).mean
    ref = torch.as_tensor(ref_point, dtype=Y_baseline.dtype)
    partitioning = FastNondominatedPartitioning(ref_point=ref, Y=Y_baseline)
    return qExpectedHypervolumeImprovement(
        model, ref.tolist(), partitioning, sampler=sampler, objective=objective, X_pending=X_pending
    )


def build_qlognparego(
    model: Model,
    X_baseline: Tensor,
    sampler: MCSampler | None = None,
    X_pending: Tensor | None = None,
    objective: MCAcquisitionObjective | None = None,
    scalarization_weights: Tensor | None = None,
    prune_baseline: bool = True,
    cache_root: bool | None = None,
) -> AcquisitionFunction:
    """qLogNParEGO (Knowles 2006; Ament et al. 2023): log noisy EI of a Chebyshev scalarisation.

    ``scalarization_weights`` of shape ``(m,)``; BoTorch draws them uniformly from the
    simplex when ``None``.
    """
    return qLogNParEGO(
        model,
        X_baseline=X_baseline,
        scalarization_weights=scalarization_weights,
        sampler=sampler,
        objective=objective,
        X_pending=X_pending,
        prune_baseline=prune_baseline,
        cache_root=cache_root,
    )


def build_qlognei(
    model: Model,
    X_baseline: Tensor,
    sampler: MCSampler | None = None,
    X_pending: Tensor | None = None,
    objective: MCAcquisitionObjective | None = None,
    prune_baseline: bool = True,
    cache_root: bool | None = None,
) -> AcquisitionFunction:
    """qLogNEI (Ament et al. 2023): log noisy expected improvement, one objective."""
    return qLogNoisyExpectedImprovement(
        model,
        X_baseline,
        sampler=sampler,
        objective=objective,
        X_pending=X_pending,
        prune_baseline=prune_baseline,
        cache_root=cache_root,
    )


def build_ucb(model: Model, beta: float = 1.0) -> AcquisitionFunction:
    """Analytic upper confidence bound ``mean + sqrt(beta) * std`` (BoTorch's ``beta``), one output.

    PMTO's bound ``mean + kappa * std`` is ``beta = kappa ** 2``; ``beta = 0`` is the
    posterior mean.

    Raises:
        ConfigError: ``beta`` is negative.
    """
    if beta < 0:
        raise ConfigError(f"ucb needs beta >= 0, got {beta}")
    return UpperConfidenceBound(model, beta=beta)


ACQUISITIONS: dict[str, AcquisitionSpec] = {
    "qlognehvi": AcquisitionSpec(build_qlognehvi, "multi", summary="log noisy expected hypervolume improvement"),
    "qehvi": AcquisitionSpec(build_qehvi, "multi", summary="expected hypervolume improvement (BAMBO App. C.2)"),
    "qlognparego": AcquisitionSpec(
        build_qlognparego, "multi", scalarized=True, summary="log noisy EI of random Chebyshev scalarisations"
    ),
    "qlognei": AcquisitionSpec(build_qlognei, "single", summary="log noisy expected improvement"),
    "ucb": AcquisitionSpec(build_ucb, "single", batch=False, summary="analytic upper confidence bound (PMTO)"),
}


def available_acquisitions() -> list[str]:
    """Registered acquisition names, and ``"auto"``."""
    return [AUTO, *ACQUISITIONS]


def default_acquisition(num_objectives: int) -> str:
    """The ``"auto"`` rule: qLogNEI for one objective, qLogNEHVI up to 3, qLogNParEGO from 4.

    Hypervolume acquisitions grow steeply in cost with the number of objectives; a
    random scalarisation per candidate does not.

    Raises:
        ConfigError: ``num_objectives < 1``.
    """
    if num_objectives < 1:
        raise ConfigError(f"num_objectives must be >= 1, got {num_objectives}")
    if num_objectives == 1:
        return "qlognei"
    return "qlognehvi" if num_objectives <= 3 else "qlognparego"


def acquisition_spec(name: str) -> AcquisitionSpec:
    """The registered spec of ``name`` (not ``"auto"``).

    Raises:
        UnknownNameError: Not registered; the message lists the valid names.
    """
    if name not in ACQUISITIONS:
        raise UnknownNameError("acquisition", name, available_acquisitions())
    return ACQUISITIONS[name]


def resolve_acquisition(name: str, num_objectives: int) -> str:
    """The registered name to use for ``num_objectives`` objectives (``"auto"`` resolved).

    Raises:
        UnknownNameError: Unknown name; the message lists the valid names.
        ConfigError: The acquisition does not apply to that many objectives.
    """
    resolved = default_acquisition(num_objectives) if name == AUTO else name
    spec = acquisition_spec(resolved)
    if not spec.supports(num_objectives):
        raise ConfigError(
            f"acquisition {resolved!r} is for {spec.objectives} objective(s), the problem has {num_objectives}; "
            f"use {default_acquisition(num_objectives)!r} or 'auto'"
        )
    return resolved


def register_acquisition(
    name: str,
    builder: Callable[..., AcquisitionFunction],
    *,
    objectives: Objectives = "any",
    batch: bool = True,
    scalarized: bool = False,
    summary: str = "",
    replace: bool = False,
) -> AcquisitionSpec:
    """Register a user's acquisition under ``name`` (see the module docstring for the builder).

    Args:
        name: The new name.
        builder: ``builder(model, *, <inputs>, **options) -> AcquisitionFunction``.
        objectives: ``"single"``, ``"multi"`` or ``"any"``.
        batch: Scores q-batches jointly and takes ``X_pending``.
        scalarized: Takes ``scalarization_weights`` (one random weight vector per candidate).
        summary: One line for listings.
        replace: Replace an existing entry of that name.

    Returns:
        The registered spec.

    Raises:
        ConfigError: ``name`` is ``"auto"`` or already registered (without ``replace``),
            ``builder`` is not callable, or ``objectives`` is not valid.
    """
    if name == AUTO or not name:
        raise ConfigError(f"acquisition name {name!r} is reserved or empty")
    if name in ACQUISITIONS and not replace:
        raise ConfigError(f"acquisition {name!r} is already registered; pass replace=True to replace it")
    if not callable(builder):
        raise ConfigError(f"the builder of acquisition {name!r} is not callable: {builder!r}")
    if objectives not in ("single", "multi", "any"):
        raise ConfigError(f"objectives must be 'single', 'multi' or 'any', got {objectives!r}")
    spec = AcquisitionSpec(builder, objectives, batch=batch, scalarized=scalarized, summary=summary)
    ACQUISITIONS[name] = spec
    return spec


def get_acquisition(
    name: str,
    model: Model,
    *,
    X_baseline: Tensor | None = None,
    Y_baseline: Tensor | None = None,
    best_f: Tensor | float | None = None,
    ref_point: Tensor | Sequence[float] | None = None,
    sampler: MCSampler | None = None,
    X_pending: Tensor | None = None,
    objective: MCAcquisitionObjective | None = None,
    **options: Any,
) -> AcquisitionFunction:
    """Build a registered acquisition function.

    Args:
        name: A name from :data:`ACQUISITIONS`, or ``"auto"`` (:func:`default_acquisition`
            of ``model.num_outputs``).
        model: A fitted BoTorch model with ``m`` outputs.
        X_baseline: Observed inputs, shape ``(n, d)``.
        Y_baseline: Observed outcomes, shape ``(n, m)``, maximisation form.
        best_f: Best observed value (one objective).
        ref_point: Hypervolume reference point, shape ``(m,)``, maximisation form.
        sampler: Quasi-Monte-Carlo sampler.
        X_pending: Pending points, shape ``(p, d)``.
        objective: A Monte-Carlo objective.
        **options: Options of the builder.

    Returns:
        The acquisition function.

    Raises:
        UnknownNameError: Unknown name; the message lists the valid names.
        ConfigError: An option the builder does not take, or an input it needs is missing.
    """
    if name == AUTO:
        name = default_acquisition(model.num_outputs)
    spec = acquisition_spec(name)
    given = {
        "X_baseline": X_baseline,
        "Y_baseline": Y_baseline,
        "best_f": best_f,
        "ref_point": ref_point,
        "sampler": sampler,
        "X_pending": X_pending,
        "objective": objective,
    }
    parameters = dict(inspect.signature(spec.builder).parameters)
    parameters.pop(next(iter(parameters)), None)  # the model
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if not open_ended:
        allowed = [n for n in parameters if n not in INPUTS]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            listed = ", ".join(allowed) or "none"
            raise ConfigError(f"acquisition {name!r} has no options {unknown}; its options: {listed}")
        empty = inspect.Parameter.empty
        missing = [n for n, p in parameters.items() if n in INPUTS and p.default is empty and given[n] is None]
        if missing:
            raise ConfigError(f"acquisition {name!r} needs {', '.join(missing)}, which were not given")
    inputs = {k: v for k, v in given.items() if v is not None and (open_ended or k in parameters)}
    return spec.builder(model, **inputs, **options)


def acquisition_for_task(
    acqf: AcquisitionFunction, theta: Sequence[float] | Tensor, task_dims: Sequence[int], d: int
) -> FixedFeatureAcquisitionFunction:
    """An acquisition function over the solution columns only, with the task parameters fixed.

    For PMTO's unified model over ``(x, theta)``
    (:class:`~bambo.surrogates.parametric.ParametricTaskGP`).

    Args:
        acqf: An acquisition function over all ``d`` columns.
        theta: Task parameters, one per ``task_dims``.
        task_dims: Indices of the task columns.
        d: Total input dimension.

    Raises:
        ConfigError: ``theta`` does not have one value per task column.
    """
    values = torch.as_tensor(theta, dtype=torch.float64).reshape(-1)
    if values.numel() != len(task_dims):
        raise ConfigError(f"theta has {values.numel()} values for {len(task_dims)} task dimensions")
    return FixedFeatureAcquisitionFunction(acqf, d=d, columns=list(task_dims), values=values.tolist())


class CanonicalAcquisition(AcquisitionFunction):
    """An acquisition function evaluated at the canonical form of its input.

    A problem whose decision vectors are not one-to-one with what it builds (a data-flow
    space: a dropped slot's scale changes nothing, the same path has several encodings)
    maps each vector to one canonical vector (:meth:`~bambo.problem.Problem.canonical`),
    and its surrogates are fitted on canonical points. Evaluating the acquisition at
    ``canonical(X)`` keeps the surrogate on that encoding while the optimiser moves ``X``
    freely: the acquisition is flat along the variables that do not matter (their
    gradient is zero), and equivalent candidates score the same. BoTorch has no such
    wrapper (its input transforms change training inputs too, and its fixed-feature
    wrapper fixes values instead of mapping them).

    Args:
        acquisition: The acquisition function on canonical inputs.
        canonical: Maps ``(..., d)`` to ``(..., d)``; differentiable in what it keeps.
    """

    def __init__(self, acquisition: AcquisitionFunction, canonical: Callable[[Tensor], Tensor]) -> None:
        super().__init__(model=acquisition.model)
        self.acquisition = acquisition
        self.canonical = canonical

    def forward(self, X: Tensor) -> Tensor:
        """The wrapped acquisition at ``canonical(X)``; ``X`` of shape ``(b, q, d)``, returns ``(b,)``."""
        return self.acquisition(self.canonical(X))

    def set_X_pending(self, X_pending: Tensor | None = None) -> None:
        self.acquisition.set_X_pending(None if X_pending is None else self.canonical(X_pending))

    @property
    def X_pending(self) -> Tensor | None:  # noqa: N802 - BoTorch's name
        return getattr(self.acquisition, "X_pending", None)

    @X_pending.setter
    def X_pending(self, value: Tensor | None) -> None:  # noqa: N802 - BoTorch's name
        if "acquisition" in self._modules:
            self.acquisition.X_pending = value

    @property
    def X_baseline(self) -> Tensor:  # noqa: N802 - BoTorch's name (its optimisers seed restarts near it)
        return self.acquisition.X_baseline
