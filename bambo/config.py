"""Experiment configuration: one YAML file describes a whole run (``bambo run CONFIG``).

Every section is a frozen pydantic model with ``extra="forbid"``; a bad file
raises :class:`~bambo.errors.ConfigError` naming the field and what is allowed,
before any model is loaded or evaluated. :meth:`RunConfig.from_yaml` and
:meth:`RunConfig.to_yaml` round-trip.

Example (the digits benchmark)::

    models: {benchmark: digits, tasks: [inverted, noisy]}
    merge: {method: task_arithmetic, granularity: block, blocks: 3}
    strategy: {name: bambo}
    budget: 32
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from bambo.config_base import FrozenConfig
from bambo.errors import ConfigError
from bambo.merge import MERGE_METHODS
from bambo.partition import PARTITIONERS
from bambo.problem import Objective


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
    tasks: list[str] | None = None
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
        return self

    def check_files(self, root: Path) -> None:
        """Raise :class:`ConfigError` naming every model path that does not exist (relative to ``root``)."""
        if self.benchmark is not None:
            return
        paths = {"models.base": self.base, **{f"models.experts.{k}": v for k, v in (self.experts or {}).items()}}
        missing = [f"{field}: {resolve(root, p)}" for field, p in paths.items() if not resolve(root, p).exists()]
        if missing:
            raise ConfigError("model files not found: " + "; ".join(missing))


class MergeConfig(FrozenConfig):
    """The merge method and the search space.

    Attributes:
        method: A merge method name (see :data:`bambo.merge.MERGE_METHODS`).
        options: The method's options (e.g. ``density`` for TIES).
        granularity: ``model``, ``layer`` or ``block``.
        blocks: K, blocks of layers for ``block`` granularity.
        partitioner: How layers are grouped: ``hybrid`` (BAMBO), ``variance``, ``balance``, ``uniform``.
        bounds: ``(lower, upper)`` of every coefficient.
    """

    method: str = "task_arithmetic"
    options: dict[str, Any] = Field(default_factory=dict)
    granularity: Literal["model", "layer", "block"] = "block"
    blocks: int = Field(default=3, ge=1)
    partitioner: str = "hybrid"
    bounds: tuple[float, float] = (0.0, 1.0)

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


class EvaluatorConfig(FrozenConfig):
    """The expensive evaluation: a function ``(state_dict, **options) -> {metric: value}``.

    A function whose signature names ``trial_id`` and/or ``x`` is also given the
    journal's id of the trial and the decision vector (a list of floats).

    Attributes:
        entry_point: ``package.module:function`` (default for a benchmark: its own evaluator).
        options: Keyword arguments passed to the function.
        timeout_s: An evaluation running longer is recorded as failed and the run goes on.
    """

    entry_point: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0)

    @field_validator("entry_point")
    @classmethod
    def _entry_point_form(cls, value: str | None) -> str | None:
        if value is not None and (value.count(":") != 1 or not all(value.split(":"))):
            raise ValueError(f"entry_point must look like 'package.module:function', got {value!r}")
        return value

    def load(self) -> Callable[..., Any]:
        """Import the entry point.

        Raises:
            ConfigError: The module or the function cannot be found.
        """
        if self.entry_point is None:
            raise ConfigError("evaluator.entry_point is required for models given as files")
        module_name, attr = self.entry_point.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"evaluator.entry_point: cannot import module {module_name!r}: {exc}") from None
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise ConfigError(f"evaluator.entry_point: module {module_name!r} has no function {attr!r}")
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


class RunConfig(FrozenConfig):
    """A whole experiment.

    Attributes:
        models: Base and experts.
        merge: Method and search space.
        evaluator: The evaluation function (a benchmark brings its own).
        objectives: Objectives from the evaluator's metrics (a benchmark brings its own).
        ref_point: Hypervolume reference in the objectives' own directions.
        strategy: Search strategy.
        budget: Evaluations in total.
        batch_size: Points per batch.
        seed: Seed of every random choice.
        output: Run folder (journal, config copy, results), relative to the config file.
    """

    models: ModelsConfig
    merge: MergeConfig = Field(default_factory=MergeConfig)
    evaluator: EvaluatorConfig = Field(default_factory=EvaluatorConfig)
    objectives: list[Objective] | None = None
    ref_point: list[float] | None = None
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    budget: int = Field(default=32, ge=1)
    batch_size: int = Field(default=4, ge=1)
    seed: int = 0
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
        return self

    @classmethod
    def from_yaml(cls, path: Path | str) -> RunConfig:
        """Read a config file.

        Raises:
            ConfigError: Unreadable YAML, or a bad field (named in the message).
        """
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config {path} must be a mapping of sections, got {type(data).__name__}")
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


def resolve(root: Path, path: Path) -> Path:
    """``path`` relative to ``root`` unless absolute."""
    return path if path.is_absolute() else root / path
