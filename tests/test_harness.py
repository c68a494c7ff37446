"""lm-evaluation-harness as an evaluator: the same accuracy as bambo's generation evaluator, named errors."""

import pytest
import torch

from bambo.errors import ConfigError
from bambo.harness import HarnessEvaluator, harness_available

pytestmark = pytest.mark.skipif(
    not harness_available(), reason="lm-eval extra not installed (pip install 'bambo[lm-eval]' -c constraints.txt)"
)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from bambo.benchmarks.arithmetic import ArithmeticBenchmark, ArithmeticConfig

    small = ArithmeticConfig(
        min_operands=2, max_operands=3, digits=1, layers=2, hidden=48, base_steps=150, expert_steps=80, base_lr=3e-3,
        batch_size=32, n_val=24, n_test=24,
    )  # fmt: skip
    return ArithmeticBenchmark.build(small, cache_dir=tmp_path_factory.mktemp("arithmetic"))


@pytest.fixture(scope="module")
def task(bench, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tasks")
    return folder, bench.write_harness_task(folder, "val")


def test_harness_and_generation_evaluator_agree_on_the_same_merged_model(bench, task):
    folder, name = task
    harness = HarnessEvaluator(bench.tokenizer, [name], include_path=folder, batch_size=8)
    assert harness.metrics == [f"{name}/exact_match,none", f"{name}/tokens"]
    problem = bench.problem()
    for x in ([1.0, 0.0], [0.6, 0.5]):
        model = bench.new_model()
        problem.merger.merge(problem.space.to_coefficients(torch.tensor(x, dtype=torch.float64)), into=model)
        ours = bench.evaluate(model, "val")
        theirs = harness(model=model)
        assert theirs[f"{name}/exact_match,none"] == pytest.approx(ours["accuracy"]), x
        assert theirs[f"{name}/tokens"] == pytest.approx(ours["tokens"]), x


def test_unknown_task_and_metric_are_named_before_any_evaluation(bench, task):
    folder, name = task
    with pytest.raises(ConfigError, match=r"lm-eval knows no task 'bambo_arithmetic_tset'.*bambo_arithmetic_val"):
        HarnessEvaluator(bench.tokenizer, ["bambo_arithmetic_tset"], include_path=folder)
    with pytest.raises(ConfigError, match=rf"do not produce metric '{name}/acc,none'; they produce: {name}/exact"):
        HarnessEvaluator(bench.tokenizer, [name], metrics=[f"{name}/acc,none"], include_path=folder)
