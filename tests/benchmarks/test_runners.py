"""Smoke tests of the benchmark runners (the full runs live in benchmarks/)."""

import json
import re
import sys

import numpy as np
import pytest

from benchmarks import merge_throughput, partition


def test_merge_throughput_runs_on_a_small_model(monkeypatch, capsys):
    argv = ["merge_throughput", "--params", "3e5", "--hidden", "32", "--vocab", "100", "--repeats", "1"]
    argv += ["--methods", "task_arithmetic,ties", "--no-write"]
    monkeypatch.setattr(sys, "argv", argv)
    merge_throughput.main()
    out = capsys.readouterr().out
    assert "torch clone (ceiling)" in out and "| ties | block (K=4) | reused |" in out


def test_synthetic_llama_size_and_layout():
    sd = merge_throughput.synthetic_llama(2e6, hidden=32, vocab=100)
    n = sum(v.numel() for v in sd.values())
    assert 1e6 < n < 3e6 and "lm_head.weight" in sd and "model.layers.0.self_attn.q_proj.weight" in sd


def test_dp_speed_reports_every_partitioner():
    speed = partition.dp_speed(L=20, K=4, repeats=2)
    assert set(speed) == {"hybrid", "variance", "balance"}
    assert all(np.isfinite(t.wall) and t.wall > 0 and np.isfinite(t.cpu) and t.cpu >= 0 for t in speed.values())


def test_pmto_synthetic_writes_its_table_and_box_plot(tmp_path):
    from benchmarks import pmto_synthetic

    argv = ["--functions", "sphere", "--shifts", "nonlinear", "--seeds", "1", "--per-task", "6", "--levels", "2"]
    assert pmto_synthetic.main([*argv, "--name", "smoke", "--output", str(tmp_path)]) == 0
    report = (tmp_path / "smoke.md").read_text()
    assert (
        "| sphere/nonlinear (n=4, k=2) | PMTO |" in report
        and "| sphere/nonlinear (n=4, k=2) | single-task BO |" in report
    )
    assert "PMTO beats single-task BO at" in report and "evolved vs random" in report
    assert (tmp_path / "smoke.png").stat().st_size > 0


def test_pmto_merge_reports_every_contender(tmp_path):
    from benchmarks import pmto_merge

    argv = ["--problem", "digits 2 experts (model level)", "--seeds", "1", "--budget", "16", "--preferences", "3"]
    assert pmto_merge.main([*argv, "--fresh-evals", "5", "--name", "smoke", "--output", str(tmp_path)]) == 0
    report = (tmp_path / "smoke.md").read_text()
    for method in pmto_merge.METHODS:
        assert f"| {method} |" in report
    assert "Largest loss of PMTO's instant answer" in report


def test_mergekit_compare_merges_the_same_weights(capsys):
    pytest.importorskip("mergekit.merge", reason="mergekit is not a dependency (pip install -e '.[mergekit]')")
    from benchmarks import mergekit_compare

    assert mergekit_compare.main(["--params", "3e6", "--repeats", "1", "--no-write"]) == 0
    out = capsys.readouterr().out
    diff = float(re.search(r"max \|mergekit - bambo\| over all merged tensors: (\S+)", out).group(1))
    assert diff < 1e-5 and "| mergekit run_merge (disk to disk) |" in out


def test_strategies_synthetic_reports_each_configuration_measured_in_the_run(tmp_path, monkeypatch):
    from benchmarks import strategies_synthetic as ss

    original = ss.timing_run
    monkeypatch.setattr(ss, "timing_run", lambda m, budget, seed=0: original(m, 12, seed))
    monkeypatch.setattr(ss, "PROBLEMS", {"BraninCurrin (d=2)": ("branin_currin", 2, 2)})
    kept = (ss.DEFAULT, "Sobol", "NSGA-II (pop 8)")  # one BAMBO configuration keeps the test short
    monkeypatch.setattr(ss, "STRATEGIES", {k: v for k, v in ss.STRATEGIES.items() if k in kept})
    monkeypatch.setattr(sys, "argv", ["strategies_synthetic", "--seeds", "1", "--budget", "12", "--threads", "1"])
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--output", str(tmp_path)])
    ss.main()
    report = (tmp_path / "strategies_synthetic.md").read_text()
    seconds = {}
    for label in ss.STRATEGIES:
        row = next(line for line in report.splitlines() if line.startswith(f"| {label} |"))
        seconds[label] = [float(v) for v in row.split("|")[-2].split("/")]  # run wall / CPU s
    assert all(wall >= 0 and cpu >= 0 for wall, cpu in seconds.values()) and seconds[ss.DEFAULT][0] > 0
    assert "Scoring reference point (maximisation form): [-18.0, -6.0]" in report and "This run: wall" in report


def test_gpu_check_without_a_device_says_why_and_measures_nothing(tmp_path, capsys, monkeypatch):
    import torch

    from benchmarks import gpu_check

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "r.md"), "--cache", str(tmp_path)]) == 0
    assert "no CUDA device" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_gpu_check_runs_its_steps_on_the_cpu(tmp_path):
    """The device check's own steps (merge into a live model, generation), on a tiny model on the CPU."""
    from benchmarks import gpu_check

    out = tmp_path / "r.md"
    args = ["--device", "cpu", "--params", "2e6", "--experts", "2", "--repeats", "1", "--new-tokens", "2"]
    assert gpu_check.main([*args, "--cache", str(tmp_path / "models"), "--out", str(out)]) == 0
    text = out.read_text()
    assert "- command: `python -m benchmarks.gpu_check --params 2e+06 --experts 2" in text
    assert text.count("| task arithmetic") == 3 and "tokens/s" in text


def test_large_merge_reports_the_bound_the_engine_and_the_limits(tmp_path):
    from benchmarks import large_merge

    out = tmp_path / "r.md"
    args = ["--params", "2e6", "--experts", "2", "--repeats", "1", "--methods", "task_arithmetic"]
    assert large_merge.main([*args, "--cache", str(tmp_path / "models"), "--out", str(out)]) == 0
    text = out.read_text()
    assert "- command: `python -m benchmarks.large_merge --params 2e+06 --experts 2 --repeats 1" in text
    assert "| read+write (bound) |" in text and "| read+write, 2 threads |" in text
    assert text.count("| streaming task_arithmetic |") == 2
    assert re.search(r"runs at [0-9.]+ x the read\+write bound: it (meets|misses) the 0.5 target", text)
    assert re.search(r"streaming peak RSS [0-9.]+ GB against the limit [0-9.]+ GB", text)


def test_optimizer_cost_times_both_batches_of_every_setting(tmp_path):
    from benchmarks import optimizer_cost

    args = ["--dim", "3", "--n", "12", "--objectives", "2", "--seeds", "1", "--no-ax", "--name", "smoke"]
    out = optimizer_cost.main([*args, "--output", str(tmp_path)])
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| 2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    first, ax_first, following = cells[1], cells[2], cells[3]
    assert ax_first == "not run" and all(float(v) > 0 for v in [*first.split(" / "), *following.split(" / ")])
    assert "next batch fit" in text and "--no-ax" in text


def test_arithmetic_table2_reports_bambo_map_and_the_baselines(tmp_path):
    from bambo.benchmarks.arithmetic import ArithmeticConfig
    from benchmarks import arithmetic

    small = ArithmeticConfig(
        min_operands=2,
        max_operands=2,
        digits=1,
        layers=2,
        hidden=32,
        base_steps=60,
        base_lr=3e-3,
        expert_steps=30,
        batch_size=16,
        n_val=16,
        n_test=16,
    )
    out = arithmetic.main(
        ["--seeds", "1", "--budget", "12", "--threads", "1", "--output", str(tmp_path)], small, tmp_path / "cache"
    )
    report = out.read_text()
    for row in ("| thinking |", "| TIES (0.1..0.9 interpolation) | 9 |", "| TA (9 x 9 grid) | 81 |", "| BAMBO | 0 |"):
        assert row in report, row
    map_row = next(line for line in report.splitlines() if line.startswith("| MAP | 0 |"))
    r2 = [float(v) for v in map_row.rsplit("|", 2)[1].split(",")]
    assert len(r2) == 2 and all(v <= 1.0 for v in r2)
    assert (tmp_path / "arithmetic.png").stat().st_size > 0


def test_dataflow_cost_reports_each_model_based_batch(tmp_path):
    from benchmarks import dataflow_cost

    out = dataflow_cost.main(["--layers", "2", "--repeats", "1", "--budget", "12", "--output", str(tmp_path)])
    text = out.read_text()
    assert "slots=4, dim=7" in text
    rows = [line for line in text.splitlines() if line.startswith("| 8 |")]
    assert len(rows) == 1  # one batch after the 8-point warm start, fitted on 8 points
    assert "Slowest batch:" in text


def test_dataflow_benchmark_scores_every_contender_in_one_objective_space(tmp_path):
    from benchmarks import dataflow

    cheap = [c for c in dataflow.DFS_CONTENDERS if "mixed BO" not in c]
    out = dataflow.main(
        ["--benchmarks", "digits", "--seeds", "1", "--budget", "24", "--contenders", *cheap, "--output", str(tmp_path)]
    )
    text = out.read_text()
    for label in cheap:
        assert f"| {label} (1 seeds) |" in text
    rows = json.loads((tmp_path / "dataflow.json").read_text())
    assert len(rows) == len(cheap) and all(len(r["Y"]) == 24 and len(r["Y"][0]) == 3 for r in rows)
    assert all(r["hv"]["24"] > 0 for r in rows) and (tmp_path / "dataflow.png").exists()


def test_multifidelity_benchmark_measures_cost_to_the_full_fidelity_target(tmp_path):
    from benchmarks import multifidelity

    labels = [multifidelity.FULL, *list(multifidelity.HALVING)[:1]]
    out = multifidelity.main(
        ["--benchmarks", "noisy", "--seeds", "2", "--budget", "8", "--contenders", *labels, "--output", str(tmp_path)]
    )
    text = out.read_text()
    assert "Target hypervolume" in text and all(f"| {label} (2 seeds) |" in text for label in labels)
    rows = json.loads((tmp_path / "multifidelity.json").read_text())
    full = [r for r in rows if r["contender"] == multifidelity.FULL]
    halved = [r for r in rows if r["contender"] != multifidelity.FULL]
    assert all(r["costs"] == [float(i + 1) for i in range(8)] and r["low_evaluations"] == 0 for r in full)
    assert all(r["low_evaluations"] > 0 and r["costs"] == sorted(r["costs"]) for r in halved)
    target, reached = multifidelity.summary(rows, "noisy", 8)
    assert target == pytest.approx(sum(r["hv"][-1] for r in full) / 2)  # the median of two seeds
    assert reached[multifidelity.FULL]["median_cost"] <= 8 and (tmp_path / "multifidelity.png").exists()
