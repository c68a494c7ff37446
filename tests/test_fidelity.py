"""Multi-fidelity search: nested subsets, the promotion rule, halving in the experiment loop, resume and failures."""

from __future__ import annotations

import sqlite3
import statistics

import pytest
import torch

from bambo.benchmarks.noisy import NoisyFidelityProblem
from bambo.errors import ConfigError
from bambo.execution import LocalExecutor
from bambo.experiment import Experiment
from bambo.fidelity import Halving, nested_subset, noise_margin, promote, subset_size
from bambo.pareto import hypervolume, pareto_mask
from bambo.problem import SyntheticProblem
from bambo.store import Journal
from bambo.strategies import get_strategy

FAST = {"n_initial": 6, "num_restarts": 2, "raw_samples": 32, "mc_samples": 16, "maxiter": 30}


# -- nested subsets ------------------------------------------------------------------------------


def test_subsets_are_nested_seeded_and_sized_by_the_fidelity():
    n = 359
    fidelities = [0.05, 0.1, 0.25, 0.5, 0.9, 1.0]
    subsets = [set(nested_subset(n, f, seed=3).tolist()) for f in fidelities]
    for small, large in zip(subsets, subsets[1:], strict=False):
        assert small < large
    assert [len(s) for s in subsets] == [subset_size(n, f) for f in fidelities] == [18, 36, 90, 180, 324, 359]
    assert torch.equal(nested_subset(n, 0.25, seed=3), nested_subset(n, 0.25, seed=3))
    assert not torch.equal(nested_subset(n, 0.25, seed=3), nested_subset(n, 0.25, seed=4))
    assert torch.equal(nested_subset(n, 1.0, seed=3), torch.arange(n))
    assert subset_size(10, 0.01) == 1


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5, float("nan"), "high"])
def test_a_fidelity_outside_zero_one_is_refused_by_name(bad):
    with pytest.raises(ConfigError, match="fidelity must"):
        nested_subset(10, bad)


# -- the promotion rule --------------------------------------------------------------------------


def test_promotion_skips_candidates_the_front_beats_by_more_than_the_noise():
    front = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    Y_low = torch.tensor([[0.5, 0.5], [0.95, 0.95], [1.2, 0.2], [float("nan"), float("nan")]], dtype=torch.float64)
    assert promote(Y_low, 4, front, torch.zeros(2)) == [2]  # 0 and 1 are beaten, 3 failed
    assert sorted(promote(Y_low, 4, front, torch.full((2,), 0.1))) == [1, 2]  # 1 is within the noise
    assert promote(Y_low, 2, front[:0], torch.zeros(2)) == [1, 2]  # without a front: the non-dominated ones first
    assert promote(Y_low, 4, front[:0], torch.zeros(2)) == [1, 2, 0]  # then the next rank


def test_promotion_takes_ranks_in_order_and_breaks_the_last_by_hypervolume_gain():
    Y_low = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [0.5, 0.5], [0.1, 0.1]], dtype=torch.float64)
    chosen = promote(Y_low, 4, torch.empty(0, 2, dtype=torch.float64), torch.zeros(2), torch.zeros(2))
    assert chosen[:3] == [0, 1, 2] or sorted(chosen[:3]) == [0, 1, 2]
    assert chosen[3] == 3  # rank 2 before rank 3
    two = promote(Y_low, 2, torch.empty(0, 2, dtype=torch.float64), torch.zeros(2), torch.zeros(2))
    assert two[0] == 2  # (0.7, 0.7) adds the most hypervolume from (0, 0) on its own


def test_the_noise_margin_is_the_rms_gap_between_fidelities():
    pairs = [
        (torch.tensor([0.0, 1.0]), torch.tensor([0.3, 1.0])),
        (torch.tensor([0.0, 0.0]), torch.tensor([-0.4, 0.0])),
    ]
    assert torch.allclose(noise_margin(pairs, 2), torch.tensor([0.125**0.5, 0.0]))
    assert torch.equal(noise_margin([], 3), torch.zeros(3, dtype=torch.float64))


def test_promotion_picks_the_truly_better_candidates_more_often_than_chance():
    """Noise shrinking as 1/sqrt(fidelity): promoted candidates are truly non-dominated in their batch far more
    often than a random choice of the same size."""
    problem = NoisyFidelityProblem(noise=0.03)
    generator = torch.Generator().manual_seed(0)
    lower, upper = problem.bounds
    hits = chance = 0.0
    for _ in range(60):
        X = lower + (upper - lower) * torch.rand(12, 2, generator=generator, dtype=torch.float64)
        truth = problem.true(X)
        best = pareto_mask(truth, deduplicate=False)
        Y_low = torch.stack([problem.evaluate_at(x, 0.25) for x in X])
        chosen = promote(Y_low, 4, torch.empty(0, 2, dtype=torch.float64), torch.zeros(2))
        hits += best[chosen].double().mean().item()
        chance += best.double().mean().item()
    assert hits / 60 > 1.5 * chance / 60


# -- halving in the experiment loop --------------------------------------------------------------


def true_hv(problem: NoisyFidelityProblem, X: torch.Tensor) -> float:
    T = problem.true(X)
    T = T[(T > problem.ref_point).all(dim=-1)]
    return hypervolume(T[pareto_mask(T)], problem.ref_point) if T.shape[0] else 0.0


def test_a_halving_run_spends_its_budget_in_cost_and_reports_full_fidelity_rows_only():
    problem = NoisyFidelityProblem(noise=0.03)
    experiment = Experiment(problem, get_strategy("sobol", problem, seed=1), halving=Halving(fidelity=0.25, factor=3))
    result = experiment.run(10, 4)
    low = [t for t in experiment.trials if t.fidelity < 1]
    full = [t for t in experiment.trials if t.fidelity == 1]
    assert low and full and all(t.parent is not None for t in full)
    assert 10 <= experiment.cost <= 10 + Halving().batch_cost(1)
    assert result.n_evaluations == len(full) and result.trial_ids == [t.id for t in full]
    assert result.costs == sorted(result.costs) and result.costs[-1] <= experiment.cost
    assert result.info["fidelity"] == {"low_fidelity_trials": len(low), "cost": pytest.approx(experiment.cost)}
    for trial in full:  # a promotion re-evaluates its parent's x in full
        parent = experiment.trials[trial.parent]
        assert parent.x == trial.x and parent.fidelity == 0.25 and parent.batch == trial.batch
    for batch in {t.batch for t in experiment.trials}:
        assert len([t for t in full if t.batch == batch]) <= 4


def test_halving_finds_a_front_no_worse_than_full_evaluations_for_the_same_cost():
    """On the noisy synthetic problem, at equal cost, random proposals filtered by halving give a truly better
    front than random proposals evaluated in full (median over seeds)."""
    problem = NoisyFidelityProblem(noise=0.03)
    plain, halved = [], []
    for seed in range(5):
        result = Experiment(problem, get_strategy("random", problem, seed=seed)).run(16, 4)
        plain.append(true_hv(problem, result.X))
        experiment = Experiment(problem, get_strategy("random", problem, seed=seed), halving=Halving())
        halved.append(true_hv(problem, experiment.run(16, 4).X))
    assert statistics.median(halved) >= statistics.median(plain)


def test_bambo_with_halving_tells_one_row_per_candidate():
    problem = NoisyFidelityProblem(noise=0.03)
    strategy = get_strategy("bambo", problem, seed=0, n_iterations=None, **FAST)
    experiment = Experiment(problem, strategy, halving=Halving(low_fidelity="drop"))
    result = experiment.run(7, 2)
    assert len(strategy.timings) >= 1  # a model-based batch ran after the warm start
    stage0 = [t for t in experiment.trials if t.parent is None]
    assert strategy.X.shape[0] == len(stage0)  # one row per candidate proposed
    X_ok, Y_ok = strategy.completed
    full = {tuple(t.x): t.objectives for t in experiment.trials if t.fidelity == 1 and t.status == "completed"}
    assert X_ok.shape[0] == len(full)  # "drop": the model sees full-fidelity data only
    for x, y in zip(X_ok.tolist(), Y_ok.tolist(), strict=True):
        assert full[tuple(x)] == pytest.approx(y)
    assert result.n_evaluations == len(full)


def test_halving_needs_a_problem_with_fidelities_and_batch_mode():
    problem = SyntheticProblem("branin_currin")
    with pytest.raises(ConfigError, match="fidelity 0.25 asked of a problem that evaluates in full only"):
        Experiment(problem, get_strategy("sobol", problem), halving=Halving())
    noisy = NoisyFidelityProblem()
    experiment = Experiment(noisy, get_strategy("sobol", noisy), halving=Halving())
    with pytest.raises(ConfigError, match="halving promotes within whole batches"):
        experiment.run(8, 2, mode="async")
    with pytest.raises(ConfigError):
        Halving(fidelity=1.0)


# -- resume and failures -------------------------------------------------------------------------


class Crash(BaseException):
    """A process dying (nothing catches it)."""


class CountingExecutor(LocalExecutor):
    """Counts evaluations per trial; raises :class:`Crash` when ``crash(trial, finished_so_far)`` says so."""

    def __init__(self, crash=None) -> None:
        super().__init__()
        self.crash = crash
        self.evaluated: list[tuple[int, float]] = []

    def evaluate(self, problem, trials, started, finished):
        def finish(trial_id, metrics, error):
            finished(trial_id, metrics, error)
            self.evaluated.append((trial_id, fidelity_of[trial_id]))
            if self.crash is not None and self.crash("after", trial_id, fidelity_of[trial_id]):
                raise Crash

        def start(trial_id):
            if self.crash is not None and self.crash("before", trial_id, fidelity_of[trial_id]):
                raise Crash
            started(trial_id)

        fidelity_of = {t[0]: t[2] for t in trials}
        super().evaluate(problem, trials, start, finish)


def _run(problem, path, executor, budget=8):
    strategy = get_strategy("bambo", problem, seed=2, n_iterations=None, **FAST)
    with Journal(path) as journal:
        experiment = Experiment(problem, strategy, journal, executor, halving=Halving())
        return experiment.run(budget, 2), [(t.x, t.fidelity, t.parent, t.status) for t in experiment.trials]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The result and trials of the uninterrupted run the cut runs must reproduce."""
    return _run(NoisyFidelityProblem(noise=0.03), tmp_path_factory.mktemp("whole") / "journal.sqlite", LocalExecutor())


@pytest.mark.parametrize(
    "where",
    [
        "before the first full-fidelity evaluation of the second batch",
        "after the last low-fidelity evaluation, before the promotion",
        "after the first full-fidelity evaluation of the second batch",
    ],
)
def test_a_batch_cut_between_its_stages_resumes_to_the_uninterrupted_journal(tmp_path, where, uninterrupted):
    problem = NoisyFidelityProblem(noise=0.03)
    reference, expected = uninterrupted

    def crash(when, trial_id, fidelity):
        with sqlite3.connect(tmp_path / "cut.sqlite") as conn:
            batch = conn.execute("SELECT batch FROM trials WHERE id = ?", (trial_id,)).fetchone()[0]
            waiting = conn.execute(
                "SELECT COUNT(*) FROM trials WHERE batch = ? AND fidelity < 1 AND status != 'completed'", (batch,)
            ).fetchone()[0]
        if batch != 1:
            return False
        if where.startswith("before"):
            return when == "before" and fidelity == 1.0
        if where.startswith("after the last"):
            return when == "after" and fidelity < 1.0 and waiting == 0
        return when == "after" and fidelity == 1.0

    first = CountingExecutor(crash)
    with pytest.raises(Crash):
        _run(problem, tmp_path / "cut.sqlite", first)
    second = CountingExecutor()
    result, trials = _run(problem, tmp_path / "cut.sqlite", second)
    assert trials == expected
    assert torch.equal(result.X, reference.X) and torch.allclose(result.Y_max, reference.Y_max, equal_nan=True)
    done_before = {trial_id for trial_id, _ in first.evaluated}
    assert not done_before & {trial_id for trial_id, _ in second.evaluated}  # nothing evaluated twice


def test_failed_evaluations_at_either_fidelity_are_recorded_and_the_run_goes_on():
    class Flaky(NoisyFidelityProblem):
        def metrics(self, x, fidelity=1.0):
            if fidelity < 1 and x[0] > 0.8:  # a crash at low fidelity: never promoted
                raise RuntimeError("low-fidelity crash")
            if fidelity == 1 and x[0] < 0.4:  # a crash of a promoted candidate
                raise RuntimeError("full-fidelity crash")
            return super().metrics(x, fidelity)

    problem = Flaky(noise=0.03)
    experiment = Experiment(problem, get_strategy("random", problem, seed=0), halving=Halving())
    result = experiment.run(16, 4)
    low_failed = [t for t in experiment.trials if t.fidelity < 1 and t.status == "failed"]
    full_failed = [t for t in experiment.trials if t.fidelity == 1 and t.status == "failed"]
    assert low_failed and full_failed
    assert not {t.id for t in low_failed} & {t.parent for t in experiment.trials}
    assert all("full-fidelity crash" in result.errors[result.trial_ids.index(t.id)] for t in full_failed)
    assert result.ok.sum() >= 1


def test_an_older_journal_without_fidelity_columns_reads_as_full_fidelity(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "CREATE TABLE trials (id INTEGER PRIMARY KEY, batch INTEGER NOT NULL, x TEXT NOT NULL,"
            " status TEXT NOT NULL, metrics TEXT, objectives TEXT, error TEXT, created REAL NOT NULL,"
            " started REAL, finished REAL);"
            "INSERT INTO trials VALUES (0, 0, '[0.5]', 'completed', '{}', '[1.0]', NULL, 0, 0, 1);"
        )
    read = Journal(path, read_only=True)
    assert (read.trials()[0].fidelity, read.trials()[0].cost, read.trials()[0].parent) == (1.0, 1.0, None)
    read.close()
    with Journal(path) as journal:  # opened for writing: the columns are added
        assert journal.trials()[0].fidelity == 1.0
        assert journal.add_batch([[0.25]], fidelity=0.5)[0].cost == 0.5
