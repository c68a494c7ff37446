"""Merge problems: merge the experts for each decision vector and score the merged model.

:class:`MergeProblem` joins a :class:`~bambo.merge.Merger` (base, experts, method), a
:class:`~bambo.space.MergeSpace` (decision vector -> per-tensor coefficients) and an
evaluator (merged state dict -> named metrics). :meth:`MergeProblem.from_models` builds
one from models in memory or on disk, with BAMBO's block partition (BAMBO Sec. 3.2).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from bambo.errors import ConfigError, EvaluationError
from bambo.merge import Merger, StateDict, TaskVectors, get_merge_method
from bambo.merge.streaming import Engine, LazyTaskVectors, StreamingMerger, choose_engine
from bambo.partition import layer_differences, layer_differences_from_task_vectors, partition_layers
from bambo.problem import Metrics, Objective, Problem, as_metrics, current_trial_id, unique_rows
from bambo.space import LayerLayout, MergeSpace
from bambo.weights import load_state_dict

Evaluator = Callable[[dict[str, Tensor]], Metrics]
Granularity = Literal["model", "layer", "block"]


def merge_setup(
    tv: TaskVectors | LazyTaskVectors,
    method: str,
    granularity: str,
    blocks: Sequence[Sequence[int]] | int,
    bounds: tuple[float, float],
    method_options: Mapping[str, Any],
    partitioner: str = "uniform",
) -> tuple[Merger, MergeSpace]:
    """The merger of ``method`` and the space of ``granularity``, coefficients labelled by expert.

    Args:
        tv: Task vectors of the experts; :class:`~bambo.merge.streaming.LazyTaskVectors` gives the
            streaming engine.
        method: Merge method name.
        granularity: ``model``, ``layer`` or ``block``.
        blocks: Blocks (lists of layer indices) or a count K.
        bounds: Bounds of every coefficient.
        method_options: Options of the merge method.
        partitioner: With a count K: ``"uniform"`` blocks, or a DP partitioner of
            :func:`bambo.partition.partition_layers` (``"hybrid"`` is BAMBO's) applied
            to the experts' layer differences (p = 1).
    """
    if granularity == "block" and isinstance(blocks, int) and partitioner != "uniform":
        if not isinstance(tv, LazyTaskVectors):
            l1 = layer_differences_from_task_vectors(tv).l1
        elif tv.n_experts > 1:
            l1 = layer_differences(tv.base_weights, tv.expert_weights, tv.expert_names).l1
        else:  # one expert: every Diff_l is 0, as the in-memory engine finds
            l1 = np.zeros(LayerLayout.from_names(tv.merged_names).n_layers)
        blocks = [list(block) for block in partition_layers(l1, blocks, partitioner)]
    merge_method = get_merge_method(method, **method_options)
    merger = StreamingMerger(tv, merge_method) if isinstance(tv, LazyTaskVectors) else Merger(tv, merge_method)
    n = merger.n_coefficients
    labels = tv.expert_names if n == tv.n_experts else [f"t{i}" for i in range(n)]
    return merger, MergeSpace.for_granularity(tv, granularity, n, blocks, bounds, labels)


def _state_dict(model: StateDict | str | Path) -> StateDict:
    return load_state_dict(model) if isinstance(model, str | Path) else model


class MergeProblem(Problem):
    """Merge the experts for each decision vector and score the merged model.

    Args:
        merger: Base, experts and merge method.
        space: Maps decision vectors to per-tensor coefficients; must cover the
            merger's tensors and use its number of coefficients.
        evaluator: Takes a merged state dict, returns named metrics. If its signature
            names a parameter ``trial_id`` and/or ``x``, it is also given the journal id
            of the trial (``None`` outside an experiment) and/or the decision vector as
            a list of d floats (:attr:`space`'s parameter order). If it names ``model``,
            it is given the live model the candidate was merged into (``model`` or
            ``model_factory`` is then required); its state dict argument is then that
            model's own tensors. If it names ``fidelity``, it is given the share of its
            evaluation data to score, in (0, 1] (:func:`bambo.fidelity.nested_subset` picks
            nested subsets), and the problem supports multi-fidelity search.
        objectives: Objectives computed from those metrics.
        ref_point: Hypervolume reference in the objectives' own directions, shape
            ``(m,)`` (e.g. chance-level accuracy). A fixed reference makes
            hypervolumes comparable across runs and strategies.
        reuse_buffers: Merge every candidate into the same output buffers (faster
            merges on large models, see ``benchmarks/results/merge_throughput.md``).
            Only safe if the evaluator keeps no reference to the state dict it is given.
        model: A live model (an ``nn.Module`` with the base's state-dict names) that every
            candidate is merged into in place (``merger.merge(c, into=model)``): nothing is
            rebuilt or allocated per candidate. It must not share tensors with the base.
            Candidates are merged into it one after another, so an evaluation abandoned
            after a timeout that still runs would read the next candidate's weights.
        model_factory: Builds that model on first use instead (e.g. in a worker process).
    """

    def __init__(
        self,
        merger: Merger,
        space: MergeSpace,
        evaluator: Evaluator,
        objectives: Sequence[Objective],
        ref_point: Sequence[float] | Tensor | None = None,
        reuse_buffers: bool = False,
        model: nn.Module | None = None,
        model_factory: Callable[[], nn.Module] | None = None,
    ) -> None:
        if space.n_coefficients != merger.n_coefficients:
            raise ConfigError(
                f"space has {space.n_coefficients} coefficients per group but merge method "
                f"{merger.method.name!r} needs {merger.n_coefficients}"
            )
        space.check_covers(merger.task_vectors.merged_names, list(merger.task_vectors.base))
        self._set_objectives(objectives, ref_point)
        self.merger = merger
        self.space = space
        self.evaluator = evaluator
        self.bounds = space.bounds
        self._buffers = merger.new_buffers() if reuse_buffers else None
        self._extras = _accepted_extras(evaluator)
        if model is not None and model_factory is not None:
            raise ConfigError("give either model or model_factory, not both")
        if "model" in self._extras and model is None and model_factory is None:
            raise ConfigError(
                "the evaluator's signature names 'model' but the problem has no model: pass model= or model_factory="
            )
        self._model = model
        self._model_factory = model_factory

    @classmethod
    def from_models(
        cls,
        base: StateDict | str | Path,
        experts: Mapping[str, StateDict | str | Path],
        evaluator: Evaluator,
        objectives: Sequence[Objective],
        method: str = "task_arithmetic",
        granularity: Granularity = "block",
        blocks: Sequence[Sequence[int]] | int = 3,
        partitioner: str = "hybrid",
        bounds: tuple[float, float] = (0.0, 1.0),
        ref_point: Sequence[float] | Tensor | None = None,
        method_options: Mapping[str, Any] | None = None,
        engine: Engine = "auto",
        model: nn.Module | None = None,
        model_factory: Callable[[], nn.Module] | None = None,
    ) -> MergeProblem:
        """The merge problem of a base model and its experts (state dicts or model files).

        Args:
            base: The base model: a state dict, a ``.safetensors``/``.bin`` file or a
                Hugging Face folder (:func:`bambo.weights.load_state_dict`).
            experts: ``{name: model}`` in coefficient order, each like ``base``.
            evaluator: Takes a merged state dict, returns named metrics.
            objectives: Objectives computed from those metrics.
            method: A merge method name (:data:`bambo.merge.MERGE_METHODS`).
            granularity: ``model``, ``layer`` or ``block`` coefficients.
            blocks: For ``block`` granularity: the number of blocks K, or the blocks
                themselves (lists of layer indices).
            partitioner: How K blocks are found: ``hybrid`` (BAMBO's DP over the
                experts' layer differences), ``variance``, ``balance`` or ``uniform``.
            bounds: ``(lower, upper)`` of every coefficient.
            ref_point: Hypervolume reference in the objectives' own directions.
            method_options: Options of the merge method (e.g. ``density`` for TIES).
            engine: ``memory`` (task vectors held in memory: fastest for small models),
                ``streaming`` (:mod:`bambo.merge.streaming`: tensor by tensor from disk) or
                ``auto``: streaming when the in-memory engine would need more than half the
                available memory (:func:`bambo.merge.streaming.choose_engine`).
            model: A live model every candidate is merged into (see :class:`MergeProblem`).
            model_factory: Builds that model on first use instead.

        Raises:
            ConfigError: Unknown names, bad bounds, no experts.
            ModelMismatchError: Experts whose tensors differ from the base's.
        """
        if not experts:
            raise ConfigError("from_models needs at least one expert")
        names = list(experts)
        base_sd, expert_sds = _state_dict(base), [_state_dict(experts[n]) for n in names]
        lazy = LazyTaskVectors(base_sd, expert_sds, expert_names=names)
        tv = lazy if choose_engine(lazy, engine) == "streaming" else TaskVectors(base_sd, expert_sds, names)
        return cls.from_task_vectors(
            tv,  # type: ignore[arg-type] - LazyTaskVectors stands for TaskVectors
            evaluator,
            objectives,
            method,
            granularity,
            blocks,
            partitioner,
            bounds,
            ref_point,
            method_options,
            model=model,
            model_factory=model_factory,
        )

    @classmethod
    def from_task_vectors(
        cls,
        task_vectors: TaskVectors,
        evaluator: Evaluator,
        objectives: Sequence[Objective],
        method: str = "task_arithmetic",
        granularity: Granularity = "block",
        blocks: Sequence[Sequence[int]] | int = 3,
        partitioner: str = "hybrid",
        bounds: tuple[float, float] = (0.0, 1.0),
        ref_point: Sequence[float] | Tensor | None = None,
        method_options: Mapping[str, Any] | None = None,
        model: nn.Module | None = None,
        model_factory: Callable[[], nn.Module] | None = None,
    ) -> MergeProblem:
        """The merge problem of prepared task vectors; arguments as in :meth:`from_models`."""
        merger, space = merge_setup(
            task_vectors, method, granularity, blocks, bounds, method_options or {}, partitioner
        )
        return cls(merger, space, evaluator, objectives, ref_point=ref_point, model=model, model_factory=model_factory)

    def heuristic_points(self) -> Tensor:
        """BAMBO's warm-start settings: each expert alone, the balanced mix, all-0 and all-1.

        With one coefficient per expert (task arithmetic, TIES, DARE, ...) "expert
        i alone" sets coefficient i of every group to 1 and the others to 0, and the
        balanced mix gives each expert 1/N. With a single coefficient (SLERP's t),
        the points are t = 0, 1/2, 1. Values are clipped to the bounds and
        duplicates dropped.

        Returns:
            Shape ``(k, d)``.
        """
        lower, upper = self.bounds
        n = self.space.n_coefficients
        groups = len(self.space.groups)
        if n == self.merger.task_vectors.n_experts:
            rows = [torch.eye(n, dtype=torch.float64)[i] for i in range(n)]
            rows.append(torch.full((n,), 1.0 / n, dtype=torch.float64))
        else:
            rows = [torch.full((n,), 0.5, dtype=torch.float64)]
        rows += [torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64)]
        X = torch.stack([row.repeat(groups) for row in rows])
        return unique_rows(torch.maximum(torch.minimum(X, upper), lower))

    def anchor_points(self) -> Tensor:
        """The base model (every coefficient 0) and each expert alone (its coefficients 1, the others 0).

        Values are clipped to the bounds, as in :meth:`heuristic_points`.

        Returns:
            Shape ``(1 + N, d)`` for N experts with one coefficient each; ``(2, d)`` (coefficient
            0 and 1) for a single-coefficient method such as SLERP.
        """
        lower, upper = self.bounds
        n = self.space.n_coefficients
        groups = len(self.space.groups)
        rows = [torch.zeros(n, dtype=torch.float64)]
        if n == self.merger.task_vectors.n_experts:
            rows += [torch.eye(n, dtype=torch.float64)[i] for i in range(n)]
        else:
            rows.append(torch.ones(n, dtype=torch.float64))
        X = torch.stack([row.repeat(groups) for row in rows])
        return torch.maximum(torch.minimum(X, upper), lower)

    def merge(self, x: Tensor) -> StateDict:
        """The merged state dict for decision vector ``x`` (shape ``(d,)``)."""
        return self.merger.merge(self.space.to_coefficients(x), out=self._buffers)

    @property
    def evaluator_extras(self) -> frozenset[str]:
        """Which of ``trial_id``, ``x``, ``model``, ``fidelity`` the evaluator is given (those it names)."""
        return self._extras

    @property
    def model_factory(self) -> Callable[[], nn.Module] | None:
        """What builds a live model: the factory given (a fresh model per call), else one returning the
        ``model`` given, or ``None``."""
        if self._model_factory is not None:
            return self._model_factory
        if self._model is not None:
            model = self._model
            return lambda: model
        return None

    def live_model(self) -> nn.Module | None:
        """The model candidates are merged into (built by ``model_factory`` on first use), or ``None``."""
        if self._model is None and self._model_factory is not None:
            self._model = self._model_factory()
        return self._model

    @property
    def supports_fidelity(self) -> bool:
        """Whether the evaluator takes a ``fidelity`` argument (:mod:`bambo.fidelity`)."""
        return "fidelity" in self._extras

    def metrics(self, x: Tensor, fidelity: float = 1.0) -> dict[str, float]:
        """The evaluator's raw metrics for ``x``.

        Args:
            x: The decision vector, shape ``(d,)``.
            fidelity: Share of the evaluation data, in (0, 1]; given to an evaluator that
                names a ``fidelity`` parameter (below 1 only to such an evaluator).

        Raises:
            EvaluationError: The evaluator raised (its error is chained).
            ConfigError: A fidelity below 1 for an evaluator without a ``fidelity`` parameter.
        """
        fidelity = self.check_fidelity(fidelity)
        model = self.live_model()
        if model is None:
            merged = self.merge(x)
        else:
            merged = self.merger.merge(self.space.to_coefficients(x), into=model)
        extras: dict[str, Any] = {}
        if "model" in self._extras:
            extras["model"] = model
        if "trial_id" in self._extras:
            extras["trial_id"] = current_trial_id()
        if "x" in self._extras:
            extras["x"] = [float(v) for v in x.tolist()]
        if "fidelity" in self._extras:
            extras["fidelity"] = fidelity
        try:
            result = self.evaluator(merged, **extras)
        except EvaluationError:
            raise
        except Exception as exc:  # noqa: BLE001 - a user evaluator may raise anything
            raise EvaluationError(f"evaluator raised {type(exc).__name__}: {exc}") from exc
        return as_metrics(result)

    def evaluate_one(self, x: Tensor) -> Tensor:
        return torch.tensor(self.objective_values(self.metrics(x), x), dtype=torch.float64)


def _accepted_extras(evaluator: Callable[..., Any]) -> frozenset[str]:
    """Which of ``trial_id``, ``x``, ``model``, ``fidelity`` the evaluator names (not bound by a partial)."""
    try:
        parameters = inspect.signature(evaluator).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return frozenset()
    bound = getattr(evaluator, "keywords", None) or {}  # functools.partial: options given by the config
    return frozenset(
        name
        for name in ("trial_id", "x", "model", "fidelity")
        if name in parameters
        and name not in bound
        and parameters[name].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    )
