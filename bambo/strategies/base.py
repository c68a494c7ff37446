"""The ask/tell interface every search strategy implements, with its lifecycle hooks.

A strategy proposes points (``ask``) and learns their objectives (``tell``); the
experiment loop (:class:`bambo.experiment.Experiment`) owns the trials, the journal
and the result. Around that core, four hooks let a strategy take part in a run
without the loop knowing which strategy it is:

- :meth:`Strategy.prepare` (before construction): the problem the strategy searches
  (PMTO searches a preference family built from the merge problem) and the options
  to record in the run's config;
- :meth:`Strategy.artifacts`: what it adds to the result (MAP's predicted front, timings);
- :meth:`Strategy.save`: files for the run folder (PMTO's task model);
- :meth:`Strategy.recommend`: one decision vector for a preference over the objectives
  (BAMBO's cosine rule or MAP's weighted sum by default; PMTO answers from its task model);
- :meth:`Strategy.checkpoint` and :meth:`Strategy.restore`: state beyond the data told
  (BAMBO's fitted GP hyperparameters, the start of its next fit), journaled with each
  batch so that a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from bambo.errors import ConfigError
from bambo.problem import Problem
from bambo.result import Artifacts

if TYPE_CHECKING:
    from bambo.result import ParetoResult

Rule = Literal["cosine", "weighted-sum"]
RULES = ("cosine", "weighted-sum")


@dataclass(frozen=True)
class Recommendation:
    """One model chosen for a preference (:meth:`Strategy.recommend`).

    Attributes:
        x: The decision vector, shape ``(d,)``.
        row: Its row in the result when it was evaluated (``None`` for a prediction).
        source: How it was chosen, in words.
        spread: Predicted uncertainty of ``x`` per coordinate, when it is a prediction.
    """

    x: Tensor
    row: int | None
    source: str
    spread: Tensor | None = None


class Strategy(ABC):
    """A search strategy with an ask/tell loop.

    ``ask(n)`` proposes up to ``n`` points (fewer, or none, once a strategy with a
    finite design such as a grid is exhausted); ``tell(X, Y)`` reports their
    objectives in maximisation form, where a NaN row marks a failed evaluation: it
    is kept in :attr:`X`/:attr:`Y` (a strategy may count it) but never reaches a
    model. The data told is all the history a strategy keeps; trials, error texts
    and results belong to the experiment.

    Subclasses implement :meth:`ask` and may extend :meth:`tell` (call
    ``super().tell`` first), :meth:`replay` and the hooks.

    Args:
        problem: The problem (bounds, objectives).
        seed: Seed of every random choice the strategy makes.
    """

    name: str = "strategy"
    asynchronous: bool = False
    """Whether ``ask`` may be called with earlier proposals not yet told: the strategy then
    proposes around them (pending points). Strategies that learn whole batches (a genetic
    algorithm's generation) keep ``False``; the experiment loop's asynchronous mode needs ``True``."""
    proposes_fidelity: bool = False
    """Whether ``ask`` returns ``(k, d + 1)`` rows whose last column is the fidelity to evaluate at
    (:mod:`bambo.fidelity`); ``tell`` then gets the same layout (model-based multi-fidelity, ``momf``)."""

    def __init__(self, problem: Problem, seed: int = 0) -> None:
        self.problem = problem
        self.seed = seed
        self.X = torch.empty(0, problem.dim, dtype=torch.float64)
        self.Y = torch.empty(0, problem.num_objectives, dtype=torch.float64)

    # -- lifecycle hooks ----------------------------------------------------------------------

    @classmethod
    def prepare(cls, problem: Problem, options: dict[str, Any]) -> tuple[Problem, dict[str, Any]]:
        """The problem this strategy searches for ``problem``, and the options to record.

        Called once before the strategy is built for a run; whatever it measures goes
        into the returned options, so a resumed run rebuilds the same search without
        measuring again. Default: the problem and the options unchanged.

        Args:
            problem: The problem the user described.
            options: The strategy's options from the config.
        """
        return problem, options

    def artifacts(self) -> Artifacts:
        """What this strategy adds to its result (predicted front, info); default: nothing."""
        return Artifacts()

    def save(self, folder: Path) -> list[Path]:
        """Write strategy files into a run folder (called after every run); default: none.

        Returns:
            The paths written.
        """
        return []

    def recommend(
        self,
        result: ParetoResult,
        preference: Sequence[float],
        rule: Rule = "cosine",
        folder: Path | None = None,
        refine: bool = False,  # noqa: ARG002 - for strategies that predict their answer
    ) -> Recommendation:
        """The decision vector to pick for a preference over the objectives.

        Default: among the evaluated points, BAMBO's cosine rule (the closest
        direction among the top 3 by weighted score, :func:`~bambo.selection.select_by_cosine`)
        or MAP's weighted sum (:func:`~bambo.selection.select_weighted_sum`).

        Args:
            result: The run's result.
            preference: One weight per objective.
            rule: ``"cosine"`` or ``"weighted-sum"``.
            folder: The run folder (strategies that saved files read them from there).
            refine: Strategies that predict their answer (PMTO) may refine it with their
                model; the rules here ignore it.

        Raises:
            ConfigError: Wrong number of weights or an unknown rule.
        """
        from bambo.selection import select_by_cosine, select_weighted_sum

        names = result.objective_names
        if len(preference) != len(names):
            raise ConfigError(
                f"the preference has {len(preference)} weights for {len(names)} objectives ({', '.join(names)})"
            )
        if rule == "cosine":
            row = select_by_cosine(result.Y_max, list(preference), top_k=3)
        elif rule == "weighted-sum":
            row = select_weighted_sum(result.Y_max, list(preference))
        else:
            raise ConfigError(f"unknown rule {rule!r}; valid: {', '.join(RULES)}")
        return Recommendation(result.X[row].clone(), row, f"the {rule} rule over {result.n_evaluations} evaluations")

    # -- ask / tell ---------------------------------------------------------------------------

    @abstractmethod
    def ask(self, n: int) -> Tensor:
        """Propose up to ``n`` points, shape ``(k, d)`` with ``k <= n``, inside the problem's bounds."""

    def replay(self, X: Tensor) -> None:
        """Advance the strategy as if ``ask(len(X))`` had just returned ``X`` (resuming a journaled run).

        The default asks again and discards the answer (every random choice is
        seeded, so the state advances as it did); the caller then tells the
        journaled results. Strategies whose asks are expensive override it.

        Args:
            X: The journaled batch, shape ``(k, d)``.
        """
        self.ask(X.shape[0])

    def checkpoint(self) -> dict[str, Any] | None:
        """State to journal with the batch just asked for, JSON-serialisable; default: none.

        Called after every :meth:`ask`. What the data told does not determine (and
        :meth:`replay` cannot rebuild cheaply) goes here, and :meth:`restore` gets it
        back when the run resumes.
        """
        return None

    def restore(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook, no-op by default
        """Take back the state :meth:`checkpoint` returned for a replayed batch; default: nothing.

        Args:
            state: The journaled state, called after :meth:`replay` of its batch.
        """

    def _check_n(self, n: int) -> None:
        if n < 1:
            raise ConfigError(f"ask(n) needs n >= 1, got {n}")

    def tell(self, X: Tensor, Y: Tensor) -> None:
        """Learn evaluations.

        Args:
            X: Shape ``(n, d)``, inside the bounds.
            Y: Shape ``(n, m)``, maximisation form; a row with a non-finite value is
                a failed evaluation (stored as all-NaN).

        Raises:
            ConfigError: Wrong shapes, non-finite or out-of-bounds ``X``.
        """
        X = torch.as_tensor(X, dtype=torch.float64).clone()
        Y = torch.as_tensor(Y, dtype=torch.float64).clone()
        if X.dim() != 2 or X.shape[1] != self.problem.dim:
            raise ConfigError(f"X must have shape (n, {self.problem.dim}), got {tuple(X.shape)}")
        if Y.shape != (X.shape[0], self.problem.num_objectives):
            raise ConfigError(f"Y must have shape ({X.shape[0]}, {self.problem.num_objectives}), got {tuple(Y.shape)}")
        bad_x = (~torch.isfinite(X).all(dim=-1)).nonzero().flatten().tolist()
        if bad_x:
            raise ConfigError(f"X rows {bad_x} are not finite: {X[bad_x[0]].tolist()}")
        lower, upper = self.problem.bounds
        slack = 1e-9 * (upper - lower)
        outside = ((X < lower - slack) | (X > upper + slack)).any(dim=-1).nonzero().flatten().tolist()
        if outside:
            raise ConfigError(
                f"X row {outside[0]} is outside the bounds: {X[outside[0]].tolist()} not in "
                f"[{lower.tolist()}, {upper.tolist()}]"
            )
        Y[~torch.isfinite(Y).all(dim=-1)] = float("nan")
        self.X = torch.cat([self.X, X])
        self.Y = torch.cat([self.Y, Y])

    @property
    def completed(self) -> tuple[Tensor, Tensor]:
        """``(X, Y)`` of the completed evaluations only (what models may see)."""
        ok = torch.isfinite(self.Y).all(dim=-1)
        return self.X[ok], self.Y[ok]
