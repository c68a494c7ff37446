"""Model-free baselines."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.quasirandom import SobolEngine

from bambo.problem import Problem
from bambo.strategies.base import Strategy


class SobolSearch(Strategy):
    """Scrambled Sobol points over the box, in sequence (a space-filling baseline).

    Args:
        problem: The problem.
        seed: Seed of the Sobol scrambling.
    """

    name = "sobol"

    def __init__(self, problem: Problem, seed: int = 0) -> None:
        super().__init__(problem, seed)
        self._engine = SobolEngine(problem.dim, scramble=True, seed=seed)

    def ask(self, n: int) -> Tensor:
        lower, upper = self.problem.bounds
        unit = self._engine.draw(n, dtype=torch.float64)
        return lower + (upper - lower) * unit
