"""The arithmetic LM benchmark on its small test configuration (trains in well under a minute)."""

import random

import pytest
import torch

from bambo.benchmarks.arithmetic import ArithmeticBenchmark, ArithmeticConfig
from bambo.benchmarks.arithmetic.benchmark import load_model, load_tokenizer
from bambo.benchmarks.arithmetic.data import (
    Addition,
    build_tokenizer,
    parse_answer,
    sample_additions,
    think_probability,
    training_texts,
)
from bambo.benchmarks.arithmetic.model import completion_loss, encode_batch, llama
from bambo.errors import ConfigError

SMALL = ArithmeticConfig(
    min_operands=2,
    max_operands=3,
    digits=1,
    layers=2,
    hidden=64,
    base_steps=200,
    base_lr=3e-3,
    expert_steps=100,
    batch_size=32,
    n_val=40,
    n_test=40,
)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return ArithmeticBenchmark.build(SMALL, cache_dir=tmp_path_factory.mktemp("arithmetic"))


def test_answer_styles_and_parsing():
    problem = Addition((12, 34, 56))
    assert problem.prompt() == "<s>12+34+56="
    assert problem.answer("thinking") == "12+34=46;46+56=102;A102</s>"
    assert problem.answer("direct") == "A102</s>"
    assert parse_answer("12+34=46;46+56=102;A102") == "102" and parse_answer("A1x") == "1"
    assert parse_answer("12+34=46") is None and parse_answer("A") is None


def test_the_base_mix_thinks_more_often_the_more_numbers():
    assert [think_probability(k, (2, 5)) for k in (2, 3, 4, 5)] == [0.125, 0.375, 0.625, 0.875]
    assert think_probability(3, (3, 3)) == 0.5
    problems = sample_additions(4000, (2, 5), 2, seed=0)
    pairs = training_texts(problems, "graded", (2, 5), random.Random(0))
    assert pairs == training_texts(problems, "graded", (2, 5), random.Random(0))  # seeded
    for k in (2, 3, 4, 5):
        styles = [c.startswith("A") for p, (_, c) in zip(problems, pairs, strict=True) if len(p.operands) == k]
        assert abs(1 - sum(styles) / len(styles) - think_probability(k, (2, 5))) < 0.05, k  # thinking share
    direct = training_texts(problems, "direct", (2, 5), random.Random(1))
    assert all(c == p.answer("direct") for p, (_, c) in zip(problems, direct, strict=True))


def test_micro_batches_give_the_whole_batch_mean_loss_and_gradient():
    tokenizer = build_tokenizer()
    model = llama(tokenizer, layers=1, hidden=32, heads=2, max_positions=64, seed=0)
    problems = sample_additions(12, (2, 4), 2, seed=3)
    pairs = sorted(training_texts(problems, "graded", (2, 4), random.Random(0)), key=lambda p: len(p[0] + p[1]))
    whole = model(**dict(zip(("input_ids", "attention_mask", "labels"), encode_batch(tokenizer, pairs), strict=True)))
    whole.loss.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    chunks = [encode_batch(tokenizer, pairs[i : i + 5]) for i in (0, 5, 10)]
    assert chunks[0][0].shape[1] < chunks[2][0].shape[1]  # sorted: the short ones are padded less
    targets = sum(int((labels != -100).sum()) for *_, labels in chunks)
    total = sum(completion_loss(model, *chunk) / targets for chunk in chunks)
    total.backward()
    assert torch.allclose(total, whole.loss, atol=1e-6)
    for got, want in zip((p.grad for p in model.parameters()), expected, strict=True):
        assert torch.allclose(got, want, atol=1e-6)


def test_tokenizer_is_character_level_and_round_trips(tmp_path):
    tokenizer = build_tokenizer()
    text = "<s>12+34=46;A46</s>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 2 + len("12+34=46;A46")
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "12+34=46;A46"
    tokenizer.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again(text, add_special_tokens=False)["input_ids"] == ids


def test_splits_are_seeded_distinct_and_disjoint():
    a = sample_additions(100, 3, 2, seed=1)
    assert a == sample_additions(100, 3, 2, seed=1) and len(set(a)) == 100
    b = sample_additions(100, 3, 2, seed=2, exclude=frozenset(a))
    assert not set(a) & set(b)
    assert all(10 <= x < 100 for p in a for x in p.operands)
    with pytest.raises(ValueError, match="only 100 exist"):
        sample_additions(101, 2, 1, seed=0)
    mixed = sample_additions(300, (2, 4), 1, seed=3)
    assert {len(p.operands) for p in mixed} == {2, 3, 4}
    with pytest.raises(ValueError, match="min_operands 4 is more than max_operands 3"):
        ArithmeticConfig(min_operands=4, max_operands=3)


def test_build_caches_models_that_reload_with_plain_transformers(bench, tmp_path_factory):
    folder = next(p for p in tmp_path_factory.getbasetemp().rglob(SMALL.key()) if p.is_dir())
    again = ArithmeticBenchmark.build(SMALL, cache_dir=folder.parent)  # from the cache
    for name in ("base", "thinking", "direct"):
        for key, value in bench.models[name].state_dict().items():
            assert torch.equal(value, again.models[name].state_dict()[key]), (name, key)
    model, tokenizer = load_model(folder / "thinking"), load_tokenizer(folder / "thinking")
    ids = tokenizer(["<s>12+34="], return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, bench.models["thinking"](ids).logits)
    assert [step for step, _ in bench.curves["base"]][-1] == SMALL.base_steps
    assert bench.curves["base"][-1][1] < bench.curves["base"][0][1]  # the loss went down


def test_experts_learned_their_styles(bench):
    summary = bench.summary("val")
    # the thinking expert writes the working (about 3x the characters of the direct answer)
    assert summary["thinking"]["tokens"] > 2.0 * summary["direct"]["tokens"]
    assert summary["direct"]["tokens"] <= 6.0  # "A" + at most 3 digits + end of sequence, nearly always


def test_batched_generation_equals_one_prompt_at_a_time(bench):
    evaluator = bench.evaluator("val")
    model = bench.models["thinking"]
    batched = evaluator.generate(model)
    evaluator.batch_size = 1  # no padding at all
    single = evaluator.generate(model)
    assert batched == single
    generated = batched[0]
    ids = bench.tokenizer(generated.text, add_special_tokens=False)["input_ids"]
    assert generated.tokens == len(ids) + int(generated.stopped)  # the end-of-sequence token counts


def test_merge_problem_scores_the_live_merge_as_the_merged_state_dict(bench):
    problem = bench.problem()
    x = torch.tensor([0.6, 0.4], dtype=torch.float64)
    live = problem.metrics(x)
    model = bench.new_model()
    model.load_state_dict(problem.merge(x))
    assert live == bench.evaluate(model, "val")
    assert set(live) == {"accuracy", "tokens"} and problem.objectives[1].direction == "minimize"
    normalised = bench.problem(normalise=True)
    f = normalised.metrics(torch.tensor([1.0, 0.0], dtype=torch.float64))  # the thinking expert itself
    assert f["f_accuracy"] == pytest.approx(1.0) and f["f_tokens"] == pytest.approx(0.0)


def test_a_model_folder_without_a_tokenizer_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=f"{tmp_path} has no tokenizer"):
        load_tokenizer(tmp_path)


def test_evaluator_needs_the_live_model(bench):
    with pytest.raises(ConfigError, match="needs the live model"):
        bench.evaluator("val")(bench.base)
    with pytest.raises(ConfigError, match="unknown split 'train'"):
        bench.evaluator("train")
