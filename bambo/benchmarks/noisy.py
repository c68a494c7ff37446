"""A synthetic problem with fidelities: a BoTorch test function scored on a finite, noisy evaluation set.

:class:`NoisyFidelityProblem` plays an evaluation set of ``examples`` examples: each
candidate's per-example errors are drawn once (seeded by the candidate and the seed), and
an evaluation at fidelity ``f`` reports the true objectives plus the mean error over the
first ``ceil(f * examples)`` of them. The subsets are nested, as in the merge benchmarks
(:func:`bambo.fidelity.nested_subset`), and the noise's standard deviation is
``noise * scale / sqrt(f)`` per objective (``scale``: the objective's spread over the box),
the law of a metric averaged over part of a test set. :meth:`NoisyFidelityProblem.true`
gives the noise-free values, so a test can ask whether halving promoted the truly better
candidates and whether its front is truly as good.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor
from torch.quasirandom import SobolEngine

from bambo.errors import ConfigError
from bambo.fidelity import subset_size
from bambo.problem import Problem, SyntheticProblem


class NoisyFidelityProblem(Problem):
    """A BoTorch test function observed through a finite evaluation set (the module docstring).

    Args:
        function: A :class:`~bambo.problem.SyntheticProblem` name (``branin_currin``, ``dtlz2``, ...).
        noise: Standard deviation at fidelity 1, as a share of each objective's spread.
        examples: Size of the simulated evaluation set.
        seed: Seed of the per-example errors.

    Raises:
        ConfigError: ``noise < 0`` or ``examples < 1``.
    """

    def __init__(
        self, function: str = "branin_currin", noise: float = 0.02, examples: int = 400, seed: int = 0
    ) -> None:
        if not noise >= 0 or examples < 1:
            raise ConfigError(f"need noise >= 0 and examples >= 1, got noise={noise}, examples={examples}")
        self.inner = SyntheticProblem(function)
        self.bounds = self.inner.bounds
        self.objectives = list(self.inner.objectives)
        self.ref_point = self.inner.ref_point
        self.noise, self.examples, self.seed = float(noise), int(examples), int(seed)
        lower, upper = self.bounds
        grid = lower + (upper - lower) * SobolEngine(self.dim, scramble=True, seed=0).draw(1024, dtype=torch.float64)
        self.scale = self.inner.evaluate(grid).std(dim=0)  # (m,) spread of each objective over the box

    @property
    def supports_fidelity(self) -> bool:
        return True

    @property
    def max_hv(self) -> float:
        """The maximum hypervolume of the noise-free function (BoTorch's)."""
        return self.inner.max_hv

    def true(self, X: Tensor) -> Tensor:
        """Noise-free objectives, maximisation form, ``(n, d)`` -> ``(n, m)``."""
        return self.inner.evaluate(X)

    def _errors(self, x: Tensor) -> Tensor:
        """The candidate's per-example errors, ``(examples, m)``, each of sd ``noise * scale * sqrt(examples)``."""
        digest = hashlib.sha256(x.detach().to(torch.float64).numpy().tobytes() + str(self.seed).encode()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") % 2**63)
        draws = torch.randn(self.examples, self.num_objectives, generator=generator, dtype=torch.float64)
        return draws * self.noise * self.scale * self.examples**0.5

    def evaluate_at(self, x: Tensor, fidelity: float = 1.0) -> Tensor:
        """Observed objectives of one point at ``fidelity``, maximisation form, shape ``(m,)``."""
        k = subset_size(self.examples, self.check_fidelity(fidelity))
        return self.inner.evaluate_one(x) + self._errors(x)[:k].mean(dim=0)

    def evaluate_one(self, x: Tensor) -> Tensor:
        return self.evaluate_at(x, 1.0)

    def metrics(self, x: Tensor, fidelity: float = 1.0) -> dict[str, float]:
        y = self.to_user(self.evaluate_at(x, fidelity))
        return {name: float(v) for name, v in zip(self.objective_names, y.tolist(), strict=True)}
