"""Experiment configuration: one YAML file describes a whole run (``bambo run CONFIG``).

Every section is a frozen pydantic model with ``extra="forbid"``; a bad file
raises :class:`~bambo.errors.ConfigError` naming the field and what is allowed,
before any model is loaded or evaluated. :meth:`RunConfig.from_yaml` and
:meth:`RunConfig.to_yaml` round-trip.

Numbers are strict (no ``true`` for an integer, no float for a seed) and bounded
(budget, batch size, blocks and warm-start sizes at most 10**6; timeouts finite);
the options of the merge method and of the strategy are checked against what they
accept. The files a config names are checked by :mod:`bambo.validation` before
they are read.

Example (the digits benchmark)::

    models: {benchmark: digits, tasks: [inverted, noisy]}
    merge: {method: task_arithmetic, granularity: block, blocks: 3}
    strategy: {name: bambo}
    budget: 32
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, Strict, field_validator, model_validator

from bambo import validation
from bambo.config_base import Count, FiniteFloat, FrozenConfig, Seed, check_option_types
from bambo.errors import ConfigError
from bambo.execution import Executor, LocalExecutor
from bambo.fidelity import Halving
from bambo.merge import MERGE_METHODS
from bambo.partition import PARTITIONERS
from bambo.problem import Objective

MAX_TIMEOUT_S = 30 * 24 * 3600.0  # an evaluation timeout beyond 30 days is a mistake (or .inf)
Seconds = Annotated[float, Strict(), Field(gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False)]


class ModelsConfig(FrozenConfig):
    """Where the base and the experts come from.

    Either ``benchmark`` (a registered benchmark, :func:`bambo.benchmark.available_benchmarks`,
    with its ``tasks``) or ``base`` and ``experts`` (safetensors files, ``.bin`` files
    loaded with ``weights_only``, or Hugging Face folders).

    Attributes:
        benchmark: A registered benchmark name (``digits``, ``text``, ...).
        tasks: The benchmark's experts to merge (default: the first two).
        settings: Fields of the benchmark's own config (e.g. ``{seed: 1}``).
        cache_dir: The benchmark's cache folder (default: its own under ``~/.cache/bambo``).
        base: Path of the base model.
        experts: ``{name: path}`` of the experts, in coefficient order.
    """

    benchmark: str | None = None
    tasks: list[str] | None = Field(default=None, min_length=1)
    settings: dict[str, Any] = Field(default_factory=dict)
    cache_dir: Path | None = None
    base: Path | None = None
    experts: dict[str, Path] | None = None

    @field_validator("benchmark")
    @classmethod
    def _known_benchmark(cls, value: str | None) -> str | None:
        from bambo.benchmark import available_benchmarks

        if value is not None and value not in available_benchmarks():
            raise ValueError(f"unknown benchmark {value!r}; valid: {', '.join(available_benchmarks())}")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ModelsConfig:
        if self.benchmark is None:
            if self.base is None or not self.experts:
                raise ConfigError("models: give either `benchmark` (digits or text) or `base` and `experts`")
            if self.tasks is not None or self.settings or self.cache_dir is not None:
                raise ConfigError(
                    "models.tasks, settings and cache_dir only apply to a benchmark; name the experts in models.experts"
                )
        elif self.base is not None or self.experts is not None:
            raise ConfigError("models: give either `benchmark` or `base`/`experts`, not both")
        else:
            from bambo.benchmark import get_benchmark

            if self.tasks is not None and len(set(self.tasks)) != len(self.tasks):
                raise ConfigError(f"models.tasks names a task twice: {self.tasks}")
            config_class = get_benchmark(self.benchmark).config_class
            check_option_types(
                self.settings, {k: f.annotation for k, f in config_class.model_fields.items()}, "models.settings"
            )
            try:
                config_class(**self.settings)
            except ConfigError as exc:
                raise ConfigError(f"models.settings: {exc}") from None
        return self

    def check_files(self, root: Path) -> None:
        """Check every model path (relative to ``root``) before anything reads it.

        Each must be a regular, readable weights file, or a folder whose weights files are
        (:func:`bambo.validation.check_weights`: FIFOs and devices are refused without being
        opened; safetensors headers are parsed within bounds; ``.bin`` files opened with
        ``weights_only``).

        Raises:
            ConfigError: One message naming every bad field (``models.experts.a``) and file.
        """
        if self.benchmark is not None:
            return
        paths = {"models.base": self.base, **{f"models.experts.{k}": v for k, v in (self.experts or {}).items()}}
        problems = []
        for field, path in paths.items():
            try:
                validation.check_weights(resolve(root, path), field)  # type: ignore[arg-type] - both set here
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("; ".join(problems))


class DataFlowConfig(FrozenConfig):
    """A data-flow-space search (``merge.kind: dataflow``): layer paths through source models.

    The sources are models the parameter-space merge problem builds: ``base``, an expert
    by name (a benchmark's task, a key of ``models.experts``), or ``merge``, the merge at
    :attr:`merge_point` (hybrid PS+DFS). See :class:`~bambo.dataflow.DataFlowProblem`.

    Attributes:
        sources: Source names in pool order (default: the experts).
        merge_point: The ``merge`` source's decision vector of the parameter-space problem
            (its coefficients; ``merge.granularity`` and ``blocks`` set its length).
        repeats: ``r``, repetitions of the pool of layers (T = r x sources x layers slots).
        scale_bounds: Bounds of every input scale (must contain 1).
        pin_first: Always run the first slot (the first source's layer 0).
        pin_last: Always run the last slot.
        paths: Paths evaluated first, written as ``"a:0 a:1 b:1x0.8"`` (source:layer, an
            optional x scale).
    """

    sources: list[str] | None = Field(default=None, min_length=1)
    merge_point: list[FiniteFloat] | None = None
    repeats: Count = 2
    scale_bounds: tuple[FiniteFloat, FiniteFloat] = (0.5, 1.5)
    pin_first: bool = True
    pin_last: bool = False
    paths: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> DataFlowConfig:
        from bambo.dataflow import LayerPath

        if self.sources is not None and len(set(self.sources)) != len(self.sources):
            raise ConfigError(f"merge.dataflow.sources names a model twice: {self.sources}")
        uses_merge = self.sources is not None and "merge" in self.sources
        if uses_merge != (self.merge_point is not None):
            raise ConfigError("merge.dataflow: a `merge` source and merge_point go together (give both or neither)")
        low, high = self.scale_bounds
        if not 0 < low <= 1.0 <= high:
            raise ConfigError(f"merge.dataflow.scale_bounds {list(self.scale_bounds)} must be positive and contain 1")
        for k, text in enumerate(self.paths):
            try:
                LayerPath.parse(text)
            except ConfigError as exc:
                raise ConfigError(f"merge.dataflow.paths[{k}]: {exc}") from None
        return self


class MergeConfig(FrozenConfig):
    """The merge method and the search space.

    Attributes:
        method: A merge method name (see :data:`bambo.merge.MERGE_METHODS`).
        options: The method's options (e.g. ``density`` for TIES).
        granularity: ``model``, ``layer`` or ``block``.
        blocks: K, blocks of layers for ``block`` granularity.
        partitioner: How layers are grouped: ``hybrid`` (BAMBO), ``variance``, ``balance``, ``uniform``.
        bounds: ``(lower, upper)`` of every coefficient.
        engine: ``auto``, ``memory`` or ``streaming`` (tensor by tensor from disk, for models
            larger than memory; see :func:`bambo.merge.streaming.choose_engine`). Models from
            ``models.base``/``models.experts`` only; a benchmark's models are in memory.
        kind: ``parameters`` (search merge coefficients) or ``dataflow`` (search layer paths
            through the models the merge builds, :attr:`dataflow`).
        dataflow: The data-flow search (``kind: dataflow`` only).
    """

    method: str = "task_arithmetic"
    options: dict[str, Any] = Field(default_factory=dict)
    granularity: Literal["model", "layer", "block"] = "block"
    blocks: Count = 3
    partitioner: str = "hybrid"
    bounds: tuple[FiniteFloat, FiniteFloat] = (0.0, 1.0)
    engine: Literal["auto", "memory", "streaming"] = "auto"
    kind: Literal["parameters", "dataflow"] = "parameters"
    dataflow: DataFlowConfig | None = None

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value not in MERGE_METHODS:
            raise ValueError(f"unknown merge method {value!r}; valid: {', '.join(sorted(MERGE_METHODS))}")
        return value

    @field_validator("partitioner")
    @classmethod
    def _known_partitioner(cls, value: str) -> str:
        if value not in PARTITIONERS:
            raise ValueError(f"unknown partitioner {value!r}; valid: {', '.join(PARTITIONERS)}")
        return value

    @field_validator("bounds")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not value[0] < value[1]:
            raise ValueError(f"lower bound must be below the upper bound, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _method_options(self) -> MergeConfig:
        from bambo.merge import get_merge_method

        fields = MERGE_METHODS[self.method].model_fields
        check_option_types(self.options, {k: f.annotation for k, f in fields.items()}, "merge.options")
        get_merge_method(self.method, **self.options)  # unknown options and ranges, named
        if self.dataflow is not None and self.kind != "dataflow":
            raise ConfigError("merge.dataflow only applies to merge.kind: dataflow")
        return self


class EvaluatorConfig(FrozenConfig):
    """The expensive evaluation: a function ``(state_dict, **options) -> {metric: value}``.

    A function whose signature names ``trial_id`` and/or ``x`` is also given the
    journal's id of the trial and the decision vector (a list of floats); one that names
    ``fidelity`` is given the share of its evaluation data to score (``halving`` runs).

    The entry point's module is imported with the config file's folder first on
    ``sys.path`` (``module_path``), so ``entry_point: my_eval:score`` finds a
    ``my_eval.py`` beside the config; then the current folder, ``PYTHONPATH`` and the
    installed packages. The import runs under ``import_timeout_s``, before any model is
    loaded, and the function must accept a state dict and the ``options``.

    Attributes:
        entry_point: ``package.module:function`` (default for a benchmark: its own evaluator).
        options: Keyword arguments passed to the function.
        timeout_s: An evaluation running longer is recorded as failed and the run goes on
            (finite, at most 30 days).
        import_timeout_s: Seconds importing the entry point's module may take.
        module_path: Folder put first on ``sys.path`` while importing the module (default:
            the config file's folder; a run folder's config records it).
    """

    entry_point: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    timeout_s: Seconds | None = None
    import_timeout_s: Seconds = 60.0
    module_path: Path | None = None

    @field_validator("entry_point")
    @classmethod
    def _entry_point_form(cls, value: str | None) -> str | None:
        if value is not None and (value.count(":") != 1 or not all(value.split(":"))):
            raise ValueError(f"entry_point must look like 'package.module:function', got {value!r}")
        return value

    def load(self, root: Path | None = None) -> Callable[..., Any]:
        """Import the entry point (under :attr:`import_timeout_s`) and check that it takes the options.

        Args:
            root: The config file's folder, put first on ``sys.path`` while importing
                (:attr:`module_path` when set takes its place).

        Raises:
            ConfigError: The module cannot be found (the message says where it looked), raises
                or hangs at import; the function is missing or does not take ``(state_dict, **options)``.
        """
        if self.entry_point is None:
            raise ConfigError("evaluator.entry_point is required for models given as files")
        module_name, attr = self.entry_point.split(":")
        search = self.module_path if self.module_path is not None else root
        module = validation.import_module(module_name, "evaluator.entry_point", self.import_timeout_s, search)
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise ConfigError(f"evaluator.entry_point: module {module_name!r} has no function {attr!r}")
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):  # a builtin without a signature: called as it is
            return fn
        named = ("trial_id", "x", "fidelity")
        extras = {k: None for k in named if k in signature.parameters and k not in self.options}
        try:
            signature.bind({}, **self.options, **extras)  # trial_id and x are given when named
        except TypeError as exc:
            raise ConfigError(
                f"evaluator.entry_point: {self.entry_point} cannot be called as "
                f"{attr}(state_dict{''.join(f', {k}=...' for k in self.options)}): {exc}"
            ) from None
        return fn


class StrategyConfig(FrozenConfig):
    """The search strategy and its options (see :data:`bambo.strategies.STRATEGIES`)."""

    name: str = "bambo"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        from bambo.strategies import STRATEGIES  # strategies import problems; keep config importable first

        if value not in STRATEGIES:
            raise ValueError(f"unknown strategy {value!r}; valid: {', '.join(STRATEGIES)}")
        return value

    @model_validator(mode="after")
    def _known_options(self) -> StrategyConfig:
        from bambo.strategies import STRATEGIES

        init = STRATEGIES[self.name].__init__
        params = inspect.signature(init).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        accepted = [p for p in params if p not in ("self", "problem", "seed")]
        if "seed" in self.options:
            raise ConfigError("strategy.options.seed: the strategy's seed is the run's `seed`")
        unknown = [k for k in self.options if k not in accepted]
        if unknown and not takes_any:
            raise ConfigError(
                f"strategy {self.name!r} has no option {', '.join(map(repr, unknown))}; "
                f"its options: {', '.join(accepted) or 'none'}"
            )
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # noqa: BLE001 - an unresolvable annotation: the strategy checks its own options
            hints = {}
        check_option_types(self.options, hints, "strategy.options")
        return self


class ExecutionConfig(FrozenConfig):
    """Where the evaluations of a batch run (:mod:`bambo.execution`, :mod:`bambo.ray_executor`).

    Attributes:
        backend: ``local`` (one trial after another in this process) or ``ray`` (trials side
            by side on Ray workers; the ``ray`` extra).
        address: Ray only: ``local`` starts a Ray cluster on this machine; ``auto`` or
            ``ray://host:port`` joins a running one.
        workers: Ray only: workers, each evaluating one trial at a time.
        resources_per_trial: Ray only: resources each worker holds, e.g. ``{GPU: 1}``
            (default ``{CPU: 1}``).
        retries: Ray only: times a trial whose worker died is run again before it fails.
        mode: ``batch`` (ask for ``batch_size`` candidates, evaluate all, tell) or ``async``
            (a worker that frees up gets a new candidate at once, proposed with the running
            ones pending; strategies ``bambo``, ``sobol``, ``random``). See
            :meth:`bambo.experiment.Experiment.run`.
    """

    backend: Literal["local", "ray"] = "local"
    mode: Literal["batch", "async"] = "batch"
    address: str = "local"
    workers: Count = 1
    resources_per_trial: dict[str, FiniteFloat] | None = None
    retries: Annotated[int, Strict(), Field(ge=0, le=100)] = 0

    @model_validator(mode="after")
    def _ray_settings(self) -> ExecutionConfig:
        if self.backend == "local" and (
            self.workers != 1 or self.resources_per_trial is not None or self.retries or self.address != "local"
        ):
            raise ConfigError("execution: workers, address, resources_per_trial and retries apply to backend: ray")
        if self.resources_per_trial is not None and any(v < 0 for v in self.resources_per_trial.values()):
            raise ConfigError(f"execution.resources_per_trial must be >= 0, got {self.resources_per_trial}")
        return self

    def executor(self, timeout_s: float | None = None) -> Executor:
        """The executor these settings describe.

        Raises:
            ConfigError: ``backend: ray`` without Ray installed (names the extra).
        """
        if self.backend == "local":
            return LocalExecutor(timeout_s)
        from bambo.ray_executor import RayExecutor

        return RayExecutor(
            workers=self.workers,
            address=None if self.address == "local" else self.address,
            resources_per_trial=self.resources_per_trial,
            retries=self.retries,
            timeout_s=timeout_s,
        )


class RunConfig(FrozenConfig):
    """A whole experiment.

    Attributes:
        models: Base and experts.
        merge: Method and search space.
        evaluator: The evaluation function (a benchmark brings its own).
        objectives: Objectives from the evaluator's metrics (a benchmark brings its own).
        ref_point: Hypervolume reference in the objectives' own directions.
        strategy: Search strategy.
        budget: Evaluations in total (with ``halving``: evaluation cost, a low-fidelity
            evaluation counting its fidelity).
        batch_size: Points per batch (with ``halving``: full evaluations per batch at most).
        execution: Where the evaluations run (this process, or Ray workers).
        halving: Multi-fidelity successive halving inside each batch (:class:`~bambo.fidelity.Halving`:
            ``fidelity``, ``factor``, ``low_fidelity``); the evaluator must take a ``fidelity``.
        seed: Seed of every random choice.
        output: Run folder (journal, config copy, results), relative to the config file.
    """

    models: ModelsConfig
    merge: MergeConfig = Field(default_factory=MergeConfig)
    evaluator: EvaluatorConfig = Field(default_factory=EvaluatorConfig)
    objectives: list[Objective] | None = Field(default=None, min_length=1)
    ref_point: list[FiniteFloat] | None = None
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    budget: Count = 32
    batch_size: Count = 4
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    halving: Halving | None = None
    seed: Seed = 0
    output: Path = Path("runs/run")

    @model_validator(mode="after")
    def _complete(self) -> RunConfig:
        if self.models.benchmark is None:
            if self.evaluator.entry_point is None:
                raise ConfigError("evaluator.entry_point is required when models are files")
            if not self.objectives:
                raise ConfigError("objectives are required when models are files (names of the evaluator's metrics)")
        if self.objectives is not None and self.ref_point is not None and len(self.ref_point) != len(self.objectives):
            raise ConfigError(f"ref_point has {len(self.ref_point)} values for {len(self.objectives)} objectives")
        if self.evaluator.entry_point is None and self.evaluator.options:
            raise ConfigError("evaluator.options only apply to an evaluator.entry_point (a benchmark's takes none)")
        self._check_objectives()
        validation.check_path_text(self.output, "output")
        for key in WARM_START_OPTIONS:
            size = self.strategy.options.get(key)
            if isinstance(size, int) and size > self.budget:
                raise ConfigError(f"strategy.options.{key} is {size}, more than the budget {self.budget}")
        self.check_execution()
        return self

    def check_execution(self) -> None:
        """Raise :class:`ConfigError` if ``execution.mode`` is async and the strategy learns whole batches,
        or with halving."""
        if self.execution.mode == "async" and self.halving is not None:
            raise ConfigError("execution.mode async cannot run halving, which promotes within whole batches")
        if self.execution.mode == "async":
            from bambo.strategies import asynchronous_strategies

            if self.strategy.name not in asynchronous_strategies():
                raise ConfigError(
                    f"execution.mode async needs a strategy that proposes with candidates pending "
                    f"({', '.join(asynchronous_strategies())}); {self.strategy.name!r} learns whole batches"
                )

    def _check_objectives(self) -> None:
        names = [o.name for o in self.objectives or []]
        if any(not name.strip() for name in names) or len(set(names)) != len(names):
            raise ConfigError(f"objectives need distinct, non-empty names, got {names}")
        for objective in self.objectives or []:
            values = [v for pair in (objective.anchors or {}).values() for v in pair]
            values += [v for v in objective.bounds if v is not None]
            if not all(math.isfinite(v) for v in values):
                raise ConfigError(f"objective {objective.name!r}: anchors and bounds must be finite numbers")

    @classmethod
    def from_yaml(cls, path: Path | str) -> RunConfig:
        """Read a config file.

        Raises:
            ConfigError: Unreadable YAML, or a bad field (named in the message).
        """
        path = Path(path)
        text = validation.read_config_text(path)  # a FIFO, a device or a huge file is refused unread
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config {path} is not valid YAML: {exc}") from None
        except RecursionError:
            raise ConfigError(f"config {path} is nested too deeply") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config {path} must be a mapping of sections, got {type(data).__name__}")
        validation.check_yaml_shape(data)
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def to_yaml(self, path: Path | str | None = None) -> str:
        """The config as YAML (written to ``path`` if given)."""
        text = yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text


WARM_START_OPTIONS = ("n_initial",)  # BAMBO's and Bayesian MAP's warm start cannot exceed the budget (a PMTO run
# shorter than its initial tasks is allowed: it still writes its results)


def resolve(root: Path, path: Path) -> Path:
    """``path`` relative to ``root`` unless absolute."""
    return path if path.is_absolute() else root / path
