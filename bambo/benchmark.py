"""The interface of a merge benchmark, and the registry that finds benchmarks by name.

A benchmark brings a base model, experts fine-tuned from it, an evaluator and a
way to build merge problems (:meth:`Benchmark.problem`). bambo's own benchmarks
(``digits``, ``text``) live in :mod:`bambo.benchmarks`, which the core never
imports: like any third-party benchmark they are registered as package entry
points in the group ``bambo.benchmarks`` (``pyproject.toml``), and
:func:`get_benchmark` loads the one a config or the CLI names. The registry is
the list of those entry points: :func:`available_benchmarks`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

from bambo.config_base import FrozenConfig
from bambo.errors import ConfigError, UnknownNameError
from bambo.merge import StateDict, TaskVectors
from bambo.merge_problem import Granularity, MergeProblem

ENTRY_POINT_GROUP = "bambo.benchmarks"


class Benchmark(ABC):
    """A base model, its experts and their evaluation: a source of merge problems.

    Attributes:
        name: The registry name.
        config_class: The frozen settings class of :meth:`build` (all of them key the cache).
        default_tasks: The experts ``bambo demo`` merges by default.
        default_budget: The evaluations ``bambo demo`` spends by default.
        splits: The data splits :meth:`describe` and :meth:`summary` accept.
        config: The settings this instance was built with.
        base: The base model's state dict (the tensors that are merged).
        experts: ``{task: expert state dict}``.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[FrozenConfig]]
    default_tasks: ClassVar[tuple[str, ...]]
    default_budget: ClassVar[int] = 32
    splits: ClassVar[tuple[str, ...]] = ("val", "test")
    config: FrozenConfig
    base: StateDict
    experts: dict[str, StateDict]

    @classmethod
    @abstractmethod
    def build(
        cls,
        config: Any = None,
        cache_dir: Path | str | None = None,
        use_cache: bool = True,
        progress: Callable[[str], None] | None = None,
    ) -> Benchmark:
        """Load the models from the cache, or train and cache them.

        Args:
            config: An instance of :attr:`config_class` (default: its defaults).
            cache_dir: The benchmark's cache folder.
            use_cache: Read and write the cache.
            progress: Called with a line of text per step of a long build.
        """

    @property
    @abstractmethod
    def task_names(self) -> list[str]:
        """The tasks, one expert each, in order."""

    @abstractmethod
    def task_vectors(self, tasks: Sequence[str] | None = None) -> TaskVectors:
        """Task vectors of the chosen experts (default: all)."""

    @abstractmethod
    def problem(
        self,
        tasks: Sequence[str] | None = None,
        method: str = "task_arithmetic",
        granularity: Granularity = "model",
        blocks: Sequence[Sequence[int]] | int = 3,
        partitioner: str = "uniform",
        bounds: tuple[float, float] = (0.0, 1.0),
        **method_options: Any,
    ) -> MergeProblem:
        """A merge problem with one objective per task.

        Args:
            tasks: Experts to merge and tasks to score (default: all).
            method: Merge method name.
            granularity: ``model``, ``layer`` or ``block``.
            blocks: For block granularity: a count K or the blocks themselves.
            partitioner: How a count K is split (``uniform``, ``hybrid``, ...).
            bounds: Bounds of every coefficient.
            **method_options: Options of the merge method.
        """

    @abstractmethod
    def summary(self, split: str = "val") -> dict[str, dict[str, float]]:
        """``{model: {task: accuracy}}`` for the base and every expert."""

    @abstractmethod
    def describe(self, split: str = "val") -> str:
        """A plain-text report of the base, the experts and a few merges on every task."""


def available_benchmarks() -> list[str]:
    """Names of the registered benchmarks (entry points of the group ``bambo.benchmarks``)."""
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def get_benchmark(name: str) -> type[Benchmark]:
    """The benchmark class registered as ``name``.

    Raises:
        UnknownNameError: No such benchmark; the message lists the registered ones.
        ConfigError: The entry point does not load or is not a :class:`Benchmark`.
    """
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        raise UnknownNameError("benchmark", name, available_benchmarks())
    try:
        cls = found[0].load()
    except ImportError as exc:
        raise ConfigError(f"benchmark {name!r} ({found[0].value}) cannot be imported: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Benchmark)):
        raise ConfigError(f"benchmark {name!r} ({found[0].value}) is not a bambo Benchmark subclass")
    return cls


def load_benchmark(
    name: str,
    settings: Mapping[str, Any] | None = None,
    cache_dir: Path | str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Benchmark:
    """Build (or load from its cache) the benchmark registered as ``name``.

    Args:
        name: A registered name (:func:`available_benchmarks`).
        settings: Fields of the benchmark's config class (e.g. ``{"seed": 1}``).
        cache_dir: Cache folder of the benchmark (default: its own under ``~/.cache/bambo``).
        progress: Called with a line of text per step of a long build.

    Raises:
        UnknownNameError: No such benchmark.
        ConfigError: Settings its config class does not accept.
    """
    cls = get_benchmark(name)
    config = cls.config_class(**dict(settings or {}))
    return cls.build(config, cache_dir=cache_dir, progress=progress)
