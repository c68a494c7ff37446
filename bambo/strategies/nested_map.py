"""Nested MAP: merge many experts two at a time, guided by a preference (MAP Alg. 2, App. E.2).

With task arithmetic, merging two (already merged) models ``A`` and ``B`` with
coefficients ``(c_A, c_B)`` gives ``theta_pre + c_A (theta_A - theta_pre) + c_B
(theta_B - theta_pre)``: each group is a direction ``u`` in the model-level
coefficient space and the merge is the point ``x = c_A u_A + c_B u_B``. So the
whole nested scheme runs on the ordinary model-level problem (coefficient ``t``
is the expert of objective ``t``), and every evaluation is a point of it.

Per round, the current groups are paired greedily, closest first by their
score (MAP Alg. 2: "closest in terms of (l_i, l_j)"; a group's score is the
preference-weighted mean of its tasks' values, in maximisation form, so merged
groups stay on their members' scale; the paper's ``pref_i l_i + pref_j l_j``
shrinks with every round). For each pair, a 2-task MAP (Alg. 1) on
``n_per_pair`` Sobol points of ``(c_A, c_B)`` fits a quadratic to each group's
objective (the preference-weighted mean of its tasks), NSGA-III gives the
amortised front, and ``c*`` maximises the preference-weighted sum on it. Pairs
of a round are independent, so their points are handed out together. An odd
group waits for the next round. The final group's direction is the
recommended coefficient vector; it is evaluated once at the end.

Evaluation count (the paper's): a pair over tasks ``S`` costs ``n_per_pair x |S|``
task evaluations; for N = 8 and T = 20 that is 4 x 20 x 2 + 2 x 20 x 4 + 20 x 8 = 480
(``result.info["task_evaluations"]``). ``result.info["merged_models"]`` counts
merged models evaluated (each scores every task at once here).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.quasirandom import SobolEngine

from bambo.errors import ConfigError
from bambo.problem import Objective, Problem
from bambo.result import Artifacts
from bambo.strategies.base import Strategy
from bambo.strategies.map import LinkChoice, TaskQuadratics, amortized_front


@dataclass
class _Group:
    """A merged model: its tasks, its direction in coefficient space, score and weight."""

    tasks: tuple[int, ...]
    direction: Tensor  # (N,)
    score: float
    weight: float


@dataclass
class _Pair:
    a: _Group
    b: _Group
    design: Tensor  # (T, 2) coefficients (c_a, c_b)
    X: Tensor  # (T, N) decision vectors
    first_row: int  # row of the first design point in the strategy's history


class NestedMAP(Strategy):
    """Nested MAP (MAP Alg. 2) on a model-level problem with one coefficient per task.

    Args:
        problem: Model-level problem: ``dim == num_objectives``, coefficient ``t``
            scales the expert of objective ``t``; lower bounds <= 0 < upper bounds.
        seed: Seeds the Sobol designs and NSGA-III.
        preference: Non-negative weight per objective (normalised to sum to 1; default equal).
        n_per_pair: T, coefficient pairs evaluated per 2-task MAP (20 in the paper).
        expert_scores: Each expert's score on its own task, in the objective's
            direction; if omitted, each expert alone is evaluated first (N evaluations).
        link: As in :class:`~bambo.strategies.map.MAP` (from the objectives' bounds).
        pop_size: NSGA-III population.
        n_generations: NSGA-III generations.
    """

    name = "nested-map"

    def __init__(
        self,
        problem: Problem,
        seed: int = 0,
        preference: Sequence[float] | Tensor | None = None,
        n_per_pair: int = 20,
        expert_scores: Sequence[float] | Tensor | None = None,
        link: LinkChoice = "auto",
        pop_size: int = 100,
        n_generations: int = 100,
    ) -> None:
        super().__init__(problem, seed)
        m = problem.num_objectives
        if problem.dim != m or m < 2:
            raise ConfigError(
                f"nested MAP needs a model-level problem with one coefficient per task (dim == objectives >= 2), "
                f"got dim={problem.dim}, objectives={m}"
            )
        lower, upper = problem.bounds
        if (lower > 0).any() or (upper <= 0).any():
            raise ConfigError(f"nested MAP needs lower bounds <= 0 < upper bounds, got {problem.bounds.tolist()}")
        w = torch.ones(m, dtype=torch.float64) if preference is None else torch.as_tensor(preference).double()
        if w.shape != (m,) or (w < 0).any() or w.sum() <= 0:
            raise ConfigError(f"preference must be {m} non-negative weights, not all zero; got {w.tolist()}")
        if n_per_pair < 3:
            raise ConfigError(f"n_per_pair must be >= 3, got {n_per_pair}")
        self.preference = w / w.sum()
        self.n_per_pair = n_per_pair
        self.link: LinkChoice = link
        self.pop_size, self.n_generations = pop_size, n_generations
        self.groups: list[_Group] = []
        self.merge_tree: list[dict[str, object]] = []
        self.task_evaluations = 0
        self._pairs: list[_Pair] = []
        self._queue = torch.empty(0, m, dtype=torch.float64)
        self._outstanding_until = 0  # rows that must be told before the next stage is planned
        self._final: Tensor | None = None
        self._final_row: int | None = None
        self._round = 0
        if expert_scores is None:
            self._queue = torch.diag(upper.clamp(max=1.0))
            self._outstanding_until = m
            self._stage = "experts"
        else:
            scores = problem.to_max(torch.as_tensor(expert_scores, dtype=torch.float64))
            if scores.shape != (m,):
                raise ConfigError(f"expert_scores has shape {tuple(scores.shape)}, expected ({m},)")
            self._start_groups(scores)

    # -- planning ------------------------------------------------------------------------------

    def _start_groups(self, scores: Tensor) -> None:
        upper = self.problem.bounds[1]
        eye = torch.eye(self.problem.num_objectives, dtype=torch.float64)
        self.groups = [
            _Group((t,), eye[t] * min(1.0, float(upper[t])), float(scores[t]), float(self.preference[t]))
            for t in range(self.problem.num_objectives)
        ]
        self._plan_round()

    def _plan_round(self) -> None:
        """Pair the groups greedily, closest scores first, and queue every pair's design."""
        if len(self.groups) == 1:
            self._final = self.groups[0].direction.clone()
            self._queue = self._final.unsqueeze(0)
            self._final_row = self._outstanding_until
            self._outstanding_until += 1
            self._stage = "final"
            return
        free = list(self.groups)
        pairs: list[tuple[_Group, _Group]] = []
        while len(free) >= 2:
            i, j = min(
                ((i, j) for i in range(len(free)) for j in range(i + 1, len(free))),
                key=lambda ij: (abs(free[ij[0]].score - free[ij[1]].score), ij),
            )
            pairs.append((free[i], free[j]))
            free = [g for k, g in enumerate(free) if k not in (i, j)]
        self.groups = free  # the odd one out, if any, waits
        self._pairs = []
        rows = []
        for k, (a, b) in enumerate(pairs):
            bounds = torch.tensor([[0.0, 0.0], [self._c_max(a), self._c_max(b)]], dtype=torch.float64)  # (c_a, c_b)
            engine = SobolEngine(2, scramble=True, seed=self.seed * 7919 + self._round * 97 + k)
            design = bounds[0] + (bounds[1] - bounds[0]) * engine.draw(self.n_per_pair, dtype=torch.float64)
            X = design[:, :1] * a.direction + design[:, 1:] * b.direction
            self._pairs.append(_Pair(a, b, design, X, self._outstanding_until + len(rows) * self.n_per_pair))
            rows.append(X)
        self._queue = torch.cat(rows)
        self._outstanding_until += self._queue.shape[0]
        self._round += 1
        self._stage = "pairs"

    def _c_max(self, group: _Group) -> float:
        """Largest c with ``c * direction`` inside the upper bounds."""
        upper = self.problem.bounds[1]
        active = group.direction > 0
        if not active.any():
            return 1.0
        return float((upper[active] / group.direction[active]).min())

    def _objective(self, group: _Group) -> Objective:
        members = [self.problem.objectives[t] for t in group.tasks]
        shared = {(o.direction, o.bounds) for o in members}
        direction, bounds = shared.pop() if len(shared) == 1 else ("maximize", (None, None))
        return Objective(name="+".join(str(t) for t in group.tasks), direction=direction, bounds=bounds)

    def _group_values(self, group: _Group, Y: Tensor) -> Tensor:
        """Preference-weighted mean of the group's tasks, maximisation form, shape ``(n,)``."""
        idx = list(group.tasks)
        w = self.preference[idx]
        if w.sum() <= 0:  # tasks the preference ignores still need a finite objective: weigh them equally
            w = torch.ones_like(w)
        return (Y[:, idx] * w).sum(dim=-1) / w.sum()

    def _merge_pair(self, pair: _Pair) -> _Group:
        rows = slice(pair.first_row, pair.first_row + self.n_per_pair)
        C, Y = pair.design, self.Y[rows]
        ok = torch.isfinite(Y).all(dim=-1)
        if ok.sum() < 3:
            raise ConfigError(
                f"only {int(ok.sum())} of {self.n_per_pair} evaluations of pair {pair.a.tasks}+{pair.b.tasks} "
                "completed; nested MAP needs at least 3 to fit its quadratics"
            )
        objectives = [self._objective(pair.a), self._objective(pair.b)]
        F = torch.stack([self._group_values(pair.a, Y[ok]), self._group_values(pair.b, Y[ok])], dim=-1)
        bounds = torch.tensor([[0.0, 0.0], [self._c_max(pair.a), self._c_max(pair.b)]], dtype=torch.float64)
        surrogates = TaskQuadratics(bounds, objectives, C[ok], F, self.link)
        front_C, front_F = amortized_front(surrogates, bounds, self.seed, self.pop_size, self.n_generations)
        weights = torch.tensor([pair.a.weight, pair.b.weight], dtype=torch.float64)
        if weights.sum() <= 0:
            weights = torch.ones(2, dtype=torch.float64)
        best = int(torch.argmax(front_F @ weights))
        c = front_C[best]
        score = float(front_F[best] @ weights / weights.sum())
        merged = _Group(
            tasks=tuple(sorted(pair.a.tasks + pair.b.tasks)),
            direction=c[0] * pair.a.direction + c[1] * pair.b.direction,
            score=score,
            weight=pair.a.weight + pair.b.weight,
        )
        self.task_evaluations += self.n_per_pair * len(merged.tasks)
        self.merge_tree.append(
            {
                "round": self._round,
                "a": list(pair.a.tasks),
                "b": list(pair.b.tasks),
                "c": c.tolist(),
                "predicted_score": score,
                "evaluations": self.n_per_pair,
            }
        )
        return merged

    # -- ask / tell ------------------------------------------------------------------------------

    def ask(self, n: int) -> Tensor:
        self._check_n(n)
        if self._queue.shape[0] == 0 and self._stage != "done" and self.X.shape[0] < self._outstanding_until:
            raise ConfigError(
                f"nested MAP plans stage by stage: tell the {self._outstanding_until - self.X.shape[0]} "
                "outstanding evaluations first"
            )
        X, self._queue = self._queue[:n], self._queue[n:]
        return X.clone()

    def tell(self, X: Tensor, Y: Tensor) -> None:
        super().tell(X, Y)
        if self._queue.shape[0] > 0 or self.X.shape[0] < self._outstanding_until:
            return
        if self._stage == "experts":
            scores = self.Y[: self.problem.num_objectives].diagonal()
            if not torch.isfinite(scores).all():
                raise ConfigError(f"an expert-alone evaluation failed (scores {scores.tolist()}); pass expert_scores")
            self._start_groups(scores)
        elif self._stage == "pairs":
            self.groups = [self._merge_pair(pair) for pair in self._pairs] + self.groups
            self._pairs = []
            self._plan_round()
        elif self._stage == "final":
            self._stage = "done"

    def artifacts(self) -> Artifacts:
        info: dict[str, object] = {
            "preference": self.preference.tolist(),
            "merge_tree": list(self.merge_tree),
            "task_evaluations": self.task_evaluations,
            "merged_models": int(self.X.shape[0]),
        }
        if self._final is not None:
            info["recommended_x"] = self._final.tolist()
        if self._final_row is not None and self._final_row < self.Y.shape[0]:
            y = self.Y[self._final_row]
            info["recommended_y"] = (y * self.problem.signs).tolist()
            score = float(y @ self.preference)
            info["recommended_preference_score"] = score if math.isfinite(score) else None
        return Artifacts(info=info)
