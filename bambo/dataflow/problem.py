"""The data-flow merge problem: decision vector -> layer path -> built model -> metrics, with the path's depth.

Beside :class:`~bambo.merge_problem.MergeProblem` (which merges weights), a
:class:`DataFlowProblem` builds the model of the path a decision vector encodes
(:class:`~bambo.dataflow.space.DataFlowSpace`, :func:`~bambo.dataflow.build.build_path_model`,
no weight copied) and hands it to the evaluator. Its metrics are the evaluator's and
``hops``, the path's number of layers: the inference cost that DFS trades against
capability (a natural objective to minimise). The problem exposes the space's binary
variables (:attr:`discrete_dims`) and its canonical map (:meth:`canonical`), so a strategy
that honours them (BAMBO does) searches include bits as bits and fits its surrogates on
one point per distinct path.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from bambo.dataflow.build import build_path_model, layer_list_of
from bambo.dataflow.path import LayerPath
from bambo.dataflow.space import DataFlowSpace
from bambo.errors import BamboError, ConfigError, EvaluationError, InfeasibleError
from bambo.merge_problem import MergeProblem
from bambo.problem import Objective, Problem, as_metrics, unique_rows

__all__ = ["HOPS", "DataFlowProblem"]

HOPS = "hops"
"""The metric every data-flow evaluation reports beside the evaluator's: layers on the path."""


class DataFlowProblem(Problem):
    """Build the path of each decision vector through the source models and score the model.

    Args:
        sources: Source name -> model, in the space's order (base, experts, or merges).
        space: The slots, bits and scales.
        evaluator: Takes the built model (evaluation mode), returns named metrics.
        objectives: Objectives computed from those metrics and ``hops``.
        ref_point: Hypervolume reference in the objectives' own directions, shape ``(m,)``.
        frame: The source whose embeddings and head every built model uses (default:
            the first source).
        start_paths: Paths to evaluate first (a warm start a user knows, e.g. a model's own
            layer order), before :meth:`heuristic_points`' own.

    Raises:
        ConfigError: The space's sources are not the models given, a layer count differs,
            an objective is unknown or repeated, the evaluator is not callable, a start path
            names an unknown source or layer, or does not fit the slots (names the hop).
        ModelMismatchError: The models cannot swap layers (hidden size, layer shapes).
    """

    def __init__(
        self,
        sources: Mapping[str, nn.Module],
        space: DataFlowSpace,
        evaluator: Callable[[nn.Module], Mapping[str, Any]],
        objectives: Sequence[Objective],
        ref_point: Sequence[float] | Tensor | None = None,
        frame: str | None = None,
        start_paths: Sequence[LayerPath] = (),
    ) -> None:
        if list(sources) != space.sources:
            raise ConfigError(f"the space's sources {space.sources} are not the models given: {list(sources)}")
        for name, model in sources.items():
            count = len(model.get_submodule(layer_list_of(model)))
            if count != space.n_layers:
                raise ConfigError(f"source {name!r} has {count} layers, the space {space.n_layers}")
        if not callable(evaluator):
            raise ConfigError(f"the evaluator must be callable, got {type(evaluator).__name__}")
        self._set_objectives(objectives, ref_point)
        self.sources = dict(sources)
        self.space = space
        self.evaluator = evaluator
        self.bounds = space.bounds
        self.frame = frame if frame is not None else space.sources[0]
        full = [1.0] * len(space.free) + [1.0] * space.n_slots
        build_path_model(space.path(torch.tensor(full, dtype=torch.float64)), self.sources, self.frame)  # fail early
        counts = dict.fromkeys(space.sources, space.n_layers)
        self.start_points = []
        for k, path in enumerate(start_paths):
            try:
                path.check(counts)
                self.start_points.append(space.encode(path))
            except ConfigError as exc:
                raise ConfigError(f"start path {k} ({path.describe()}): {exc}") from None

    @property
    def discrete_dims(self) -> dict[int, list[float]]:
        """The include bits, each 0 or 1."""
        return {i: [0.0, 1.0] for i in self.space.discrete_dims}

    def canonical(self, X: Tensor) -> Tensor:
        """See :meth:`DataFlowSpace.canonical`."""
        return self.space.canonical(X)

    def path(self, x: Tensor) -> LayerPath:
        """The layer path of ``x``."""
        return self.space.path(x)

    def model(self, x: Tensor) -> nn.Module:
        """The model of ``x``'s path (evaluation mode), sharing the sources' weights."""
        return build_path_model(self.path(x), self.sources, self.frame).eval()

    def heuristic_points(self) -> Tensor:
        """The start paths; each source's own layer order, where the pins allow it; every slot kept; the pins only.

        Returns:
            Canonical vectors, shape ``(k, d)``, without duplicates.
        """
        candidates = [LayerPath.identity(s, self.space.n_layers) for s in self.space.sources]
        points = list(self.start_points)
        for path in candidates:
            try:
                points.append(self.space.encode(path))
            except ConfigError:
                continue
        n_free = len(self.space.free)
        points.append(torch.tensor([1.0] * n_free + [1.0] * self.space.n_slots, dtype=torch.float64))
        if self.space.pinned:
            points.append(torch.tensor([0.0] * n_free + [1.0] * self.space.n_slots, dtype=torch.float64))
        return unique_rows(self.canonical(torch.stack(points)))

    @property
    def supports_fidelity(self) -> bool:
        """Whether the evaluator takes a ``fidelity`` argument (:mod:`bambo.fidelity`)."""
        return _names_fidelity(self.evaluator)

    def metrics(self, x: Tensor, fidelity: float = 1.0) -> dict[str, float]:
        """The evaluator's metrics of ``x``'s model, and ``hops``.

        Args:
            x: The decision vector, shape ``(d,)``.
            fidelity: Share of the evaluation data, in (0, 1], given to an evaluator that
                names a ``fidelity`` parameter.

        Raises:
            EvaluationError: The path keeps no layer, the evaluator raised, or it returned
                a metric named ``hops`` or a value that is not a number.
        """
        fidelity = self.check_fidelity(fidelity)
        extras = {"fidelity": fidelity} if self.supports_fidelity else {}
        try:
            path = self.path(x)
        except InfeasibleError as exc:
            raise EvaluationError(str(exc)) from exc
        model = build_path_model(path, self.sources, self.frame).eval()
        try:
            with torch.no_grad():
                result = self.evaluator(model, **extras)
        except EvaluationError:
            raise
        except Exception as exc:  # noqa: BLE001 - a user evaluator may raise anything
            raise EvaluationError(f"evaluator raised {type(exc).__name__}: {exc}") from exc
        metrics = as_metrics(result)
        if HOPS in metrics:
            raise EvaluationError(f"the evaluator returned a metric named {HOPS!r}, which the problem reports itself")
        return {**metrics, HOPS: float(len(path))}

    def evaluate_one(self, x: Tensor) -> Tensor:
        return torch.tensor(self.objective_values(self.metrics(x), x), dtype=torch.float64)

    @classmethod
    def from_merge_problem(
        cls,
        problem: MergeProblem,
        sources: Mapping[str, Tensor | Sequence[float]],
        repeats: int = 2,
        scale_bounds: tuple[float, float] = (0.5, 1.5),
        pin_first: bool = True,
        pin_last: bool = False,
        hops_reference: float | None = None,
        start_paths: Sequence[LayerPath] = (),
    ) -> DataFlowProblem:
        """A data-flow problem over models a parameter-space merge problem builds.

        Each source is the model of one decision vector of ``problem``: the base (every
        coefficient 0), an expert (its coefficients 1: :meth:`MergeProblem.anchor_points`),
        or any merge (hybrid PS+DFS, Akiba et al. 2024 Sec. 3.3, the best of their models).
        Each is merged into its own fresh model (``problem.model_factory``) once. The
        objectives are the merge problem's and ``hops`` (minimised); the evaluator is the
        merge problem's, given the built model as its ``model`` argument and an empty state
        dict (a path's weights are not one model's tensors; every shipped benchmark's
        evaluator runs the live model it is given).

        Args:
            problem: A merge problem with a ``model_factory`` and an evaluator that takes ``model``.
            sources: Source name -> decision vector of ``problem``, shape ``(problem.dim,)``.
            repeats: ``r``, repetitions of the pool of layers.
            scale_bounds: Bounds of every input scale.
            pin_first: Always run the first slot.
            pin_last: Always run the last slot.
            hops_reference: The reference point's ``hops`` value (default: ``T + 1``, so
                that every path, the deepest too, adds hypervolume).
            start_paths: Paths evaluated first (see the class).

        Raises:
            ConfigError: No model factory, an evaluator that does not take ``model``, or a
                source vector of the wrong shape or outside the bounds (named).
        """
        if problem.model_factory is None:
            raise ConfigError(
                "a data-flow search runs models, but these models have no architecture bambo can build (plain "
                "weights files): give Hugging Face folders or a benchmark, whose models bambo builds"
            )
        if "model" not in problem.evaluator_extras:
            raise ConfigError("a data-flow problem needs an evaluator that takes the built `model` (its weights move)")
        if not sources:
            raise ConfigError("a data-flow problem needs at least one source model")
        factory = problem.model_factory
        models: dict[str, nn.Module] = {}
        for name, x in sources.items():
            try:
                vector = problem.space.check(torch.as_tensor(x, dtype=torch.float64))
            except BamboError as exc:
                raise ConfigError(f"source {name!r}: {exc}") from None
            model = factory()
            if any(model is other for other in models.values()):
                raise ConfigError("the merge problem's model_factory returns one shared model; sources need their own")
            problem.merger.merge(problem.space.to_coefficients(vector), into=model)
            models[name] = model.eval()
        counts = {name: len(m.get_submodule(layer_list_of(m))) for name, m in models.items()}
        space = DataFlowSpace(counts, repeats, scale_bounds, pin_first, pin_last)
        evaluator = problem.evaluator

        def evaluate(model: nn.Module) -> Mapping[str, Any]:
            return evaluator({}, model=model)

        objectives = [*problem.objectives, Objective(name=HOPS, direction="minimize", bounds=(1.0, None))]
        ref_point = None
        if problem.ref_point is not None:
            hops = float(space.n_slots + 1) if hops_reference is None else float(hops_reference)
            ref_point = [*problem.to_user(problem.ref_point).tolist(), hops]
        return cls(models, space, evaluate, objectives, ref_point=ref_point, start_paths=start_paths)


def _names_fidelity(evaluator: Callable[..., Any]) -> bool:
    """Whether ``evaluator``'s signature has a ``fidelity`` parameter (not bound by a partial)."""
    try:
        parameters = inspect.signature(evaluator).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return False
    bound = getattr(evaluator, "keywords", None) or {}
    return "fidelity" in parameters and "fidelity" not in bound
