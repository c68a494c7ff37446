"""Smoke test of the benchmark suite (``python -m benchmarks run``) on a tiny configuration."""

import math
import re

import pytest
import torch

from benchmarks import __main__ as cli
from benchmarks.contenders import CONTENDERS, run_session
from benchmarks.suite import PROBLEMS, SUITES, first_reaching, hv_history, merge_reference

pytest.importorskip("optuna")


def test_tiny_suite_writes_a_report_with_ratios(tmp_path, capsys):
    contenders = [arg for label in ("MAP", "Sobol", "Optuna TPE", "Ax (default MOO)") for arg in ("--contender", label)]
    options = "--budget 10 --batch-size 3 --seeds 2 --name smoke --threads 1".split()
    argv = ["run", "--suite", "quick", "--problem", "DTLZ2 (d=6, 2 obj)", *contenders, *options, "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    report = (tmp_path / "smoke.md").read_text()
    assert "# Benchmark suite `smoke`" in report and "- versions: torch" in report and "optuna" in report
    assert "**Evaluations-to-95%-HV ratio**" in report and "Optuna TPE" in report
    overhead = re.search(r"\*\*Optimizer-overhead ratio against Ax's Client\*\*: .* = (\S+) \(lower", report)
    assert overhead and math.isfinite(float(overhead.group(1)))
    assert (tmp_path / "smoke_hv.png").stat().st_size > 0 and (tmp_path / "smoke_overhead.png").exists()
    rows = [row for row in report.splitlines() if row.startswith("| MAP") or row.startswith("| Sobol")]
    rows += [row for row in report.splitlines() if row.startswith("| Optuna TPE") or row.startswith("| Ax")]
    assert len(rows) == 4
    for row in rows:
        cells = row.split("|")[2:-1]
        numbers = [
            float(v) for cell in (cells[0], cells[3], cells[4]) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", cell)
        ]
        assert len(numbers) == 9 and all(math.isfinite(v) for v in numbers), row


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
    assert set(SUITES["full"].contenders) == set(CONTENDERS) and len(SUITES["full"].problems) == len(PROBLEMS)


def test_merge_reference_pools_grid_nsga2_and_contenders():
    spec = PROBLEMS["digits 2 experts (model level)"]
    problem = spec.build()
    pooled = problem.evaluate(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64))
    reference = merge_reference(spec, problem, evaluations=40, pooled=pooled)
    assert "51 x 51 = 2601-point model-level grid" in reference.description and "40-evaluation" in reference.description
    assert (reference.ref_point >= problem.ref_point).all()
    assert reference.hv > 0 and reference.hv >= max(hv_history(pooled, reference.ref_point))
