"""(theta_l, theta_u)-PMTO: offline search over a continuous family of tasks, instant online answers.

Wang et al. 2025 (``shared/papers/pmto-parametric-multitask-summary.txt``, arXiv 2503.08394;
public reference code ambigeV/pmto-tevc). The problem is a
:class:`~bambo.parametric.ParametricProblem`: rows ``(x, theta)``, one objective.

Offline phase (the paper's Alg. 1; one ``plan`` per iteration, served through ``ask``):

1. Initial tasks by Latin hypercube over ``[theta_l, theta_u]``, ``samples_per_task``
   Latin-hypercube solutions each.
2. Every iteration fits the unified GP over ``(x, theta)``
   (:class:`~bambo.surrogates.ParametricTaskGP`) and the task model
   (:class:`~bambo.surrogates.task_model.TaskModel`, theta -> best x, on the best
   ``best_share`` of tasks ranked by their best value, as in the reference code);
3. task evolution adds one task: a pymoo GA over theta maximising the log-determinant
   of the task model's kernel matrix over pool + candidate (a DPP diversity criterion;
   ``task_selection="random"`` draws it uniformly instead, the paper's ablation);
4. one solution per task of the pool (newest first), each maximising the upper
   confidence bound ``mu + beta * sigma`` of the unified GP with theta fixed (all tasks
   optimised in one batched multi-start L-BFGS-B, since the bound is separable across
   tasks).

Online phase: :meth:`PMTO.predict_solution` answers any theta in the bounds from the
task model, with its uncertainty and no evaluation.

Deviations, each for a reason: Matern-5/2 ARD kernels fitted by marginal likelihood
(BoTorch defaults) instead of the reference code's RBF kernels trained by 500-1500
Adam steps; the log-determinant through the Schur complement (same argmax, one solve
for the whole population); the GA's best candidate instead of a random member of the
NSGA-II front of the (constant) gradient objective and the determinant.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from scipy.stats import qmc
from torch import Tensor

from bambo.errors import ConfigError
from bambo.parametric import ParametricProblem, PreferenceFamily, Preferences, anchor_range, preference_to_theta
from bambo.problem import Problem
from bambo.result import Artifacts
from bambo.strategies.base import Recommendation, Rule, Strategy
from bambo.strategies.task_data import best_per_task, fit_task_model, pool_diversity, training_rows
from bambo.strategies.task_search import evolve_task, maximize_bound
from bambo.surrogates.parametric import ParametricTaskGP, fit_parametric_task_gp
from bambo.surrogates.task_model import TaskModel

if TYPE_CHECKING:
    from bambo.result import ParetoResult

logger = logging.getLogger(__name__)

__all__ = ["PMTO"]

TaskSelection = Literal["evolution", "random"]


class PMTO(Strategy):
    """(theta_l, theta_u)-PMTO on a parametric task family.

    ``ask(n)`` serves the planned rows of the current iteration (the initial design,
    then one row per pool task); a new iteration is planned when they are used up.

    Args:
        problem: The task family.
        seed: Seed of every random choice.
        n_initial_tasks: Tasks of the initial Latin hypercube (the paper's reference
            runs use 20 with 10 solutions each for a budget of 2000).
        samples_per_task: Initial solutions per initial task.
        beta: Multiplier of the posterior standard deviation in the confidence bound.
        task_selection: ``"evolution"`` (DPP task evolution) or ``"random"``.
        best_share: Share of tasks (by best value) the task model is fitted on; default
            0.7 (the reference code), or 1 for a family that can rescore (a preference
            family), whose values are not comparable across tasks: extreme preferences
            reach lower scalarised values, so a share would drop the balanced ones.
        population: GA population of task evolution.
        generations: GA generations of task evolution.
        raw_samples: Random solutions per task scored before the L-BFGS-B restarts.
        restarts: L-BFGS-B starts per task.
        preferences: For a multi-objective problem, how :meth:`prepare` scalarises a
            preference (:class:`~bambo.parametric.Preferences`: ``ideal``, ``nadir``,
            ``rho``); the family it builds carries them, so the strategy itself ignores them.
    """

    name = "pmto"
    TASK_MODEL = "task_model.pt"

    def __init__(
        self,
        problem: ParametricProblem,
        seed: int = 0,
        n_initial_tasks: int = 10,
        samples_per_task: int = 4,
        beta: float = 1.0,
        task_selection: TaskSelection = "evolution",
        best_share: float | None = None,
        population: int = 40,
        generations: int = 25,
        raw_samples: int = 256,
        restarts: int = 4,
        preferences: Mapping[str, Any] | None = None,  # noqa: ARG002 - consumed by prepare
    ) -> None:
        if not isinstance(problem, ParametricProblem):
            raise ConfigError(f"PMTO needs a ParametricProblem (a task family), got {type(problem).__name__}")
        if task_selection not in ("evolution", "random"):
            raise ConfigError(f"task_selection must be 'evolution' or 'random', got {task_selection!r}")
        for label, value in [
            ("n_initial_tasks", n_initial_tasks),
            ("samples_per_task", samples_per_task),
            ("population", population),
            ("generations", generations),
            ("raw_samples", raw_samples),
            ("restarts", restarts),
        ]:
            if value < 1:
                raise ConfigError(f"{label} must be >= 1, got {value}")
        if n_initial_tasks < 2:
            raise ConfigError(f"n_initial_tasks must be >= 2 (the task model needs two tasks), got {n_initial_tasks}")
        if beta < 0:
            raise ConfigError(f"beta must be >= 0, got {beta}")
        if best_share is None:
            best_share = 1.0 if problem.can_rescore else 0.7
        if not 0 < best_share <= 1:
            raise ConfigError(f"best_share must be in (0, 1], got {best_share}")
        if seed < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        super().__init__(problem, seed)
        self.family = problem
        self.n_initial_tasks, self.samples_per_task = n_initial_tasks, samples_per_task
        self.beta, self.task_selection, self.best_share = beta, task_selection, best_share
        self.population, self.generations = population, generations
        self.raw_samples, self.restarts = raw_samples, restarts
        self._options = {
            "n_initial_tasks": n_initial_tasks,
            "samples_per_task": samples_per_task,
            "beta": beta,
            "task_selection": task_selection,
            "best_share": best_share,
            "population": population,
            "generations": generations,
            "raw_samples": raw_samples,
            "restarts": restarts,
        }
        self.pool = self._initial_tasks()
        self._queue = self._initial_design()
        self._iteration = 0
        self._task_model: TaskModel | None = None
        self._stale = True
        self._unified: tuple[int, ParametricTaskGP] | None = None
        self._replay_left = 0  # rows of the replayed iteration still to come
        self._iteration_start = 0  # evaluations made before the current iteration

    # ----- run hooks -----------------------------------------------------------------
    @classmethod
    def prepare(cls, problem: Problem, options: dict[str, Any]) -> tuple[Problem, dict[str, Any]]:
        """A multi-objective problem is searched as its preference family (PMTO for merging).

        Without ``preferences.ideal``/``nadir`` both are measured now from the base model
        and each expert alone (:func:`~bambo.parametric.anchor_range`, ``1 + N``
        evaluations) and returned in the options, so a resumed run and ``bambo export``
        rebuild the same family. A task family is searched as it is.

        Raises:
            ConfigError: One objective only, or bad preferences.
        """
        if isinstance(problem, ParametricProblem):
            return problem, options
        if problem.num_objectives < 2:
            raise ConfigError(
                f"strategy pmto searches over preferences and needs >= 2 objectives, got {problem.num_objectives}"
            )
        preferences = Preferences(**dict(options.get("preferences") or {}))
        if preferences.ideal is None or preferences.nadir is None:
            ideal, nadir = anchor_range(problem)
            preferences = preferences.model_copy(update={"ideal": ideal.tolist(), "nadir": nadir.tolist()})
        family = PreferenceFamily(problem, preferences.ideal, preferences.nadir, preferences.rho)
        return family, {**options, "preferences": preferences.model_dump()}

    def save(self, folder: Path) -> list[Path]:
        """Save the task model (the online phase, ``bambo export --preference``, reads it)."""
        if len(best_per_task(self.family, *self.completed)[0]) < 2:
            logger.warning("fewer than two tasks have completed evaluations: no task model saved yet")
            return []
        path = Path(folder) / self.TASK_MODEL
        self.task_model.save(path, n_evaluations=self.X.shape[0])
        return [path]

    def recommend(
        self,
        result: ParetoResult,
        preference: Sequence[float],
        rule: Rule = "cosine",  # noqa: ARG002 - the task model answers, not a rule
        folder: Path | None = None,
        refine: bool = False,
    ) -> Recommendation:
        """PMTO's online phase for a preference: the task model's answer, with no evaluation.

        Uses the task model saved in ``folder`` when it was fitted on all of ``result``'s
        evaluations (and ``refine`` is off), else fits it on them.

        Returns:
            The solution part (the merge coefficients), with the task model's spread.

        Raises:
            ConfigError: Not a preference family, a wrong number of weights, or fewer than
                two tasks with completed evaluations.
        """
        if not isinstance(self.family, PreferenceFamily):
            raise ConfigError("recommend needs a preference family; for a task family use predict_solution(theta)")
        names = self.family.problem.objective_names
        if len(preference) != len(names):
            raise ConfigError(
                f"the preference has {len(preference)} weights for {len(names)} objectives ({', '.join(names)})"
            )
        if len(best_per_task(self.family, result.X, result.Y_max)[0]) < 2:
            raise ConfigError("completed evaluations exist for fewer than two preferences: resume the run first")
        theta = preference_to_theta(list(preference))
        saved = None if folder is None else Path(folder) / self.TASK_MODEL
        model = TaskModel.load(saved) if saved is not None and saved.exists() and not refine else None
        if model is not None and model.n_evaluations == result.n_evaluations:
            x, spread = model.predict(theta)
            source = f"the run's saved task model ({saved.name})"  # type: ignore[union-attr]
        else:
            fresh = PMTO.from_evaluations(self.family, result.X, result.Y_max, seed=self.seed, **self._options)
            x, spread = fresh.predict_solution(theta, refine=refine)
            source = "the task model fitted on the evaluations" + (" and the unified GP (refine)" if refine else "")
        return Recommendation(x[0], None, source, spread[0])

    @classmethod
    def from_evaluations(
        cls, problem: ParametricProblem, X: Tensor, Y: Tensor, seed: int = 0, **options: object
    ) -> PMTO:
        """A PMTO strategy told journaled evaluations (for the online phase, e.g. ``bambo export``).

        Args:
            problem: The family the evaluations were made on.
            X: Joint rows ``(N, n + k)``.
            Y: Outputs ``(N, M)``, maximisation form; NaN rows are failures.
            seed: The run's seed.
            **options: The run's PMTO options.
        """
        strategy = cls(problem, seed=seed, **options)  # type: ignore[arg-type]
        if X.shape[0]:
            strategy.tell(X, Y)
        return strategy

    # ----- offline phase -------------------------------------------------------------
    def _initial_tasks(self) -> Tensor:
        lower, upper = self.family.task_bounds
        unit = qmc.LatinHypercube(d=self.family.n_task, seed=self.seed).random(self.n_initial_tasks)
        return lower + (upper - lower) * torch.as_tensor(unit, dtype=torch.float64)

    def _initial_design(self) -> Tensor:
        lower, upper = self.family.solution_bounds
        rows = []
        for j, theta in enumerate(self.pool):
            unit = qmc.LatinHypercube(d=self.family.n_solution, seed=self.seed * 7919 + j + 1)
            X = lower + (upper - lower) * torch.as_tensor(unit.random(self.samples_per_task), dtype=torch.float64)
            rows.append(self.family.join(X, theta))
        return torch.cat(rows)

    def ask(self, n: int) -> Tensor:
        self._check_n(n)
        if self._replay_left > 0:  # a resumed run stopped inside an iteration: plan it again, serve the rest
            start = self._iteration_start
            rows = self._plan_iteration(self.X[:start], self.Y[:start], new_task=False)
            self._queue, self._replay_left = rows[rows.shape[0] - self._replay_left :], 0
        if self._queue.shape[0] == 0:
            self._queue = self._plan()
        X, self._queue = self._queue[:n], self._queue[n:]
        return X.clone()

    def _plan(self) -> Tensor:
        """One offline iteration: a new task, then one solution per pool task (newest first)."""
        self._iteration += 1
        self._iteration_start = self.X.shape[0]
        return self._plan_iteration(self.X, self.Y, new_task=True)

    def _plan_iteration(self, X: Tensor, Y: Tensor, new_task: bool) -> Tensor:
        """The rows of iteration ``self._iteration`` from the evaluations ``(X, Y)`` made before it."""
        ok = torch.isfinite(Y).all(-1)
        X_ok, Y_ok = X[ok], Y[ok]
        seed = self.seed * 1_000_003 + self._iteration
        if X_ok.shape[0] < 2 or best_per_task(self.family, X_ok, Y_ok)[0].shape[0] < 2:
            # nothing to model yet (failures): a random solution for every task
            generator = torch.Generator().manual_seed(seed)
            lower, upper = self.family.solution_bounds
            U = torch.rand(self.pool.shape[0], self.family.n_solution, generator=generator, dtype=torch.float64)
            return self.family.join(lower + (upper - lower) * U, self.pool.flip(0))
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self._task_model, self._stale = fit_task_model(self.family, X_ok, Y_ok, self.best_share), False
            if new_task:  # task evolution uses numpy's generator (pymoo), so skipping it leaves torch's as is
                new = self._new_task(self._task_model, seed)
                self.pool = torch.cat([self.pool, new.unsqueeze(0)])
            Z, V = training_rows(self.family, X_ok, Y_ok)
            model = fit_parametric_task_gp(Z, V, self.family.task_dims, self.family.bounds).models[0]
        tasks = self.pool.flip(0)  # newest first, as in the paper
        X_new = maximize_bound(model, self.family, tasks, self.beta, self.raw_samples, self.restarts, seed)
        return self.family.join(X_new, tasks)

    def _new_task(self, task_model: TaskModel, seed: int) -> Tensor:
        lower, upper = self.family.task_bounds
        if self.task_selection == "random":
            generator = torch.Generator().manual_seed(seed)
            return lower + (upper - lower) * torch.rand(self.family.n_task, generator=generator, dtype=torch.float64)
        return evolve_task(task_model, self.pool, self.population, self.generations, seed)

    # ----- online phase --------------------------------------------------------------
    @property
    def task_model(self) -> TaskModel:
        """The task model on every completed evaluation (refitted after a ``tell``, then cached)."""
        if self._task_model is None or self._stale:
            with torch.random.fork_rng():
                torch.manual_seed(self.seed)
                self._task_model = fit_task_model(self.family, *self.completed, self.best_share)
            self._stale = False
        return self._task_model

    def tell(self, X: Tensor, Y: Tensor) -> None:
        super().tell(X, Y)
        self._stale = True

    def replay(self, X: Tensor) -> None:
        """Advance without refitting: a journaled batch either continues the current
        iteration or starts one, whose first row carries its new task (newest first).
        """
        X = torch.as_tensor(X, dtype=torch.float64)
        k = X.shape[0]
        if self._queue.shape[0] > 0:  # the initial design
            self._queue = self._queue[k:]
            return
        if self._replay_left == 0 and k > 0:
            self._iteration += 1
            self._iteration_start = self.X.shape[0]
            theta = self.family.split(X[0])[1]
            if not bool((self.pool == theta).all(-1).any()):  # a new task (else the no-model fallback)
                self.pool = torch.cat([self.pool, theta.unsqueeze(0)])
            self._replay_left = self.pool.shape[0]
        self._replay_left = max(0, self._replay_left - k)

    @property
    def unified_model(self) -> ParametricTaskGP:
        """The unified GP on every completed evaluation (refitted when data arrived, then cached)."""
        X_ok, Y_ok = self.completed
        if self._unified is None or self._unified[0] != X_ok.shape[0]:
            with torch.random.fork_rng():
                torch.manual_seed(self.seed)
                Z, V = training_rows(self.family, X_ok, Y_ok)
                model = fit_parametric_task_gp(Z, V, self.family.task_dims, self.family.bounds).models[0]
            self._unified = (X_ok.shape[0], model)
        return self._unified[1]

    def predict_solution(self, theta: Tensor, refine: bool = False) -> tuple[Tensor, Tensor]:
        """The online phase: solutions for unseen tasks, without evaluating.

        Args:
            theta: Shape ``(k,)`` or ``(t, k)``, inside ``[theta_l, theta_u]``.
            refine: ``False``: the task model's answer (the paper's online phase).
                ``True``: start from it (and, for a family that can rescore, from the
                best evaluated solution for each task) and climb the unified GP's
                posterior mean at that task; still no evaluation.

        Returns:
            ``(x, std)``, each ``(t, n)``; ``std`` is the task model's predictive spread.

        Raises:
            BoundsError: Wrong number of task parameters or outside the bounds.
            ConfigError: No completed evaluations yet.
        """
        T = self.family.check_theta(theta)
        if self.completed[0].shape[0] == 0:
            raise ConfigError("no completed evaluations yet: run the offline phase first")
        mean, std = self.task_model.predict(T)
        if not refine:
            return mean, std
        starts = [mean.unsqueeze(0)]
        X_ok, Y_ok = self.completed
        rescored = self.family.rescore(Y_ok, T)
        if rescored is not None:
            starts.append(self.family.split(X_ok)[0][rescored.argmax(0)].unsqueeze(0))
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            X = maximize_bound(
                self.unified_model, self.family, T, 0.0, self.raw_samples, self.restarts, self.seed, torch.cat(starts)
            )
        return X, std

    def artifacts(self) -> Artifacts:
        thetas = best_per_task(self.family, *self.completed)[0]
        return Artifacts(
            info={
                "pmto": {
                    "iterations": self._iteration,
                    "tasks": thetas.tolist(),
                    "task_selection": self.task_selection,
                    "diversity": pool_diversity(thetas, self.family.task_bounds) if thetas.shape[0] > 1 else {},
                }
            }
        )
