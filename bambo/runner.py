"""Journaled runs: ``bambo run CONFIG`` and ``bambo resume RUN_DIR``.

A run folder holds ``config.yaml`` (the run's config, with model paths made
absolute), ``journal.sqlite`` (:mod:`bambo.store`) and the results
(``pareto.csv``, ``pareto.json``, ``pareto.png``). Each evaluation is journaled as
``running`` before it starts and ``completed``/``failed`` after it ends.

Resuming rebuilds the problem and the strategy from the config (same seed),
replays every journaled batch through the strategy (``Strategy.replay`` then
``tell`` with the journaled results), re-runs the trials of a batch that were
``pending`` or ``running`` when the process died, and goes on to the budget.
Completed trials are never evaluated again.

An evaluation with ``evaluator.timeout_s`` runs in a worker thread; one that
overruns is recorded as failed and the run goes on. Python cannot kill a thread:
a hung evaluator keeps its thread (a daemon, ended with the process).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bambo.config import PreferencesConfig, RunConfig, resolve
from bambo.errors import BamboError, ConfigError, EvaluationError
from bambo.parametric import PreferenceFamily, anchor_range
from bambo.problem import MergeProblem, Objective
from bambo.report import write_pareto
from bambo.store import Journal, Trial
from bambo.strategies import PMTO, ParetoResult, Strategy, get_strategy
from bambo.strategies.base import parameter_names_of
from bambo.strategies.pmto import best_per_task

logger = logging.getLogger(__name__)
SearchProblem = MergeProblem | PreferenceFamily
JOURNAL = "journal.sqlite"
TASK_MODEL = "task_model.pt"
CONFIG = "config.yaml"


def build_problem(config: RunConfig, root: Path) -> MergeProblem:
    """Load the models and build the merge problem a config describes (no evaluation).

    Args:
        config: The run config.
        root: Folder that relative model paths are resolved against.

    Raises:
        ConfigError: Missing files, unknown names, an unimportable evaluator.
        ModelMismatchError: Experts whose tensors differ from the base's.
    """
    models, merge = config.models, config.merge
    if models.benchmark is not None:
        problem = _benchmark_problem(config)
        if config.evaluator.entry_point is None and config.objectives is None and config.ref_point is None:
            return problem
        evaluator = problem.evaluator if config.evaluator.entry_point is None else _user_evaluator(config)
        objectives = config.objectives or problem.objectives
        ref = config.ref_point
        if ref is None and config.objectives is None and problem.ref_point is not None:
            ref = problem.to_user(problem.ref_point).tolist()
        return MergeProblem(problem.merger, problem.space, evaluator, objectives, ref_point=ref)
    from bambo.benchmarks.common import merge_setup
    from bambo.merge import TaskVectors
    from bambo.weights import load_state_dict

    models.check_files(root)
    base = load_state_dict(resolve(root, models.base))  # type: ignore[arg-type]
    names = list(models.experts)  # type: ignore[arg-type]
    experts = [load_state_dict(resolve(root, models.experts[n])) for n in names]  # type: ignore[index]
    tv = TaskVectors(base, experts, expert_names=names)
    merger, space = merge_setup(
        tv, merge.method, merge.granularity, merge.blocks, merge.bounds, merge.options, merge.partitioner
    )
    objectives: list[Objective] = list(config.objectives or [])
    return MergeProblem(merger, space, _user_evaluator(config), objectives, ref_point=config.ref_point)


def _benchmark_problem(config: RunConfig) -> MergeProblem:
    models, merge = config.models, config.merge
    if models.benchmark == "digits":
        from bambo.benchmarks.digits import DigitsBenchmark, DigitsConfig

        bench: Any = DigitsBenchmark.build(DigitsConfig())
    else:
        from bambo.benchmarks.text import TextBenchmark, TextConfig

        bench = TextBenchmark.build(TextConfig())
    tasks = models.tasks or list(bench.task_names)[:2]
    return bench.problem(
        tasks,
        method=merge.method,
        granularity=merge.granularity,
        partition=merge.blocks,
        partitioner=merge.partitioner,
        bounds=merge.bounds,
        **merge.options,
    )


def _user_evaluator(config: RunConfig) -> Callable[[dict[str, torch.Tensor]], Any]:
    return partial(config.evaluator.load(), **config.evaluator.options)


def start(
    config_path: Path | str, output: Path | str | None = None, progress: bool = True
) -> tuple[Path, ParetoResult]:
    """``bambo run``: validate, build the problem, create the run folder, run to the budget.

    Raises:
        ConfigError: Bad config, or the run folder already has a journal.
    """
    config_path = Path(config_path)
    config = RunConfig.from_yaml(config_path)
    root = config_path.resolve().parent
    run_dir = resolve(root, Path(output) if output is not None else config.output)
    if (run_dir / JOURNAL).exists() and Journal(run_dir / JOURNAL).trials():
        raise ConfigError(f"{run_dir} already holds a run; continue it with `bambo resume {run_dir}`")
    merge_problem = build_problem(config, root)
    absolute, problem = search_problem(_absolute_paths(config, root), merge_problem)
    run_dir.mkdir(parents=True, exist_ok=True)
    absolute.to_yaml(run_dir / CONFIG)
    with Journal(run_dir / JOURNAL) as journal:
        journal.set_meta("parameter_names", parameter_names_of(problem))
        journal.set_meta("objective_names", problem.objective_names)
        journal.set_meta("signs", problem.signs.tolist())
        journal.set_meta("ref_point", None if problem.ref_point is None else problem.ref_point.tolist())
        journal.set_meta("bounds", problem.bounds.tolist())
        journal.set_meta("front_columns", getattr(problem, "front_columns", None))
    return run_dir, execute(run_dir, absolute, problem, progress)


def resume(run_dir: Path | str, progress: bool = True) -> ParetoResult:
    """``bambo resume``: continue a run from its journal to its budget."""
    run_dir = Path(run_dir)
    if not (run_dir / JOURNAL).exists() or not (run_dir / CONFIG).exists():
        raise ConfigError(f"{run_dir} is not a run folder (needs {CONFIG} and {JOURNAL})")
    config = RunConfig.from_yaml(run_dir / CONFIG)
    _, problem = search_problem(config, build_problem(config, run_dir))
    return execute(run_dir, config, problem, progress)


def search_problem(config: RunConfig, problem: MergeProblem) -> tuple[RunConfig, SearchProblem]:
    """The problem the strategy searches: the merge problem, or (strategy ``pmto``) its preference family.

    For ``pmto`` without ``preferences.ideal``/``nadir``, both are measured now from the
    base model and each expert alone (:func:`~bambo.parametric.anchor_range`, ``1 + N``
    evaluations without the evaluator's timeout) and put into the returned config, so a
    resumed run and ``bambo export`` use the same values.

    Args:
        config: The run's config.
        problem: The merge problem built from it.

    Returns:
        ``(config, problem)``: the config with measured preferences, and the problem to search.

    Raises:
        ConfigError: ``pmto`` on a problem with one objective, or objectives that do not vary.
    """
    if config.strategy.name != "pmto":
        return config, problem
    if problem.num_objectives < 2:
        raise ConfigError(
            f"strategy pmto searches over preferences and needs >= 2 objectives, got {problem.num_objectives}"
        )
    preferences = config.preferences or PreferencesConfig()
    if preferences.ideal is None or preferences.nadir is None:
        ideal, nadir = anchor_range(problem)
        preferences = preferences.model_copy(update={"ideal": ideal.tolist(), "nadir": nadir.tolist()})
        config = config.model_copy(update={"preferences": preferences})
    family = PreferenceFamily(problem, preferences.ideal, preferences.nadir, preferences.rho)
    return config, family


def _absolute_paths(config: RunConfig, root: Path) -> RunConfig:
    models = config.models
    if models.benchmark is not None:
        return config
    experts = {k: resolve(root, v).resolve() for k, v in (models.experts or {}).items()}
    new_models = models.model_copy(update={"base": resolve(root, models.base).resolve(), "experts": experts})  # type: ignore[arg-type]
    return config.model_copy(update={"models": new_models})


def execute(run_dir: Path, config: RunConfig, problem: SearchProblem, progress: bool = True) -> ParetoResult:
    """Replay the journal, then evaluate batches until the budget; write the results.

    Args:
        run_dir: The run folder.
        config: The run's config.
        problem: The problem built from it (:func:`search_problem`).
        progress: Show a progress bar.
    """
    strategy = get_strategy(config.strategy.name, problem, seed=config.seed, **config.strategy.options)
    timeout = config.evaluator.timeout_s
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Journal(run_dir / JOURNAL) as journal, Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(f"{strategy.name} evaluations", total=config.budget)
        done = 0
        for batch in journal.batches():
            X = torch.tensor([t.x for t in batch], dtype=torch.float64)
            strategy.replay(X)
            for trial in batch:
                if trial.status in ("pending", "running"):
                    _evaluate(journal, problem, trial.id, X[trial.id - batch[0].id], timeout)
            by_id = {t.id: t for t in journal.trials()}
            _tell(strategy, X, [by_id[t.id] for t in batch])
            done += len(batch)
            bar.update(task, completed=done)
        while done < config.budget:
            X = strategy.ask(min(config.batch_size, config.budget - done))
            if X.shape[0] == 0:
                break
            ids = journal.add_batch(X.tolist())
            for trial_id, x in zip(ids, X, strict=True):
                _evaluate(journal, problem, trial_id, x, timeout)
                bar.advance(task)
            by_id = {t.id: t for t in journal.trials()}
            _tell(strategy, X, [by_id[i] for i in ids])
            done += X.shape[0]
    result = strategy.result()
    metadata = {"config": config.model_dump(mode="json", exclude_none=True), "run_dir": str(run_dir)}
    write_pareto(result, run_dir, metadata, title=f"{config.strategy.name}: {' vs '.join(problem.objective_names)}")
    if isinstance(strategy, PMTO):  # the online phase (`bambo export --preference`) reads it
        if len(best_per_task(strategy.family, *strategy.completed)[0]) >= 2:
            strategy.task_model.save(run_dir / TASK_MODEL, n_evaluations=result.n_evaluations)
        else:
            logger.warning("fewer than two preferences have completed evaluations: no task model saved yet")
    return result


def _tell(strategy: Strategy, X: torch.Tensor, trials: list[Trial]) -> None:
    m = strategy.problem.num_objectives
    Y = torch.full((len(trials), m), float("nan"), dtype=torch.float64)
    errors: dict[int, str] = {}
    for row, trial in enumerate(trials):
        if trial.status == "completed" and trial.objectives is not None:
            Y[row] = torch.tensor(trial.objectives, dtype=torch.float64)
        else:
            errors[row] = trial.error or f"trial {trial.id} is {trial.status}"
    strategy.tell(X, Y, errors)


def _evaluate(journal: Journal, problem: SearchProblem, trial_id: int, x: torch.Tensor, timeout: float | None) -> None:
    """Evaluate one trial, journaling ``running`` before and the outcome after."""
    journal.mark_running(trial_id)
    try:
        metrics = _metrics_with_timeout(problem, x, timeout)
        objectives = problem.objective_values(metrics, x)
    except EvaluationError as exc:
        journal.fail(trial_id, str(exc))
        return
    journal.complete(trial_id, objectives, metrics)


def _metrics_with_timeout(problem: SearchProblem, x: torch.Tensor, timeout: float | None) -> dict[str, float]:
    if timeout is None:
        return problem.metrics(x)
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["metrics"] = problem.metrics(x)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller below
            outcome["error"] = exc

    thread = threading.Thread(target=work, name="bambo-evaluation", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise EvaluationError(f"evaluation timed out after {timeout:g} s (its thread was abandoned)")
    if "error" in outcome:
        error = outcome["error"]
        if isinstance(error, EvaluationError):
            raise error
        raise EvaluationError(f"evaluation raised {type(error).__name__}: {error}") from error
    return outcome["metrics"]


def journal_result(run_dir: Path | str) -> ParetoResult:
    """A :class:`ParetoResult` of a run from its journal alone (no models loaded).

    Raises:
        BamboError: The folder has no journal, or the journal no metadata.
    """
    run_dir = Path(run_dir)
    with Journal(run_dir / JOURNAL, create=False) as journal:
        names = journal.meta("parameter_names")
        if names is None:
            raise BamboError(f"the journal in {run_dir} has no run metadata")
        objective_names = journal.meta("objective_names")
        trials = journal.trials()
        signs = torch.tensor(journal.meta("signs"), dtype=torch.float64)
        ref = journal.meta("ref_point")
        columns = journal.meta("front_columns")
    m = len(objective_names)
    X = torch.tensor([t.x for t in trials], dtype=torch.float64).reshape(-1, len(names))
    Y = torch.full((len(trials), m), float("nan"), dtype=torch.float64)
    errors = {}
    for i, t in enumerate(trials):
        if t.status == "completed" and t.objectives is not None:
            Y[i] = torch.tensor(t.objectives, dtype=torch.float64)
        else:
            errors[i] = t.error or t.status
    from bambo.strategies.base import _hypervolume_history

    result = ParetoResult(X, Y, errors, list(names), list(objective_names), signs, front_columns=columns)
    if ref is not None:
        result.ref_point = torch.tensor(ref, dtype=torch.float64)
        result.hypervolume_history = _hypervolume_history(result.front_Y, result.ref_point)
    return result
