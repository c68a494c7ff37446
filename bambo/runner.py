"""Journaled runs from a config: ``bambo run CONFIG``, ``bambo resume RUN_DIR``, ``bambo demo``.

A run folder holds ``config.yaml`` (the run's config, with model paths made absolute
and whatever the strategy's :meth:`~bambo.strategies.Strategy.prepare` measured),
``journal.sqlite`` (:mod:`bambo.store`), the strategy's files
(:meth:`~bambo.strategies.Strategy.save`) and the results (``pareto.csv``,
``pareto.json``, ``pareto.png``). The search itself is :class:`bambo.experiment.Experiment`:
resuming opens it on the journal, which replays every journaled batch and re-runs
the trials of a batch that was cut short; completed trials are never evaluated again.
"""

from __future__ import annotations

import math
import shutil
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from bambo import validation
from bambo.config import DataFlowConfig, ExecutionConfig, RunConfig, resolve
from bambo.dataflow import LayerPath
from bambo.dataflow.problem import DataFlowProblem
from bambo.errors import BamboWarning, ConfigError, EvaluationError
from bambo.execution import LocalExecutor
from bambo.experiment import Experiment
from bambo.merge_problem import MergeProblem
from bambo.problem import Problem
from bambo.report import write_pareto
from bambo.result import ParetoResult, RunMeta, build_result
from bambo.store import CONFIG, JOURNAL, Journal, RunLock
from bambo.strategies import STRATEGIES, Strategy, get_strategy

if TYPE_CHECKING:
    from bambo.benchmark import Benchmark

RESULT_FILES = ("pareto.csv", "pareto.json", "pareto.png", "front.png", "hypervolume.png", "front_nd.png")


def build_problem(config: RunConfig, root: Path, benchmark: Benchmark | None = None) -> Problem:
    """Load the models and build the problem a config describes (no evaluation).

    A merge problem (``merge.kind: parameters``), or the data-flow problem over the models it
    builds (``merge.kind: dataflow``, :func:`dataflow_problem`).

    Args:
        config: The run config.
        root: Folder that relative model paths are resolved against.
        benchmark: The config's benchmark, already loaded (else it is loaded here).

    Raises:
        ConfigError: Missing files, unknown names, an unimportable evaluator, a bad source
            or start path of a data-flow search (naming the hop).
        ModelMismatchError: Experts whose tensors differ from the base's, layers that
            cannot be swapped.
    """
    problem = build_merge_problem(config, root, benchmark)
    if config.merge.kind == "dataflow":
        return dataflow_problem(config, problem)
    return problem


def dataflow_problem(config: RunConfig, merge_problem: MergeProblem) -> DataFlowProblem:
    """The data-flow problem of ``config.merge.dataflow`` over the models ``merge_problem`` builds.

    Raises:
        ConfigError: An unknown source name, a ``merge_point`` of the wrong length or
            outside the bounds, a start path that names an unknown source or layer or does
            not fit the slots (names the hop).
    """
    settings = config.merge.dataflow or DataFlowConfig()
    experts = list(merge_problem.merger.task_vectors.expert_names)
    anchors = merge_problem.anchor_points()
    known: dict[str, Any] = {"base": anchors[0], **{e: anchors[i + 1] for i, e in enumerate(experts)}}
    if settings.merge_point is not None:
        if len(settings.merge_point) != merge_problem.dim:
            raise ConfigError(
                f"merge.dataflow.merge_point has {len(settings.merge_point)} values; the merge problem has "
                f"{merge_problem.dim} coefficients ({', '.join(merge_problem.space.parameter_names)})"
            )
        known["merge"] = torch.tensor(settings.merge_point, dtype=torch.float64)
    names = settings.sources or experts
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"merge.dataflow.sources: unknown model(s) {unknown}; valid: {', '.join(known)}")
    paths = [LayerPath.parse(text) for text in settings.paths]
    return DataFlowProblem.from_merge_problem(
        merge_problem,
        {n: known[n] for n in names},
        repeats=settings.repeats,
        scale_bounds=settings.scale_bounds,
        pin_first=settings.pin_first,
        pin_last=settings.pin_last,
        start_paths=paths,
    )


def build_merge_problem(config: RunConfig, root: Path, benchmark: Benchmark | None = None) -> MergeProblem:
    """Load the models and build the parameter-space merge problem of a config (no evaluation).

    Args:
        config: The run config.
        root: Folder that relative model paths are resolved against.
        benchmark: The config's benchmark, already loaded (else it is loaded here).

    Raises:
        ConfigError: Missing files, unknown names, an unimportable evaluator.
        ModelMismatchError: Experts whose tensors differ from the base's.
    """
    models, merge = config.models, config.merge
    if models.benchmark is not None:
        from bambo.benchmark import load_benchmark

        cache = None if models.cache_dir is None else resolve(root, models.cache_dir)
        bench = benchmark or load_benchmark(models.benchmark, models.settings, cache_dir=cache)
        tasks = models.tasks or list(bench.task_names)[:2]
        problem = bench.problem(
            tasks,
            method=merge.method,
            granularity=merge.granularity,
            blocks=merge.blocks,
            partitioner=merge.partitioner,
            bounds=merge.bounds,
            **merge.options,
        )
        if config.evaluator.entry_point is None and config.objectives is None and config.ref_point is None:
            return problem
        evaluator = problem.evaluator if config.evaluator.entry_point is None else _user_evaluator(config, root)
        objectives = config.objectives or problem.objectives
        ref = config.ref_point
        if ref is None and config.objectives is None and problem.ref_point is not None:
            ref = problem.to_user(problem.ref_point).tolist()
        return MergeProblem(
            problem.merger, problem.space, evaluator, objectives, ref_point=ref, model_factory=problem.model_factory
        )
    models.check_files(root)
    experts = {name: resolve(root, path) for name, path in (models.experts or {}).items()}
    return MergeProblem.from_models(
        resolve(root, models.base),  # type: ignore[arg-type] - checked by ModelsConfig
        experts,
        _user_evaluator(config, root),
        list(config.objectives or []),
        method=merge.method,
        granularity=merge.granularity,
        blocks=merge.blocks,
        partitioner=merge.partitioner,
        bounds=merge.bounds,
        ref_point=config.ref_point,
        method_options=merge.options,
        engine=merge.engine,
    )


def _user_evaluator(config: RunConfig, root: Path) -> Callable[[dict[str, torch.Tensor]], Any]:
    return partial(config.evaluator.load(root), **config.evaluator.options)


def check_inputs(config: RunConfig, root: Path) -> None:
    """What can be checked before a model is loaded: the model files and the evaluator's import.

    Raises:
        ConfigError: A missing, special, unreadable or corrupt weights file (naming its field), an
            evaluator that cannot be imported in ``evaluator.import_timeout_s`` or called, or the
            Ray backend without Ray installed.
    """
    config.models.check_files(root)
    if config.evaluator.entry_point is not None:
        config.evaluator.load(root)
    if config.execution.backend == "ray":
        from bambo.ray_executor import import_ray

        import_ray()  # not installed: one message naming the extra, before anything is loaded


def search_problem(config: RunConfig, problem: Problem) -> tuple[RunConfig, Problem]:
    """The problem the config's strategy searches, and the config with what it measured.

    Calls the strategy's :meth:`~bambo.strategies.Strategy.prepare` hook (PMTO builds
    a preference family and may measure its ideal and nadir) and records the options
    it returns in the config, so a resumed run and ``bambo export`` rebuild the same search.
    """
    cls = STRATEGIES[config.strategy.name]
    searched, options = cls.prepare(problem, dict(config.strategy.options))
    if options != config.strategy.options:
        config = config.model_copy(update={"strategy": config.strategy.model_copy(update={"options": options})})
    return config, searched


def build_strategy(config: RunConfig, problem: Problem) -> Strategy:
    """The config's strategy for the searched problem (:func:`search_problem`)."""
    return get_strategy(config.strategy.name, problem, seed=config.seed, **config.strategy.options)


def with_execution(config: RunConfig, overrides: dict[str, Any] | None) -> RunConfig:
    """``config`` with fields of its ``execution`` section replaced (``bambo run --backend ray --workers 4``).

    Raises:
        ConfigError: The settings that result are invalid (named).
    """
    if not overrides:
        return config
    settings = ExecutionConfig(**{**config.execution.model_dump(), **overrides})
    config = config.model_copy(update={"execution": settings})
    config.check_execution()
    return config


def start(
    config_path: Path | str,
    output: Path | str | None = None,
    progress: bool = True,
    replace: bool = False,
    execution: dict[str, Any] | None = None,
) -> tuple[Path, ParetoResult]:
    """``bambo run``: validate, build the problem, create the run folder, run to the budget.

    Args:
        config_path: The YAML config.
        output: The run folder (default: the config's ``output``, relative to the config).
        progress: Show a progress bar.
        replace: Delete a run already in the folder first (``bambo demo``); otherwise
            such a folder is refused.
        execution: Fields of the config's ``execution`` section to replace (the CLI's flags).

    Raises:
        ConfigError: Bad config, or the run folder already has a journal.
    """
    config_path = Path(config_path)
    config = with_execution(RunConfig.from_yaml(config_path), execution)
    root = config_path.resolve().parent
    run_dir = resolve(root, Path(output) if output is not None else config.output)
    validation.check_output_dir(run_dir, "--output" if output is not None else "output")
    check_inputs(config, root)
    return run_dir, start_config(config, root, run_dir, progress, replace)


def dry_run(config_path: Path | str) -> dict[str, float]:
    """``bambo run --check``: evaluate the base model once and check every objective's metrics.

    Builds the problem as ``bambo run`` does, evaluates the base model (every coefficient 0,
    :meth:`~bambo.merge_problem.MergeProblem.anchor_points`; a data-flow search's first start
    path) under ``evaluator.timeout_s`` and writes nothing.

    Returns:
        The evaluator's metrics.

    Raises:
        ConfigError: A bad config, or an objective's metric missing or not finite (named).
        EvaluationError: The evaluation raised or timed out.
    """
    config_path = Path(config_path)
    config = RunConfig.from_yaml(config_path)
    root = config_path.resolve().parent
    check_inputs(config, root)
    problem = build_problem(config, root)
    outcome: dict[str, Any] = {}
    LocalExecutor(config.evaluator.timeout_s).evaluate(
        problem,
        [(0, _first_point(problem), 1.0)],
        lambda _: None,
        lambda _, metrics, error: outcome.update(metrics=metrics, error=error),
    )
    if outcome["error"] is not None:
        raise EvaluationError(f"the evaluation of the base model failed: {outcome['error']}")
    metrics: dict[str, float] = outcome["metrics"]
    for objective in problem.objectives:
        for name in objective.metrics:
            if name not in metrics:
                raise ConfigError(
                    f"objective {objective.name!r}: the evaluator returned no metric {name!r} (got {sorted(metrics)})"
                )
            if not math.isfinite(metrics[name]):
                raise ConfigError(f"objective {objective.name!r}: metric {name!r} is not finite: {metrics[name]}")
    return metrics


def _first_point(problem: Problem) -> torch.Tensor:
    """What ``bambo run --check`` evaluates: the base model of a merge problem, a data-flow problem's first path."""
    if isinstance(problem, MergeProblem):
        return problem.anchor_points()[0]
    return problem.heuristic_points()[0]


def start_config(
    config: RunConfig,
    root: Path,
    run_dir: Path,
    progress: bool = True,
    replace: bool = False,
    problem: Problem | None = None,
) -> ParetoResult:
    """Start the run a config describes in ``run_dir`` (see :func:`start`), holding its :class:`RunLock`.

    Args:
        config: The run's config.
        root: The folder relative paths are resolved against.
        run_dir: The run folder.
        progress: Show a progress bar.
        replace: Delete a run already in the folder first.
        problem: The merge problem already built from ``config`` (else built here).

    Raises:
        RunInUseError: Another process is writing a run in ``run_dir``.
    """
    if not replace:
        _refuse_held_run(run_dir, read_only=True)  # early, before any model is loaded
    merge_problem = problem if problem is not None else build_problem(config, root)
    absolute, searched = search_problem(_absolute_paths(config, root), merge_problem)
    build_strategy(absolute, searched)  # its options are checked before the run folder is made
    # the lock (which creates the folder) is taken only once nothing in the config can fail
    with RunLock(run_dir / JOURNAL):
        if (run_dir / JOURNAL).exists():
            if not replace:
                _refuse_held_run(run_dir, read_only=False)  # a run may have started meanwhile
            _clear_run(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        absolute.to_yaml(run_dir / CONFIG)
        return execute(run_dir, absolute, searched, progress)


def _refuse_held_run(run_dir: Path, read_only: bool) -> None:
    """Raise :class:`ConfigError` if ``run_dir`` already holds a journaled run."""
    if not (run_dir / JOURNAL).is_file():
        return
    with Journal(run_dir / JOURNAL, read_only=read_only) as journal:
        held = bool(journal.trials())
    if held:
        raise ConfigError(f"{run_dir} already holds a run; continue it with `bambo resume {run_dir}`")


def _clear_run(run_dir: Path) -> None:
    for name in (JOURNAL, f"{JOURNAL}-wal", f"{JOURNAL}-shm", CONFIG, *RESULT_FILES):
        (run_dir / name).unlink(missing_ok=True)
    for path in run_dir.glob("*.pt"):  # strategy files (a task model)
        path.unlink()
    if (run_dir / "merged").is_dir():
        shutil.rmtree(run_dir / "merged")


def resume(run_dir: Path | str, progress: bool = True, execution: dict[str, Any] | None = None) -> ParetoResult:
    """``bambo resume``: continue a run from its journal to its budget.

    The run's :class:`~bambo.store.RunLock` is taken first, before any model is
    loaded, and held to the end. ``execution`` replaces fields of the run's execution
    settings for this resume (more workers, say); the evaluations do not depend on them.

    Raises:
        ConfigError: Not a run folder.
        RunInUseError: Another process is writing this run.
    """
    run_dir = Path(run_dir)
    if not (run_dir / JOURNAL).exists() or not (run_dir / CONFIG).exists():
        raise ConfigError(f"{run_dir} is not a run folder (needs {CONFIG} and {JOURNAL})")
    with RunLock(run_dir / JOURNAL):
        config = with_execution(RunConfig.from_yaml(run_dir / CONFIG), execution)
        if config.execution.backend == "ray":
            from bambo.ray_executor import import_ray

            import_ray()  # before any model is loaded
        config, problem = search_problem(config, build_problem(config, run_dir))
        return execute(run_dir, config, problem, progress)


def _absolute_paths(config: RunConfig, root: Path) -> RunConfig:
    if config.evaluator.entry_point is not None and config.evaluator.module_path is None:  # resume imports it too
        config = config.model_copy(
            update={"evaluator": config.evaluator.model_copy(update={"module_path": root.resolve()})}
        )
    models = config.models
    if models.benchmark is not None:
        if models.cache_dir is None:
            return config
        return config.model_copy(
            update={"models": models.model_copy(update={"cache_dir": resolve(root, models.cache_dir).resolve()})}
        )
    experts = {k: resolve(root, v).resolve() for k, v in (models.experts or {}).items()}
    new_models = models.model_copy(update={"base": resolve(root, models.base).resolve(), "experts": experts})  # type: ignore[arg-type]
    return config.model_copy(update={"models": new_models})


def execute(run_dir: Path, config: RunConfig, problem: Problem, progress: bool = True) -> ParetoResult:
    """Open the experiment on the run's journal, run it to the budget, write the results.

    The journal's lock is held throughout. Nothing after the search stops the run:
    a result file or a strategy file that cannot be written is a
    :class:`~bambo.errors.BamboWarning` (the journal holds every evaluation, and
    ``bambo report`` rewrites the results from it).

    Args:
        run_dir: The run folder.
        config: The run's config.
        problem: The problem it searches (:func:`search_problem`).
        progress: Show a progress bar.

    Raises:
        RunInUseError: Another process is writing this run.
        RunAbortedError: Every evaluation of the first batch failed with one error.
    """
    strategy = build_strategy(config, problem)
    with Journal(run_dir / JOURNAL) as journal:
        executor = config.execution.executor(config.evaluator.timeout_s)
        try:
            experiment = Experiment(problem, strategy, journal, executor, halving=config.halving)
            result = experiment.run(config.budget, config.batch_size, progress=progress, mode=config.execution.mode)
        finally:
            executor.close()
        metadata = {"config": config.model_dump(mode="json", exclude_none=True), "run_dir": str(run_dir)}
        title = f"{config.strategy.name}: {' vs '.join(problem.objective_names)}"
        for what, step in (
            ("the results (pareto.csv, pareto.json)", lambda: write_pareto(result, run_dir, metadata, title=title)),
            (f"the {config.strategy.name} strategy's files", lambda: strategy.save(run_dir)),
        ):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - every evaluation is journaled; this never stops the run
                warnings.warn(
                    f"the search ended, but writing {what} into {run_dir} failed ({type(exc).__name__}: {exc}); "
                    "every evaluation is in the journal (`bambo report` rewrites the results)",
                    BamboWarning,
                    stacklevel=2,
                )
    return result


def journal_result(run_dir: Path | str) -> ParetoResult:
    """A :class:`ParetoResult` of a run from its journal alone (no models loaded).

    Raises:
        JournalError: The folder has no journal.
        ConfigError: The journal has no run metadata.
    """
    run_dir = Path(run_dir)
    with Journal(run_dir / JOURNAL, read_only=True) as journal:
        stored = journal.meta("run")
        trials = journal.trials()
    if stored is None:
        raise ConfigError(f"the journal in {run_dir} has no run metadata")
    return build_result(trials, RunMeta.from_dict(stored))


def recommend(
    run_dir: Path | str, preference: list[float], rule: str = "cosine", refine: bool = False
) -> tuple[RunConfig, Problem, ParetoResult, Any]:
    """The model a run's strategy recommends for a preference (``bambo export``), without evaluating.

    Returns:
        ``(config, problem, result, recommendation)``; the recommendation's ``x`` is a
        decision vector of the problem (merge coefficients, or a data-flow path's vector).
    """
    run_dir = Path(run_dir)
    config = RunConfig.from_yaml(run_dir / CONFIG)
    problem = build_problem(config, run_dir)
    config, searched = search_problem(config, problem)
    result = journal_result(run_dir)
    choice = build_strategy(config, searched).recommend(result, preference, rule, run_dir, refine)  # type: ignore[arg-type]
    return config, problem, result, choice
