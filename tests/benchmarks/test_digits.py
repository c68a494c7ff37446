"""The embedded digits benchmark: determinism, cache, and that merging trades tasks."""

import pytest
import torch

from bambo.benchmarks.digits import DigitsBenchmark, DigitsConfig, load_digits_tasks
from bambo.errors import ConfigError, UnknownNameError

SMALL = DigitsConfig(width=16, depth=2, pretrain_steps=40, finetune_steps=20, tasks=("rotated", "noisy"))


def same_weights(a, b):
    return all(torch.equal(a.base[k], b.base[k]) for k in a.base) and all(
        torch.equal(a.experts[t][k], b.experts[t][k]) for t in a.experts for k in a.base
    )


def test_same_seed_same_weights_and_other_seed_differs():
    a = DigitsBenchmark.build(SMALL, use_cache=False)
    b = DigitsBenchmark.build(SMALL, use_cache=False)
    c = DigitsBenchmark.build(SMALL.model_copy(update={"seed": 1}), use_cache=False)
    assert same_weights(a, b)
    assert not same_weights(a, c)


def test_weights_do_not_depend_on_the_thread_count():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = DigitsBenchmark.build(SMALL, use_cache=False)
        torch.set_num_threads(2)
        two = DigitsBenchmark.build(SMALL, use_cache=False)
    finally:
        torch.set_num_threads(threads)
    assert same_weights(one, two)
    assert torch.get_num_threads() == threads


def test_incomplete_cache_is_rebuilt(tmp_path):
    from safetensors.torch import load_file, save_file

    trained = DigitsBenchmark.build(SMALL, cache_dir=tmp_path)
    path = tmp_path / f"{SMALL.key()}.safetensors"
    flat = load_file(str(path))
    save_file({k: v for k, v in flat.items() if not k.startswith("noisy/")}, str(path))
    assert same_weights(trained, DigitsBenchmark.build(SMALL, cache_dir=tmp_path))


def test_cache_round_trip(tmp_path):
    trained = DigitsBenchmark.build(SMALL, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.safetensors"))
    assert [f.name for f in files] == [f"{SMALL.key()}.safetensors"]
    loaded = DigitsBenchmark.build(SMALL, cache_dir=tmp_path)
    assert same_weights(trained, loaded)
    assert SMALL.key() != SMALL.model_copy(update={"finetune_lr": 0.02}).key()


def test_splits_are_disjoint_and_fixed():
    data = load_digits_tasks(SMALL)
    parts = [set(data.splits[s].tolist()) for s in ("train", "val", "test")]
    assert sum(map(len, parts)) == 1797 and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert torch.equal(data.splits["val"], load_digits_tasks(SMALL).splits["val"])


@pytest.fixture(scope="module")
def default_benchmark(tmp_path_factory):
    return DigitsBenchmark.build(cache_dir=tmp_path_factory.mktemp("digits"))


def test_default_benchmark_has_small_task_vectors_and_real_experts(default_benchmark):
    ratios = default_benchmark.task_vectors().l1_ratio()
    assert all(0.001 < r < 0.10 for r in ratios), ratios
    summary = default_benchmark.summary()
    for task in default_benchmark.tasks:
        assert summary["base"][task] > 0.5, (task, summary["base"])  # the base is fair at every task
        assert summary[task][task] >= summary["base"][task] + 0.03, (task, summary)  # each expert is better at its own


def test_merging_trades_one_task_against_another(default_benchmark):
    problem = default_benchmark.problem(["inverted", "noisy"])
    at = lambda c: problem.evaluate_one(torch.tensor(c, dtype=torch.float64))  # noqa: E731
    inverted_only, noisy_only, both = at([1.0, 0.0]), at([0.0, 1.0]), at([0.5, 0.5])
    assert inverted_only[0] > noisy_only[0] + 0.1 and noisy_only[1] > inverted_only[1] + 0.1
    assert inverted_only[0] > both[0] > noisy_only[0]
    assert noisy_only[1] > both[1] > inverted_only[1]


def test_problem_granularities_and_errors(default_benchmark):
    assert default_benchmark.problem(granularity="layer").dim == 4 * (6 + 2)
    assert default_benchmark.problem(["rotated", "noisy"], granularity="block", blocks=3).dim == 2 * (3 + 2)
    loss = default_benchmark.problem(["rotated"], metric="loss")
    assert loss.objectives[0].direction == "minimize"
    assert torch.allclose(loss.to_user(loss.ref_point), torch.tensor([2.302585], dtype=torch.float64))
    acc = default_benchmark.problem(["rotated", "noisy"])
    assert torch.allclose(acc.ref_point, torch.full((2,), 0.1, dtype=torch.float64))
    with pytest.raises(UnknownNameError, match="valid names"):
        default_benchmark.problem(["rotatd"])
    with pytest.raises(ConfigError, match="width"):
        DigitsConfig(width=0)


def test_the_problem_merges_into_one_live_model(default_benchmark):
    problem = default_benchmark.problem(["inverted", "noisy"], granularity="layer")
    x = torch.rand(problem.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    metrics = problem.metrics(x)
    model = problem.live_model()
    assert model is not None
    pointers = [p.data_ptr() for p in model.parameters()]
    assert metrics == default_benchmark.evaluate(problem.merge(x), tasks=["inverted", "noisy"])
    y = torch.rand(problem.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert problem.metrics(y) == default_benchmark.evaluate(problem.merge(y), tasks=["inverted", "noisy"])
    assert problem.live_model() is model and [p.data_ptr() for p in model.parameters()] == pointers
