"""BAMBO: warm-started batch Bayesian optimisation of merge coefficients (BAMBO Alg. 2).

The search space (block-wise by default, BAMBO Sec. 3.2) belongs to the problem
(:class:`~bambo.space.MergeSpace`); this strategy is steps 2-3 of Alg. 2:

1. Warm start (Sec. 3.3): the problem's heuristic settings (each expert alone,
   the balanced mix, all-0 and all-1, :meth:`Problem.heuristic_points`) and Sobol
   points up to ``n_initial`` (N0 = 8 in the paper).
2. Each iteration fits one surrogate per objective (a GP by default; any name in
   :data:`~bambo.surrogates.SURROGATES`) on the completed evaluations and
   maximises a batch acquisition for ``q`` candidates (q = 4, T = 20 in the paper;
   ``q`` is the batch size asked for, T is ``n_iterations``).

Acquisition (any name registered in :mod:`bambo.acquisition`; ``acquisition="auto"``,
:func:`~bambo.acquisition.default_acquisition`):

- up to 3 objectives: qLogNEHVI (Daulton et al. 2021; Ament et al. 2023). The
  paper uses qEHVI (App. C.2), which is available as ``"qehvi"``; the log-noisy
  variant is the default because qEHVI's improvement is exactly zero (no
  gradient) wherever the posterior puts no mass beyond the front, which stalls
  the optimiser once the front is good, and BoTorch itself warns that qEHVI is
  numerically inferior; NEHVI also integrates over the unknown true front at the
  observed points, so evaluation noise (a metric on a finite validation set) does
  not make it chase lucky evaluations.
- from 4 objectives on: qLogNParEGO, a random Chebyshev scalarisation per
  candidate. The cost of hypervolume-based acquisitions grows steeply with the
  number of objectives, ParEGO's does not (per-batch times with 2, 3 and 4
  objectives: ``benchmarks/results/strategies_synthetic.md``).

The hypervolume reference point. ``ref_point="auto"`` (default) is the problem's
reference point when it has one (the thresholds a user states, a benchmark's scoring
reference; what Ax does with objective thresholds), else ``"nadir"``. ``"nadir"`` sets it
from the observations every iteration, as in the paper (App. C.1, "the nadir point"): the
nadir of the observed Pareto front (the worst value of each objective over the
non-dominated points), pushed out by 10% of the front's range (BoTorch's
``infer_reference_point``, also Ax's rule without thresholds). ``"worst"`` is the worst
value observed over all evaluations (the box then reaches far into dominated space and the
search spreads its effort there); ``"problem"`` insists on the problem's fixed reference.
A stated reference is the default because the inferred nadir hugs the front found so far:
the search then stays inside it and rarely widens the front (on BraninCurrin 43 evaluations
to 95% of the reference hypervolume against 35 when told the reference,
``benchmarks/results/strategies_synthetic.md``), and with three objectives every front
point dominates the inferred nadir, so the box decomposition of qLogNEHVI has the most
cells it can have: the next batch at d = 16, n = 100 on DTLZ2 took a median 22.7 CPU-s with
the inferred nadir against 7.7 with the problem's reference, in the same run
(``benchmarks/results/optimizer_cost.md``, 2026-12-07, 3 seeds).

Speed defaults keep one batch short for up to 3 objectives: 64 quasi-MC samples,
6 restarts from 256 raw samples optimised together in one batched L-BFGS, pruned
baselines, and 200 L-BFGS iterations at most. Two things make a batch cheaper without
changing the model:

- each fit starts from the previous fit's hyperparameters (``warm_fit``, as Ax's
  ``warm_start_refit``) and stops after 100 L-BFGS iterations, where a fit from the
  priors took 120-1500 at d = 6-16 (:func:`~bambo.surrogates.gp.fit_gp_model`).
  The hyperparameters are journaled with each batch (:meth:`BAMBO.checkpoint`), so a
  resumed run starts its next fit where the uninterrupted run would have;
- the per-objective GPs are fitted one by one but handed to the acquisition as one
  batched multi-output GP with the same posterior (:func:`~bambo.surrogates.gp.batched_gp`):
  one posterior call per acquisition evaluation instead of one per objective.

With discrete variables (a data-flow space's include bits) the acquisition is maximised by
BoTorch's ``optimize_acqf_mixed_alternating`` (discrete neighbourhood steps alternating with
L-BFGS on the continuous variables), with ``mixed_restarts`` restarts (4) and
:data:`MIXED_OPTIONS`: alternation stops when the log-acquisition gains less than 1e-4 (a
0.01% gain in the acquisition; BoTorch's default, 1e-8, kept it alternating for gains no
batch could tell apart) or after 16 rounds. ``python -m benchmarks.dataflow_cost`` (T = 32
slots, batches of 4 up to n = 56 points, ``benchmarks/results/dataflow_cost.md``): slowest
batch 8.3 s with these settings; 11.2 s with 6 restarts and BoTorch's alternation settings
(the report as committed in daf3ef2).

Per-batch CPU and wall seconds against Ax's: ``benchmarks/results/optimizer_cost.md``.
The time of every fit and acquisition optimisation is logged (logger
``bambo.strategies.bambo``) and kept in ``result.info["timings"]``.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from botorch.acquisition.acquisition import AcquisitionFunction
from botorch.exceptions.warnings import OptimizationWarning
from botorch.models.model import Model
from botorch.optim import optimize_acqf
from botorch.optim.optimize_mixed import optimize_acqf_mixed_alternating
from botorch.sampling.normal import SobolQMCNormalSampler
from botorch.utils.multi_objective.hypervolume import infer_reference_point
from botorch.utils.sampling import sample_simplex
from torch import Tensor
from torch.quasirandom import SobolEngine

from bambo.acquisition import CanonicalAcquisition, acquisition_spec, get_acquisition, resolve_acquisition
from bambo.errors import ConfigError, UnknownNameError
from bambo.pareto import pareto_front
from bambo.problem import Problem
from bambo.result import Artifacts
from bambo.strategies.base import Strategy
from bambo.surrogates.gp import batched_gp, hyperparameters
from bambo.surrogates.registry import SURROGATES, build_surrogate, fit_model

logger = logging.getLogger(__name__)

RefPoint = Literal["auto", "nadir", "worst", "problem"]
REF_POINTS = ("auto", "nadir", "worst", "problem")

MIXED_OPTIONS: dict[str, float | int] = {"tol": 1e-4, "maxiter_alternating": 16}
"""Options of BoTorch's ``optimize_acqf_mixed_alternating`` for problems with discrete variables."""


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run the block with at most ``n`` torch threads (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(min(n, before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _is_optimizer_warning(message: Warning | str) -> bool:
    """BoTorch's notices that L-BFGS stopped abnormally and the optimisation was restarted."""
    return isinstance(message, OptimizationWarning) or "Optimization failed" in str(message)


class BAMBO(Strategy):
    """BAMBO's optimisation loop (BAMBO Alg. 2): warm start, then batch multi-objective BO.

    Args:
        problem: The problem (a block-wise :class:`~bambo.problem.MergeProblem` in the paper).
        seed: Seeds the Sobol warm start, the quasi-MC samples and the restarts.
        n_initial: N0, warm-start points (heuristic settings first, then Sobol). A
            strategy already told ``n_initial`` completed evaluations skips the warm start.
        n_iterations: T, model-based batches; afterwards ``ask`` returns nothing
            (``None``: until the caller's budget runs out). Every ``ask`` is one: in the
            experiment loop's asynchronous mode, usually of one candidate.
        surrogate: A registered surrogate name (``"gp"``, ``"quadratic-mean-gp"``, ...).
        acquisition: ``"auto"`` or any name in :data:`bambo.acquisition.ACQUISITIONS` that
            applies to the problem's number of objectives (``"qlognehvi"``, ``"qehvi"``,
            ``"qlognparego"``, ``"qlognei"``, or one added by
            :func:`~bambo.acquisition.register_acquisition`).
        ref_point: ``"auto"`` (the problem's reference if it has one, else ``"nadir"``),
            ``"nadir"``, ``"worst"`` or ``"problem"`` (see the module docstring).
        heuristics: Start with the problem's heuristic settings (else Sobol only).
        mc_samples: Quasi-MC samples of the acquisition.
        num_restarts: Restarts of the acquisition optimiser.
        raw_samples: Raw samples that pick the restarts.
        maxiter: L-BFGS iterations per restart at most.
        mixed_restarts: Restarts of the alternating discrete/continuous optimiser, used instead
            of ``num_restarts`` when the problem has discrete variables (each restart runs its
            own discrete neighbourhood search, so it costs several continuous restarts).
        sequential: Pick the q candidates one after another, each conditioned on
            the earlier ones (sequential greedy, BoTorch's recommendation for
            hypervolume acquisitions), instead of jointly.
        warm_fit: Start each surrogate fit from the previous fit's hyperparameters
            (else from the priors every time).
        canonical: Ask for, fit on and score the acquisition at the problem's canonical
            form of each decision vector (:meth:`~bambo.problem.Problem.canonical`: one
            vector per distinct data-flow path, a dropped layer's scale at 1), through
            :class:`~bambo.acquisition.CanonicalAcquisition`. ``False`` works on the raw
            vectors (the ablation of the data-flow benchmark); it changes nothing on a
            problem whose canonical form is the identity.
    """

    name = "bambo"
    asynchronous = True  # asked points not yet told are the acquisition's X_pending

    def __init__(
        self,
        problem: Problem,
        seed: int = 0,
        n_initial: int = 8,
        n_iterations: int | None = 20,
        surrogate: str = "gp",
        acquisition: str = "auto",
        ref_point: RefPoint = "auto",
        heuristics: bool = True,
        mc_samples: int = 64,
        num_restarts: int = 6,
        raw_samples: int = 256,
        maxiter: int = 200,
        mixed_restarts: int = 4,
        sequential: bool = True,
        warm_fit: bool = True,
        canonical: bool = True,
    ) -> None:
        super().__init__(problem, seed)
        if surrogate not in SURROGATES:
            raise UnknownNameError("surrogate", surrogate, SURROGATES)
        if ref_point not in REF_POINTS:
            raise ConfigError(f"unknown ref_point {ref_point!r}; valid: {', '.join(REF_POINTS)}")
        if ref_point == "problem" and problem.ref_point is None:
            raise ConfigError("ref_point='problem' but the problem has no reference point")
        if n_iterations is not None and n_iterations < 0:
            raise ConfigError(f"n_iterations must be >= 0 or None, got {n_iterations}")
        restarts = (num_restarts, mixed_restarts)
        if n_initial < 1 or mc_samples < 1 or min(restarts) < 1 or max(restarts) > raw_samples:
            raise ConfigError(
                f"need n_initial >= 1, mc_samples >= 1, 1 <= num_restarts, mixed_restarts <= raw_samples; got "
                f"n_initial={n_initial}, mc_samples={mc_samples}, num_restarts={num_restarts}, "
                f"mixed_restarts={mixed_restarts}, raw_samples={raw_samples}"
            )
        self.acquisition_name = resolve_acquisition(acquisition, problem.num_objectives)
        self._acquisition_spec = acquisition_spec(self.acquisition_name)
        self.surrogate = surrogate
        if ref_point == "auto":
            ref_point = "problem" if problem.ref_point is not None else "nadir"
        self.ref_point_rule: RefPoint = ref_point  # "auto" resolved
        self.n_initial = n_initial
        self.n_iterations = n_iterations
        self.mc_samples, self.num_restarts, self.raw_samples, self.maxiter = (
            mc_samples,
            num_restarts,
            raw_samples,
            maxiter,
        )
        self.mixed_restarts = mixed_restarts
        self.sequential = sequential
        self.warm_fit = warm_fit
        self.canonical = canonical and type(problem).canonical is not Problem.canonical
        self._hyperparameters: dict[str, list] | None = None  # of the last fit: the next fit's start
        self._warm_start = self._initial_design(heuristics)
        self._iteration = 0
        self._pending = torch.empty(0, problem.dim, dtype=torch.float64)  # asked, not yet told
        self.timings: list[dict[str, float]] = []

    def _initial_design(self, heuristics: bool) -> Tensor:
        lower, upper = self.problem.bounds
        chosen = self.problem.heuristic_points()[: self.n_initial] if heuristics else lower.new_empty(0, lower.numel())
        n_sobol = self.n_initial - chosen.shape[0]
        if n_sobol == 0:
            return chosen
        sobol = SobolEngine(self.problem.dim, scramble=True, seed=self.seed).draw(n_sobol, dtype=torch.float64)
        return torch.cat([chosen, lower + (upper - lower) * sobol])

    def ask(self, n: int) -> Tensor:
        X = self._canonical(self._propose(n))
        self._pending = torch.cat([self._pending, X])
        return X

    def tell(self, X: Tensor, Y: Tensor) -> None:
        super().tell(X, Y)
        told = torch.as_tensor(X, dtype=torch.float64)
        if self._pending.shape[0] and told.shape[0]:
            matched = (torch.cdist(self._pending, told) < 1e-12).any(dim=1)
            self._pending = self._pending[~matched]

    def _propose(self, n: int) -> Tensor:
        self._check_n(n)
        if self._warm_start.shape[0] > 0 and self.completed[0].shape[0] >= self.n_initial:
            # told enough data already (earlier evaluations, another tool's): model at once
            self._warm_start = self._warm_start[:0]
        if self._warm_start.shape[0] > 0:
            X, self._warm_start = self._warm_start[:n], self._warm_start[n:]
            return X.clone()
        if self.n_iterations is not None and self._iteration >= self.n_iterations:
            return self.X[:0].clone()  # T iterations done
        X_ok, Y_ok = self.completed
        if X_ok.shape[0] < 2:  # nothing to model yet (failures): keep exploring
            self._iteration += 1
            sobol = SobolEngine(self.problem.dim, scramble=True, seed=self.seed + 1 + self.X.shape[0])
            lower, upper = self.problem.bounds
            return lower + (upper - lower) * sobol.draw(n, dtype=torch.float64)
        return self._bayesian_batch(X_ok, Y_ok, n)

    def replay(self, X: Tensor) -> None:
        """Advance without refitting: pop the warm start, or count a model-based batch.

        BAMBO's state is its data and two counters, so a journaled batch is replayed
        exactly without repeating the acquisition optimisation.
        """
        k = X.shape[0]
        if self._warm_start.shape[0] > 0:
            self._warm_start = self._warm_start[k:]
        else:
            self._iteration += 1
        self._pending = torch.cat([self._pending, torch.as_tensor(X, dtype=torch.float64)])

    def checkpoint(self) -> dict[str, Any] | None:
        """The last fit's hyperparameters, where the next fit starts (``warm_fit``)."""
        if self._hyperparameters is None:
            return None
        return {"hyperparameters": self._hyperparameters}

    def restore(self, state: dict[str, Any]) -> None:
        """Take back the hyperparameters journaled with a replayed batch."""
        self._hyperparameters = state.get("hyperparameters")

    # -- one BO iteration ----------------------------------------------------------------------

    def reference_point(self, Y: Tensor) -> Tensor:
        """The hypervolume reference for the acquisition, maximisation form, shape ``(m,)``.

        Args:
            Y: Completed objectives, shape ``(n, m)``.
        """
        if self.ref_point_rule == "problem":
            return self.problem.ref_point.to(Y)
        if self.ref_point_rule == "worst":
            return Y.min(dim=0).values
        return infer_reference_point(pareto_front(Y))

    def _bayesian_batch(self, X: Tensor, Y: Tensor, q: int) -> Tensor:
        if q > 1 and not self._acquisition_spec.batch:
            raise ConfigError(
                f"acquisition {self.acquisition_name!r} scores one candidate at a time, but {q} were asked for; "
                "use batch_size=1 or a batch acquisition"
            )
        start = time.perf_counter()
        X = self._canonical(X)  # one point per distinct candidate (a data-flow path)
        seed = self.seed * 100_003 + self._iteration
        with torch.random.fork_rng():  # fit retries draw from the global generator
            torch.manual_seed(seed)
            model = build_surrogate(self.surrogate, X, Y, bounds=self.problem.bounds)
            with _threads(1):  # a fit's small matrices gain no speed from more threads, only CPU time
                fit_model(model, start=self._hyperparameters if self.warm_fit else None)
        if self.warm_fit:
            self._hyperparameters = hyperparameters(model)
        model = batched_gp(model, X, Y, self.problem.bounds)
        fitted = time.perf_counter()
        self._iteration += 1
        options = {"maxiter": self.maxiter, "batch_limit": self.num_restarts}
        bounds = self.problem.bounds
        # L-BFGS "ABNORMAL" stops make BoTorch retry from new starts and warn; count them instead.
        # Seed the acquisition's construction too: prune_baseline seeds its sampler from the global
        # generator, whose state is whatever earlier code (an earlier run in this process) left.
        with warnings.catch_warnings(record=True) as caught, torch.random.fork_rng():
            torch.manual_seed(seed)
            warnings.simplefilter("always", OptimizationWarning)
            warnings.filterwarnings("always", message="Optimization failed", category=RuntimeWarning)
            if self._acquisition_spec.scalarized:
                candidates = self._scalarized_batch(model, X, Y, q, seed, options)
            else:
                acqf = self._acquisition(model, X, Y, seed)
                with torch.random.fork_rng():
                    torch.manual_seed(seed)
                    candidates = self._optimize(acqf, q, options, self.sequential)
        optimizer_warnings = [w for w in caught if _is_optimizer_warning(w.message)]
        for w in caught:
            if not _is_optimizer_warning(w.message):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        done = time.perf_counter()
        timing = {
            "n": float(X.shape[0]),
            "fit_s": fitted - start,
            "acquisition_s": done - fitted,
            "optimizer_warnings": float(len(optimizer_warnings)),
        }
        self.timings.append(timing)
        logger.info(
            "%s iteration %d: fit %.2f s, %s %.2f s (n=%d, q=%d)",
            self.name,
            self._iteration,
            timing["fit_s"],
            self.acquisition_name,
            timing["acquisition_s"],
            X.shape[0],
            q,
        )
        return candidates.detach().clamp(bounds[0], bounds[1])  # ask() makes them canonical

    def _optimize(self, acqf: AcquisitionFunction, q: int, options: dict, sequential: bool) -> Tensor:
        """Maximise the acquisition over the box: L-BFGS, or BoTorch's alternating discrete/continuous
        search when the problem has discrete variables (a data-flow space's include bits)."""
        discrete = self.problem.discrete_dims
        if discrete:
            candidates, _ = optimize_acqf_mixed_alternating(
                acqf,
                bounds=self.problem.bounds,
                q=q,
                discrete_dims=discrete,
                num_restarts=self.mixed_restarts,
                raw_samples=self.raw_samples,
                options=dict(MIXED_OPTIONS),
                sequential=True,
            )
            return candidates
        candidates, _ = optimize_acqf(
            acqf,
            bounds=self.problem.bounds,
            q=q,
            num_restarts=self.num_restarts,
            raw_samples=self.raw_samples,
            options=options,
            sequential=sequential,
        )
        return candidates

    def _canonical(self, X: Tensor) -> Tensor:
        return self.problem.canonical(X) if self.canonical else X

    def _on_canonical(self, acqf: AcquisitionFunction) -> AcquisitionFunction:
        return CanonicalAcquisition(acqf, self.problem.canonical) if self.canonical else acqf

    def _sampler(self, seed: int) -> SobolQMCNormalSampler:
        return SobolQMCNormalSampler(sample_shape=torch.Size([self.mc_samples]), seed=seed)

    def _inputs(self, X: Tensor, Y: Tensor, pending: Tensor) -> dict[str, Any]:
        """BoTorch's acquisition inputs from the completed data and the pending points."""
        inputs: dict[str, Any] = {"X_baseline": X, "Y_baseline": Y, "X_pending": pending if pending.shape[0] else None}
        if Y.shape[1] > 1:
            inputs["ref_point"] = self.reference_point(Y)
        else:
            inputs["best_f"] = Y[:, 0].max()
        return inputs

    def _acquisition(self, model: Model, X: Tensor, Y: Tensor, seed: int) -> AcquisitionFunction:
        """The acquisition, aware of points asked but not yet told (``X_pending``)."""
        sampler = self._sampler(seed)
        acqf = get_acquisition(self.acquisition_name, model, sampler=sampler, **self._inputs(X, Y, self._pending))
        return self._on_canonical(acqf)

    def _scalarized_batch(self, model: Model, X: Tensor, Y: Tensor, q: int, seed: int, options: dict) -> Tensor:
        """q candidates, each maximising the acquisition under its own random weights, the earlier ones pending."""
        generator = torch.Generator().manual_seed(seed)
        all_weights = sample_simplex(self.problem.num_objectives, n=q, dtype=torch.float64, seed=seed)
        chosen: list[Tensor] = []
        for i in range(q):
            inputs = self._inputs(X, Y, torch.cat([self._pending, *chosen]))
            acqf = get_acquisition(
                self.acquisition_name,
                model,
                sampler=self._sampler(seed * 31 + i),
                scalarization_weights=all_weights[i],
                **inputs,
            )
            with torch.random.fork_rng():
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
                candidate = self._optimize(self._on_canonical(acqf), 1, options, True)
            chosen.append(candidate.detach())
        return torch.cat(chosen)

    def artifacts(self) -> Artifacts:
        info = {
            "acquisition": self.acquisition_name,
            "surrogate": self.surrogate,
            "ref_point_rule": self.ref_point_rule,
            "timings": [dict(t) for t in self.timings],
        }
        return Artifacts(info=info)
