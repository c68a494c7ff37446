"""Mixed binary-continuous peers for the data-flow benchmark, each a bambo :class:`~bambo.strategies.Strategy`.

Every peer searches the same :class:`~bambo.dataflow.DataFlowProblem` (include bits for
the free slots, then a scale per slot) through bambo's one experiment loop, so they share
its budget, batch size and timing (``benchmarks.contenders.run_session``):

- :class:`ComoCatCMA`: the ``cmaes`` package's ``COMOCatCMAwM`` (Uchida et al. 2025), a
  multi-objective CMA-ES over continuous and categorical variables (the bits are
  two-category variables). Its kernels hand out one point each per ``ask``.
- :class:`PymooMixedNSGA2`: pymoo's mixed-variable GA (``MixedVariableGA``) with NSGA-II's
  rank-and-crowding survival, ``Binary`` bits and ``Real`` scales, driven by pymoo's own
  ask/tell interface (population 8, bambo's NSGA-II's).
- :class:`OptunaConditionalTPE`: Optuna's TPE with ``multivariate=True, group=True``; a
  slot's scale is suggested only when its bit is 1 (pinned slots always), so the
  sampler sees the conditional structure as Optuna intends (a dropped slot's scale is
  then 1, the canonical value).

CMA-ES with a sign threshold (Akiba et al. 2024: the bits are ordinary CMA-ES coordinates,
a slot runs when its value is over the threshold) is bambo's ``cmaes`` strategy itself: the
space keeps a slot whose bit is >= 0.5. Random search is bambo's ``random``.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from bambo.dataflow.problem import DataFlowProblem
from bambo.strategies import Strategy

__all__ = ["ComoCatCMA", "OptunaConditionalTPE", "PymooMixedNSGA2"]


def _finite(Y: Tensor) -> Tensor:
    """Rows with a failed evaluation (NaN) get the worst finite value of each objective minus 1."""
    ok = torch.isfinite(Y).all(dim=-1)
    if bool(ok.all()):
        return Y
    worst = Y[ok].min(dim=0).values - 1.0 if bool(ok.any()) else torch.zeros(Y.shape[-1], dtype=Y.dtype)
    return torch.where(ok.unsqueeze(-1), Y, worst)


class ComoCatCMA(Strategy):
    """``cmaes.COMOCatCMAwM`` over the scales (continuous) and the bits (two categories each).

    The package supports two objectives only, so it minimises the negated mean of the
    task objectives and the number of hops (the problem's last objective); the benchmark
    scores its points on every objective like the others'. Its continuous samples can fall
    outside ``x_space`` (seen here: a scale of 1.72 in [0.5, 1.5]); they are clipped for
    the evaluation and told to the package as sampled.

    Args:
        problem: A data-flow problem whose last objective is ``hops``.
        seed: The optimiser's seed.
        kernel_size: Internal CatCMA optimisers (the package's default is 10).
    """

    name = "como-catcma"

    def __init__(self, problem: DataFlowProblem, seed: int = 0, kernel_size: int = 10) -> None:
        from cmaes import COMOCatCMAwM

        super().__init__(problem, seed)
        space = problem.space
        self.n_bits = len(space.free)
        reference = None
        if problem.ref_point is not None:
            reference = self._two_objectives(problem.ref_point.unsqueeze(0))[0].tolist()
        self.optimizer = COMOCatCMAwM(
            x_space=[list(space.scale_bounds)] * space.n_slots,
            c_space=[2] * self.n_bits,
            reference_point=reference,
            kernel_size=kernel_size,
            seed=seed,
        )
        self._asked: list = []

    @staticmethod
    def _two_objectives(Y: Tensor) -> Tensor:
        """``(n, m)`` maximisation form -> ``(n, 2)`` minimisation: minus the mean task objective, hops."""
        return torch.stack([-Y[:, :-1].mean(dim=-1), -Y[:, -1]], dim=-1)

    def ask(self, n: int) -> Tensor:
        self._check_n(n)
        self._asked = list(self.optimizer.ask_iter(limit=n))
        low, high = self.problem.space.scale_bounds  # the package's continuous samples can leave the box: clip
        rows = [
            np.concatenate([np.asarray(s.c).reshape(self.n_bits, 2).argmax(-1), np.clip(s.x, low, high)])
            for s in self._asked
        ]
        if not rows:
            return torch.empty(0, self.problem.dim, dtype=torch.float64)
        return torch.as_tensor(np.stack(rows), dtype=torch.float64)

    def tell(self, X: Tensor, Y: Tensor) -> None:
        super().tell(X, Y)
        values = self._two_objectives(_finite(torch.as_tensor(Y, dtype=torch.float64)))
        for solution, value in zip(self._asked, values.tolist(), strict=True):
            self.optimizer.tell((solution, value))


class PymooMixedNSGA2(Strategy):
    """pymoo's ``MixedVariableGA`` with rank-and-crowding survival on ``Binary`` bits and ``Real`` scales.

    Args:
        problem: A data-flow problem.
        seed: pymoo's seed.
        pop_size: Points per generation.
    """

    name = "pymoo-mixed-nsga2"

    def __init__(self, problem: DataFlowProblem, seed: int = 0, pop_size: int = 8) -> None:
        from pymoo.core.mixed import MixedVariableGA
        from pymoo.core.problem import Problem as PymooProblem
        from pymoo.core.variable import Binary, Real
        from pymoo.operators.survival.rank_and_crowding import RankAndCrowding

        super().__init__(problem, seed)
        space = problem.space
        names = space.parameter_names
        self.n_bits = len(space.free)
        variables = {names[i]: Binary() for i in range(self.n_bits)}
        variables.update({names[i]: Real(bounds=space.scale_bounds) for i in range(self.n_bits, space.dim)})
        self.names = names
        self._problem = PymooProblem(vars=variables, n_obj=problem.num_objectives)
        self.algorithm = MixedVariableGA(pop_size=pop_size, survival=RankAndCrowding())
        self.algorithm.setup(self._problem, seed=seed, verbose=False)
        self._population = None
        self._rows: list[Tensor] = []
        self._values: list[Tensor] = []

    def _vector(self, x: dict) -> list[float]:
        return [float(x[name]) for name in self.names]

    def ask(self, n: int) -> Tensor:
        self._check_n(n)
        if self._population is None:
            self._population = self.algorithm.ask()
            self._handed = 0
            self._values = [None] * len(self._population)
        chunk = self._population[self._handed : self._handed + n]
        self._chunk = (self._handed, len(chunk))
        self._handed += len(chunk)
        return torch.tensor([self._vector(ind.X) for ind in chunk], dtype=torch.float64)

    def tell(self, X: Tensor, Y: Tensor) -> None:
        super().tell(X, Y)
        start, k = self._chunk
        for i, y in enumerate(_finite(torch.as_tensor(Y, dtype=torch.float64))):
            self._values[start + i] = (-y).numpy()
        if self._handed == len(self._population) and all(v is not None for v in self._values):
            from pymoo.core.evaluator import Evaluator
            from pymoo.problems.static import StaticProblem

            F = np.stack(self._values)
            Evaluator().eval(StaticProblem(self._problem, F=F), self._population)
            self.algorithm.tell(infills=self._population)
            self._population = None


class OptunaConditionalTPE(Strategy):
    """Optuna's TPE (``multivariate=True, group=True``) with a slot's scale suggested only when the slot runs.

    Args:
        problem: A data-flow problem.
        seed: The sampler's seed.
    """

    name = "optuna-tpe-conditional"

    def __init__(self, problem: DataFlowProblem, seed: int = 0) -> None:
        import optuna

        super().__init__(problem, seed)
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
        self.study = optuna.create_study(directions=["maximize"] * problem.num_objectives, sampler=sampler)
        self.pending: list = []

    def _suggest(self, trial: object) -> list[float]:
        space = self.problem.space
        use = [True] * space.n_slots
        for t in space.free:
            use[t] = trial.suggest_categorical(f"use{t}", [0, 1]) == 1
        low, high = space.scale_bounds
        scales = [trial.suggest_float(f"scale{t}", low, high) if use[t] else 1.0 for t in range(space.n_slots)]
        return [float(use[t]) for t in space.free] + scales

    def ask(self, n: int) -> Tensor:
        self._check_n(n)
        self.pending = [self.study.ask() for _ in range(n)]
        return torch.tensor([self._suggest(trial) for trial in self.pending], dtype=torch.float64)

    def tell(self, X: Tensor, Y: Tensor) -> None:
        import optuna

        super().tell(X, Y)
        for trial, y in zip(self.pending, torch.as_tensor(Y, dtype=torch.float64), strict=True):
            if bool(torch.isfinite(y).all()):
                self.study.tell(trial, values=y.tolist())
            else:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
