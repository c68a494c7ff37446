"""Problems: objectives with directions, the problem interface, synthetic test problems.

Every problem exposes ``bounds`` (shape ``(2, d)``) and ``evaluate(X)``, which
returns objectives in *maximisation* form, shape ``(n, m)``: a minimised
objective is negated. :meth:`Problem.to_user` restores the objectives' own
directions for every output a person reads.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import ClassVar, Literal

import torch
from botorch.test_functions.base import ConstrainedBaseTestProblem, MultiObjectiveTestProblem
from botorch.test_functions.multi_objective import DTLZ2, ZDT1, ZDT2, ZDT3, BraninCurrin
from pydantic import model_validator
from torch import Tensor

from bambo.config_base import FrozenConfig
from bambo.errors import ConfigError, EvaluationError, UnknownNameError
from bambo.fidelity import check_fidelity

Direction = Literal["maximize", "minimize"]
Metrics = Mapping[str, float]

# Largest magnitude a metric or an objective may have: beyond it a value is taken for a broken
# evaluation (1e308 overflows every hypervolume, plot and surrogate), and its trial fails.
MAX_ABS_VALUE = 1e100

_TRIAL_ID: ContextVar[int | None] = ContextVar("bambo_trial_id", default=None)


def current_trial_id() -> int | None:
    """The journal id of the trial being evaluated in this context (``None`` outside an experiment)."""
    return _TRIAL_ID.get()


@contextmanager
def evaluating(trial_id: int | None) -> Iterator[None]:
    """Mark the code inside as the evaluation of trial ``trial_id`` (see :func:`current_trial_id`)."""
    token = _TRIAL_ID.set(trial_id)
    try:
        yield
    finally:
        _TRIAL_ID.reset(token)


class Objective(FrozenConfig):
    """One objective, computed from an evaluator's named metrics.

    Without anchors the objective is the metric ``metrics[0]`` in its own
    direction. With anchors it is BAMBO's normalised objective (BAMBO Eq. 2):
    ``f = sum_s (s - s_base) / (s_expert - s_base)`` over its metrics ``s``, which
    is 0 at the base and 1 per metric at the expert, and is always maximised (a
    metric to be minimised, such as tokens, is handled by its anchors: the expert
    has the lower value).

    Attributes:
        name: Objective name.
        direction: ``"maximize"`` or ``"minimize"`` (must be ``"maximize"`` with anchors).
        metrics: Names of the evaluator's metrics it uses (default: ``(name,)``).
        anchors: ``{metric: (base score, expert score)}`` for normalisation.
        bounds: The range of the objective in its own direction, ``(lower, upper)``
            with ``None`` for an open end: ``(0, 1)`` for an accuracy, ``(0, None)``
            for a loss. MAP picks its quadratic's link from it (sigmoid for a
            bounded range, softplus for a lower bound only, identity otherwise).
            An evaluation whose objective falls outside it fails, as does one with a
            metric or objective beyond :data:`MAX_ABS_VALUE` in magnitude.
    """

    name: str
    direction: Direction = "maximize"
    metrics: tuple[str, ...] = ()
    anchors: dict[str, tuple[float, float]] | None = None
    bounds: tuple[float | None, float | None] = (None, None)

    @model_validator(mode="after")
    def _check(self) -> Objective:
        low, high = self.bounds
        if low is not None and high is not None and not low < high:
            raise ConfigError(f"objective {self.name!r} has bounds with lower >= upper: {self.bounds}")
        if not self.metrics:
            object.__setattr__(self, "metrics", (self.name,))
        if self.anchors is None:
            if len(self.metrics) != 1:
                raise ConfigError(f"objective {self.name!r} sums {len(self.metrics)} metrics: it needs anchors")
            return self
        if self.direction != "maximize":
            raise ConfigError(
                f"objective {self.name!r} is normalised by anchors and is therefore maximised; "
                "encode a minimised metric by its anchors (expert below base)"
            )
        for metric in self.metrics:
            if metric not in self.anchors:
                raise ConfigError(f"objective {self.name!r} has no anchors for metric {metric!r}")
            base, expert = self.anchors[metric]
            if base == expert:
                raise ConfigError(f"anchors of metric {metric!r} are equal ({base}); normalisation divides by zero")
        return self

    @property
    def sign(self) -> float:
        """+1 for maximised objectives, -1 for minimised ones."""
        return 1.0 if self.direction == "maximize" else -1.0

    def value(self, metrics: Metrics) -> float:
        """The objective in its own direction from the evaluator's metrics.

        Raises:
            EvaluationError: A needed metric is missing, not finite or out of range
                (magnitude above :data:`MAX_ABS_VALUE`), or the objective lies outside
                its ``bounds``.
        """
        total = 0.0
        for metric in self.metrics:
            if metric not in metrics:
                raise EvaluationError(f"the evaluator returned no metric {metric!r} (got {sorted(metrics)})")
            try:
                s = float(metrics[metric])
            except OverflowError:
                raise EvaluationError(f"metric {metric!r} does not fit in a float") from None
            if not math.isfinite(s):
                raise EvaluationError(f"metric {metric!r} is not finite: {s}")
            if abs(s) > MAX_ABS_VALUE:
                raise EvaluationError(f"metric {metric!r} is out of range: {s:g} (|value| > {MAX_ABS_VALUE:g})")
            if self.anchors is None:
                total = s
                break
            base, expert = self.anchors[metric]
            total += (s - base) / (expert - base)
        if not abs(total) <= MAX_ABS_VALUE:
            raise EvaluationError(f"objective {self.name!r} is out of range: {total:g} (|value| > {MAX_ABS_VALUE:g})")
        low, high = self.bounds
        slack = 1e-9 * max(1.0, abs(total))
        if (low is not None and total < low - slack) or (high is not None and total > high + slack):
            raise EvaluationError(f"objective {self.name!r} = {total:g} lies outside its bounds {self.bounds}")
        return total


class Problem(ABC):
    """A multi-objective problem over a box.

    Attributes:
        bounds: Shape ``(2, d)``.
        objectives: The objectives, in output order.
        ref_point: Optional hypervolume reference point, maximisation form, shape ``(m,)``.
    """

    bounds: Tensor
    objectives: list[Objective]
    ref_point: Tensor | None = None
    front_columns: list[int] | None = None  # objectives defining the Pareto set (None: all)

    @property
    def dim(self) -> int:
        """Number of decision variables d."""
        return self.bounds.shape[1]

    @property
    def num_objectives(self) -> int:
        """Number of objectives m."""
        return len(self.objectives)

    @property
    def objective_names(self) -> list[str]:
        """Objective names in output order."""
        return [o.name for o in self.objectives]

    @property
    def signs(self) -> Tensor:
        """+1/-1 per objective, shape ``(m,)``."""
        return torch.tensor([o.sign for o in self.objectives], dtype=torch.float64)

    def to_user(self, Y: Tensor) -> Tensor:
        """Maximisation form -> the objectives' own directions (same shape)."""
        return Y * self.signs

    def to_max(self, Y: Tensor) -> Tensor:
        """The objectives' own directions -> maximisation form (same shape)."""
        return Y * self.signs

    def evaluate(self, X: Tensor) -> Tensor:
        """Evaluate every row of ``X``.

        Args:
            X: Shape ``(n, d)``.

        Returns:
            Objectives in maximisation form, shape ``(n, m)``.

        Raises:
            EvaluationError: A row failed; the message names the row.
        """
        X = torch.as_tensor(X, dtype=torch.float64)
        if X.dim() != 2 or X.shape[1] != self.dim:
            raise ConfigError(f"X must have shape (n, {self.dim}), got {tuple(X.shape)}")
        rows = []
        for i, x in enumerate(X):
            try:
                rows.append(self.evaluate_one(x))
            except EvaluationError as exc:
                raise EvaluationError(f"row {i} (x={[round(v, 4) for v in x.tolist()]}): {exc}") from exc
        return torch.stack(rows) if rows else torch.empty(0, self.num_objectives, dtype=torch.float64)

    @abstractmethod
    def evaluate_one(self, x: Tensor) -> Tensor:
        """Objectives of one point in maximisation form, shape ``(m,)``."""

    @property
    def supports_fidelity(self) -> bool:
        """Whether :meth:`metrics` can evaluate on part of the evaluation data (:mod:`bambo.fidelity`)."""
        return False

    def check_fidelity(self, fidelity: float) -> float:
        """``fidelity`` as a float in (0, 1], below 1 only if the problem supports fidelities.

        Raises:
            ConfigError: Out of (0, 1], or below 1 for a problem without fidelities.
        """
        value = check_fidelity(fidelity)
        if value < 1.0 and not self.supports_fidelity:
            raise ConfigError(
                f"fidelity {value:g} asked of a problem that evaluates in full only ({type(self).__name__}); "
                "a merge problem supports fidelities when its evaluator takes a 'fidelity' argument"
            )
        return value

    def metrics(self, x: Tensor, fidelity: float = 1.0) -> dict[str, float]:
        """The named metrics of one evaluation of ``x`` (what the experiment journals).

        Default: each objective's value in its own direction, named by the objective.
        A merge problem returns its evaluator's metrics instead.

        Args:
            x: The decision vector, shape ``(d,)``.
            fidelity: Share of the evaluation data to use, in (0, 1]; below 1 only where
                :attr:`supports_fidelity`.

        Raises:
            EvaluationError: The evaluation failed.
            ConfigError: A fidelity the problem does not support.
        """
        self.check_fidelity(fidelity)
        y = self.to_user(self.evaluate_one(x))
        return {name: float(v) for name, v in zip(self.objective_names, y.tolist(), strict=True)}

    def objective_values(self, metrics: Metrics, x: Tensor) -> list[float]:  # noqa: ARG002 - x: see PreferenceFamily
        """Objectives in maximisation form from the metrics of ``x``, shape ``(m,)`` as a list.

        Raises:
            EvaluationError: A metric is missing or not finite.
        """
        return [o.sign * o.value(metrics) for o in self.objectives]

    def _set_objectives(self, objectives: Sequence[Objective], ref_point: Sequence[float] | Tensor | None) -> None:
        """Set :attr:`objectives` and :attr:`ref_point` (given in the objectives' own directions).

        Raises:
            ConfigError: No objective, repeated names, a reference point of the wrong shape.
        """
        if not objectives:
            raise ConfigError("a problem needs at least one objective")
        names = [o.name for o in objectives]
        if len(set(names)) != len(names):
            raise ConfigError(f"objective names must be unique, got {names}")
        self.objectives = list(objectives)
        if ref_point is not None:
            ref = torch.as_tensor(ref_point, dtype=torch.float64)
            if ref.shape != (len(self.objectives),):
                raise ConfigError(f"ref_point has shape {tuple(ref.shape)}, expected ({len(self.objectives)},)")
            self.ref_point = self.to_max(ref)

    @property
    def discrete_dims(self) -> dict[int, list[float]]:
        """Variables that take only the listed values, index -> values (none: every variable is continuous)."""
        return {}

    def canonical(self, X: Tensor) -> Tensor:
        """One representative of every set of decision vectors that evaluate alike.

        The identity here; a problem with dependent variables (a data-flow space: a dropped
        layer's scale does nothing) maps equivalent vectors to one, so that surrogates see
        one point per distinct candidate.

        Args:
            X: Shape ``(..., d)``.
        """
        return X

    def heuristic_points(self) -> Tensor:
        """Hand-picked starting points for a warm start (BAMBO Sec. 3.3, Alg. 2 step 2).

        Without knowledge of the problem: the lower corner, the upper corner and
        the centre of the box.

        Returns:
            Shape ``(k, d)``, inside the bounds, without duplicates.
        """
        lower, upper = self.bounds
        return unique_rows(torch.stack([lower, upper, (lower + upper) / 2]))


def as_metrics(result: object) -> dict[str, float]:
    """An evaluator's result as named floats.

    Raises:
        EvaluationError: The result is not a mapping, or a value is not a number (names it).
    """
    if not isinstance(result, Mapping):
        raise EvaluationError(
            f"the evaluator must return a mapping of metric names to numbers, got {type(result).__name__}"
        )
    metrics = {}
    for name, value in result.items():
        try:
            metrics[str(name)] = float(value)
        except (TypeError, ValueError):
            raise EvaluationError(f"metric {name!r} is not a number: {value!r}") from None
        except OverflowError:
            raise EvaluationError(f"metric {name!r} does not fit in a float: {str(value)[:40]}...") from None
    return metrics


def unique_rows(X: Tensor) -> Tensor:
    """Rows of ``X`` without duplicates, first occurrences in their order."""
    keep: list[int] = []
    for i in range(X.shape[0]):
        if not any(torch.equal(X[i], X[j]) for j in keep):
            keep.append(i)
    return X[keep]


class SyntheticProblem(Problem):
    """A BoTorch multi-objective test function, with its own reference point and maximum hypervolume.

    Any ``botorch.test_functions.base.MultiObjectiveTestProblem`` is accepted: by one
    of the short names in :attr:`FUNCTIONS`, as a class (built with ``dim`` and
    ``num_objectives`` when given, else with its own defaults) or as an instance
    (used as configured; a copy, so the caller's object is not changed). BoTorch
    minimises these functions; the problem is their noise-free values
    (``evaluate_true``) in maximisation form, whatever the instance's ``negate``,
    and the objectives are named ``f0, f1, ...`` with direction ``minimize``.

    Args:
        function: A name in :attr:`FUNCTIONS` (``branin_currin``, ``dtlz2``, ``zdt1``,
            ``zdt2``, ``zdt3``), a ``MultiObjectiveTestProblem`` subclass or instance.
        dim: Input dimension (named DTLZ2 and ZDT, default ``num_objectives + 4`` and 6;
            a class that takes ``dim``); ignored by BraninCurrin (d=2) and instances.
        num_objectives: Objectives (named DTLZ2, default 2; a class that takes it);
            ignored by the other names and by instances.

    Raises:
        UnknownNameError: An unknown name.
        ConfigError: Not a BoTorch multi-objective test problem, a constrained one
            (bambo would ignore its constraints), or one that cannot be built with
            the given ``dim`` / ``num_objectives``.
    """

    FUNCTIONS: ClassVar[dict[str, type[MultiObjectiveTestProblem]]] = {
        "branin_currin": BraninCurrin,
        "dtlz2": DTLZ2,
        "zdt1": ZDT1,
        "zdt2": ZDT2,
        "zdt3": ZDT3,
    }

    def __init__(
        self,
        function: str | type[MultiObjectiveTestProblem] | MultiObjectiveTestProblem,
        dim: int | None = None,
        num_objectives: int | None = None,
    ) -> None:
        if isinstance(function, str):
            if function not in self.FUNCTIONS:
                raise UnknownNameError("synthetic problem", function, self.FUNCTIONS)
            name, cls = function, self.FUNCTIONS[function]
            if function == "branin_currin":
                kwargs: dict[str, int] = {}
            elif function == "dtlz2":
                m = num_objectives or 2
                kwargs = {"dim": dim or m + 4, "num_objectives": m}
            else:
                kwargs = {"dim": dim or 6}
            fn = _build(cls, kwargs, name)
        elif isinstance(function, type) and issubclass(function, MultiObjectiveTestProblem):
            _check_unconstrained(function)
            name = function.__name__
            kwargs = {k: v for k, v in {"dim": dim, "num_objectives": num_objectives}.items() if v is not None}
            fn = _build(function, kwargs, name)
        elif isinstance(function, MultiObjectiveTestProblem):
            _check_unconstrained(type(function))
            name = type(function).__name__
            fn = copy.deepcopy(function)
        else:
            raise ConfigError(
                f"{function!r} is not a BoTorch multi-objective test problem (a name in "
                f"{', '.join(self.FUNCTIONS)}, or a botorch.test_functions MultiObjectiveTestProblem class or instance)"
            )
        self.name = name
        self.function = fn.to(torch.float64)
        self.bounds = self.function.bounds.clone()
        self.objectives = [Objective(name=f"f{j}", direction="minimize") for j in range(fn.num_objectives)]
        # BoTorch's ref_point buffer is negated with the function; its minimisation form, negated, is ours.
        ref = torch.as_tensor(self.function.ref_point, dtype=torch.float64).clone()
        self.ref_point = ref if self.function.negate else -ref

    @property
    def max_hv(self) -> float:
        """The maximum hypervolume w.r.t. :attr:`ref_point` (BoTorch's reference value).

        Raises:
            ConfigError: BoTorch gives none for this function.
        """
        try:
            return float(self.function.max_hv)
        except NotImplementedError:
            raise ConfigError(f"BoTorch gives no maximum hypervolume for {self.name}") from None

    def pareto_front(self, n: int) -> Tensor:
        """``n`` points of the true front, maximisation form, shape ``(n, m)``.

        Raises:
            ConfigError: BoTorch has no front generator for this function (BraninCurrin).
        """
        try:
            front = self.function.gen_pareto_front(n).to(torch.float64)
        except NotImplementedError:
            raise ConfigError(f"no analytic Pareto front for {self.name!r}") from None
        return front if self.function.negate else -front  # BoTorch negates its front with the function

    def evaluate_one(self, x: Tensor) -> Tensor:
        return -self.function.evaluate_true(x.unsqueeze(0)).squeeze(0)

    def evaluate(self, X: Tensor) -> Tensor:
        """Every row of ``X`` in one call of the BoTorch function (shape ``(n, d)`` -> ``(n, m)``).

        The same values as row by row (:meth:`evaluate_one`), for reference fronts of tens of
        thousands of points.
        """
        X = torch.as_tensor(X, dtype=torch.float64)
        if X.dim() != 2 or X.shape[1] != self.dim:
            raise ConfigError(f"X must have shape (n, {self.dim}), got {tuple(X.shape)}")
        if X.shape[0] == 0:
            return torch.empty(0, self.num_objectives, dtype=torch.float64)
        return -self.function.evaluate_true(X)


def _build(cls: type[MultiObjectiveTestProblem], kwargs: dict[str, int], name: str) -> MultiObjectiveTestProblem:
    """``cls(negate=True, **kwargs)``, its failures as one ConfigError naming the arguments."""
    try:
        return cls(negate=True, **kwargs)
    except (TypeError, ValueError) as exc:
        given = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "no arguments"
        raise ConfigError(
            f"synthetic problem {name!r} cannot be built with {given}: {exc} "
            "(pass dim= / num_objectives=, or a configured instance)"
        ) from None


def _check_unconstrained(cls: type) -> None:
    if issubclass(cls, ConstrainedBaseTestProblem):
        raise ConfigError(f"{cls.__name__} has constraints, which bambo's problems cannot express")
