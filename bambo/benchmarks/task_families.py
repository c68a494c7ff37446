"""The synthetic parametric task families of (theta_l, theta_u)-PMTO (Wang et al. 2025, Sec. VI).

Solutions ``x`` in ``[0, 1]^n``, task parameters ``theta`` in ``[0, 1]^k``. The optimum of
task ``theta`` is the shift ``s = g(A theta)``: ``A`` (``n x k``) interpolates consecutive
task parameters along the solution dimensions (row ``j``, with ``w = j / (n - 1)`` and
``a = j mod (k - 1)``, puts ``1 - w`` on ``theta_a`` and ``w`` on ``theta_{a+1}``; the
reference code's construction), and ``g`` bends it elementwise:

- ``nonlinear``: ``g(u) = (sin(5 (u + 0.5)) + 1) / 2``;
- ``middle_nonlinear``: ``g(u) = 0.3 (1 + sin(5 pi u - pi / 2)) + 0.3 (u - 0.2)^2``.

Each task minimises a classic function of ``z = c (x - s)``: Sphere (c = 4), Ackley
(c = 4), Rastrigin (c = 20), Griewank (c = 600). Griewank is the textbook
``sum z_i^2 / 4000 - prod cos(z_i / sqrt(i)) + 1`` (the reference code's operator
precedence divides only the shift by ``sqrt(i)``, which moves the optimum off ``s``; the
textbook form keeps the known optimum ``x* = s`` that tests and benchmarks rely on).
Every task's minimum value is 0, at ``x* = s(theta)`` (:meth:`TaskFamily.optimum`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

from bambo.errors import ConfigError, UnknownNameError
from bambo.parametric import ParametricProblem
from bambo.problem import Objective

__all__ = ["FUNCTIONS", "SHIFTS", "TaskFamily", "shift_matrix"]


def _sphere(z: Tensor) -> Tensor:
    return (z**2).sum(-1)


def _ackley(z: Tensor) -> Tensor:
    n = z.shape[-1]
    return (
        -20 * torch.exp(-0.2 * torch.sqrt((z**2).sum(-1) / n))
        - torch.exp(torch.cos(2 * math.pi * z).sum(-1) / n)
        + 20
        + math.e
    )


def _rastrigin(z: Tensor) -> Tensor:
    return (z**2 - 10 * torch.cos(2 * math.pi * z) + 10).sum(-1)


def _griewank(z: Tensor) -> Tensor:
    i = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype)
    return (z**2).sum(-1) / 4000 - torch.cos(z / i.sqrt()).prod(-1) + 1


FUNCTIONS: dict[str, tuple[Callable[[Tensor], Tensor], float]] = {
    "sphere": (_sphere, 4.0),
    "ackley": (_ackley, 4.0),
    "rastrigin": (_rastrigin, 20.0),
    "griewank": (_griewank, 600.0),
}

SHIFTS: dict[str, Callable[[Tensor], Tensor]] = {
    "nonlinear": lambda u: (torch.sin(5 * (u + 0.5)) + 1) / 2,
    "middle_nonlinear": lambda u: 0.3 * (1 + torch.sin(5 * math.pi * u - math.pi / 2)) + 0.3 * (u - 0.2) ** 2,
}


def shift_matrix(n: int, k: int) -> Tensor:
    """The ``(n, k)`` matrix ``A`` interpolating consecutive task parameters along x's dimensions."""
    A = torch.zeros(n, k, dtype=torch.float64)
    for j in range(n):
        if k == 1:
            A[j, 0] = 1.0
            continue
        w = j / (n - 1) if n > 1 else 0.0
        a = j % (k - 1)
        A[j, a] += 1 - w
        A[j, a + 1] += w
    return A


class TaskFamily(ParametricProblem):
    """A synthetic parametric family: minimise ``f(c (x - g(A theta)))`` over ``x`` for each ``theta``.

    Args:
        function: A key of :data:`FUNCTIONS`.
        shift: A key of :data:`SHIFTS`.
        n: Solution dimension.
        k: Task-parameter dimension.
    """

    FUNCTIONS: ClassVar = FUNCTIONS

    def __init__(self, function: str, shift: str = "nonlinear", n: int = 4, k: int = 2) -> None:
        if function not in FUNCTIONS:
            raise UnknownNameError("task family function", function, FUNCTIONS)
        if shift not in SHIFTS:
            raise UnknownNameError("task family shift", shift, SHIFTS)
        if n < 1 or k < 1:
            raise ConfigError(f"n and k must be >= 1, got n={n}, k={k}")
        self.function_name, self.shift_name = function, shift
        self._f, self.scale = FUNCTIONS[function]
        self._g = SHIFTS[shift]
        self.A = shift_matrix(n, k)
        unit = [[0.0] * n, [1.0] * n]
        super().__init__(unit, [[0.0] * k, [1.0] * k], Objective(name=f"{function}", direction="minimize"))

    @property
    def label(self) -> str:
        """E.g. ``sphere/nonlinear (n=4, k=2)``."""
        return f"{self.function_name}/{self.shift_name} (n={self.n_solution}, k={self.n_task})"

    def optimum(self, theta: Tensor) -> Tensor:
        """The known best solution ``s = g(A theta)`` of each task, shape ``(t, n)`` (value 0)."""
        T = self.check_theta(theta)
        return self._g(T @ self.A.T)

    def value(self, X: Tensor, theta: Tensor) -> Tensor:
        """``f(x_i; theta_i)`` for rows ``X (t, n)`` and ``theta (t, k)`` (or one row), vectorised."""
        T = self.check_theta(theta)
        X = torch.as_tensor(X, dtype=torch.float64)
        return self._f(self.scale * (X - self.optimum(T)))

    def evaluate_task(self, x: Tensor, theta: Tensor) -> float:
        return float(self.value(x.unsqueeze(0), theta.unsqueeze(0))[0])
