"""Smoke test of the benchmark suite (``python -m benchmarks run``) on a tiny configuration."""

import math
import re

import pytest
import torch

from bambo.pareto import hypervolume
from benchmarks import __main__ as cli
from benchmarks.contenders import CONTENDERS, run_session
from benchmarks.suite import (
    PROBLEMS,
    SUITES,
    first_reaching,
    hv_history,
    merge_prereference,
    merge_reference,
    with_ref_point,
)

pytest.importorskip("optuna")


def test_tiny_suite_writes_a_report_with_ratios(tmp_path, capsys):
    labels = ("BAMBO (GP)", "MAP", "Sobol", "Optuna TPE", "Optuna NSGA-II", "Ax (default MOO)")
    contenders = [arg for label in labels for arg in ("--contender", label)]
    options = "--budget 10 --batch-size 3 --seeds 2 --name smoke --threads 1".split()
    argv = [
        "run",
        "--suite",
        "quick",
        "--problem",
        "DTLZ2 (d=6, 2 obj)",
        *contenders,
        *options,
        "--output",
        str(tmp_path),
    ]
    assert cli.main(argv) == 0
    report = (tmp_path / "smoke.md").read_text()
    assert "# Benchmark suite `smoke`" in report and "- versions: torch" in report and "optuna" in report
    assert "- command: `python -m benchmarks run --suite quick" in report and "- date: " in report
    assert re.search(r"this run: wall \d+ s, CPU \d+ s", report)
    assert "- Ax (default MOO): Ax Client" in report and "[told: the scoring reference point (as objective" in report
    assert "**Evaluations-to-95%-HV ratio** (BAMBO (GP), bambo's default fixed before the run" in report
    overhead = re.search(
        r"\*\*Optimizer-overhead ratio against Ax's Client\*\* .*= (\S+); CPU .* = (\S+) \(lower", report
    )
    assert overhead and all(math.isfinite(float(v)) for v in overhead.groups())
    assert (tmp_path / "smoke_hv.png").stat().st_size > 0 and (tmp_path / "smoke_overhead.png").exists()
    table = {row.split("|")[1].strip(): row for row in report.splitlines() if row.startswith("| ")}
    for label in labels:
        cells = table[label].split("|")[2:-1]
        numbers = [
            float(v) for cell in (cells[0], *cells[3:6]) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", cell)
        ]
        assert len(numbers) == 12 and all(math.isfinite(v) for v in numbers), table[label]
    # best-of rows: one per tool with several configurations, each the chosen configuration's own cells
    best = {key: row for key, row in table.items() if key.startswith("*") and "best of" in key}
    assert {key.split(" best of")[0] for key in best} == {"*bambo", "*Optuna"}
    for key, row in best.items():
        chosen = key.rstrip("*").split("after the fact: ")[1]
        assert chosen in labels and row.split("|")[2:] == table[chosen].split("|")[2:]
    assert "Best of each tool's configurations, picked **after the fact**" in report


def test_merge_problems_tell_every_contender_the_scoring_reference_point():
    from bambo.ax import configure_client  # noqa: F401 - needs Ax

    spec = PROBLEMS["digits 2 experts (model level)"]
    problem = spec.build()
    pre = merge_prereference(spec, problem, evaluations=0)  # the grid alone
    told = with_ref_point(problem, pre.ref_point)
    assert torch.equal(told.ref_point, pre.ref_point) and not torch.equal(problem.ref_point, pre.ref_point)
    Y = torch.tensor([[0.9, 0.9], [0.95, 0.85]], dtype=torch.float64)
    default = CONTENDERS["BAMBO (GP)"].make(told, 0, 8, 4)
    assert torch.equal(default.reference_point(Y), pre.ref_point)  # ref_point="auto": the problem's
    inferring = CONTENDERS["BAMBO (GP, inferred ref)"].make(told, 0, 8, 4)
    assert not torch.equal(inferring.reference_point(Y), pre.ref_point)  # it infers its own
    ax = CONTENDERS["Ax (default MOO)"].make(told, 0, 8, 4)
    bounds = sorted(t.bound for t in ax.client._experiment.optimization_config.objective_thresholds)
    assert bounds == pytest.approx(sorted(told.to_user(pre.ref_point).tolist()))
    inferred = CONTENDERS["Ax (inferred thresholds)"].make(told, 0, 8, 4)
    assert not inferred.client._experiment.optimization_config.objective_thresholds


@pytest.mark.parametrize(("label", "n"), [("Optuna NSGA-II", 8), ("CMA-ES (weighted sum)", 8), ("grid", 4)])
def test_contender_sessions_fill_the_budget(label, n):
    problem = PROBLEMS["BraninCurrin (d=2)"].build()
    record = run_session(problem, CONTENDERS[label].make(problem, 0, 8, 4), budget=8, batch_size=4)
    # the grid is thinned to 2 x 2 levels to fit 8 evaluations in d = 2, then stops; CMA-ES's
    # batches end at its generations (popsize 6 in d = 2)
    assert record.Y.shape == (n, 2) and torch.isfinite(record.Y).all() and len(record.batch_seconds) >= n // 4


def test_hv_history_and_reaching():
    ref = torch.zeros(2, dtype=torch.float64)
    Y = torch.tensor([[1.0, 1.0], [0.5, 0.5], [2.0, 0.5], [float("nan"), 1.0]], dtype=torch.float64)
    assert hv_history(Y, ref) == pytest.approx([1.0, 1.0, 1.5, 1.5])
    assert first_reaching([0.2, 0.91, 0.96], 0.95) == 3 and math.isinf(first_reaching([0.1], 0.9))


def test_suites_name_known_problems_and_contenders():
    for config in SUITES.values():
        assert set(config.problems) <= set(PROBLEMS) and set(config.contenders) <= set(CONTENDERS)
    from benchmarks.suite import OUTSIDE

    assert set(SUITES["full"].contenders) == set(CONTENDERS)
    assert set(SUITES["full"].problems) == set(PROBLEMS) - set(OUTSIDE)  # the outside problems stay outside


def test_merge_reference_pools_grid_nsga2_and_contenders_at_a_reference_fixed_before():
    spec = PROBLEMS["digits 2 experts (model level)"]
    problem = spec.build()
    pre = merge_prereference(spec, problem, evaluations=40)
    notes = " ".join(pre.notes)
    assert "51 x 51 = 2601-point model-level grid" in notes and "40-evaluation" in notes
    assert (pre.ref_point >= problem.ref_point).all() and (pre.ref_point < pre.front.max(0).values).all()
    pooled = problem.evaluate(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64))
    reference = merge_reference(problem, pre, pooled)
    assert torch.equal(reference.ref_point, pre.ref_point)  # the contenders' points do not move it
    assert reference.hv >= hypervolume(pre.front, pre.ref_point) > 0
    assert reference.hv >= max(hv_history(pooled, reference.ref_point))


def test_runs_on_worker_processes_equal_the_runs_in_this_process():
    """``--jobs 2``: the contenders' seeds run side by side in spawned workers, with the same evaluations."""
    import dataclasses
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from benchmarks.suite import init_worker, run_problem

    config = dataclasses.replace(
        SUITES["quick"], problems=["BraninCurrin (d=2)"], contenders=["Sobol", "Optuna TPE"], budget=8, seeds=2
    )
    spec = PROBLEMS["BraninCurrin (d=2)"]
    serial = run_problem(spec, config, log=lambda _: None)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=context, initializer=init_worker, initargs=(1,)) as pool:
        parallel = run_problem(spec, config, log=lambda _: None, pool=pool)
    for label in config.contenders:
        assert serial.stats[label].histories == parallel.stats[label].histories
        assert serial.stats[label].evaluations == parallel.stats[label].evaluations == [8, 8]
    assert parallel.cpu_seconds > parallel.own_cpu_seconds  # the workers' runs are counted


def test_report_gives_the_hv_fraction_at_24_evaluations_when_the_budget_is_larger():
    from benchmarks.suite import Stats

    stats = Stats()
    for seed in range(3):
        history = [0.5 + 0.01 * seed] * 24 + [0.9 + 0.01 * seed] * 36  # 60 evaluations
        stats.histories.append(history)
        stats.final.append(history[-1])
        for name in ("reach90", "reach95", "igd", "batch_s", "batch_cpu_s"):
            getattr(stats, name).append(30.0)
    assert cli.hv_at(stats, 24) == pytest.approx([0.50, 0.51, 0.52])
    assert cli.stats_cells(stats, budget=60).startswith("51.0% [50.5, 51.5] | 91.0% [90.5, 91.5] |")
    assert cli.stats_cells(stats, budget=24).startswith("91.0% [90.5, 91.5] |")


def test_outside_problems_get_a_reference_front_from_nsga2():
    """VehicleSafety and CarSideImpact (the ``outside`` tier) have no front generator in BoTorch."""
    from benchmarks.suite import OUTSIDE, _nsga2_front

    assert set(OUTSIDE) == set(SUITES["outside"].problems) and not set(OUTSIDE) & set(SUITES["full"].problems)
    problem = PROBLEMS["VehicleSafety (d=5, 3 obj)"].build()
    front = _nsga2_front(problem, population=20, generations=5)
    assert front.shape[1] == 3 and torch.equal(front, _nsga2_front(problem, population=20, generations=5))
    X = problem.bounds[0] + (problem.bounds[1] - problem.bounds[0]) * torch.rand(50, 5, dtype=torch.float64)
    Y = problem.evaluate(X)
    # a short run already dominates most random points
    assert (front.unsqueeze(0) >= Y.unsqueeze(1)).all(-1).any(-1).float().mean() > 0.5


def test_a_long_suite_keeps_the_problems_done_when_a_later_one_fails(tmp_path, monkeypatch):
    calls = []
    real = cli.run_problem

    def run_problem(spec, config, log, pool=None):
        calls.append(spec)
        if len(calls) == 2:
            raise RuntimeError("the machine went away")
        return real(spec, config, log, pool)

    monkeypatch.setattr(cli, "run_problem", run_problem)
    argv = "run --suite quick --contender Sobol --budget 6 --batch-size 3 --seeds 1 --name part --output".split()
    problems = ["--problem", "DTLZ2 (d=6, 2 obj)", "--problem", "BraninCurrin (d=2)"]
    with pytest.raises(RuntimeError, match="went away"):
        cli.main([*argv, str(tmp_path), *problems, "--no-merge-throughput"])
    report = (tmp_path / "part.md").read_text()
    assert "**partial report**: 1 of 2 problems done so far" in report and "DTLZ2 (d=6, 2 obj)" in report
