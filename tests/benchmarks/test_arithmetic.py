"""The arithmetic LM benchmark on its small test configuration (trains in well under a minute)."""

import pytest
import torch

from bambo.benchmarks.arithmetic import ArithmeticBenchmark, ArithmeticConfig
from bambo.benchmarks.arithmetic.benchmark import load_model, load_tokenizer
from bambo.benchmarks.arithmetic.data import Addition, build_tokenizer, parse_answer, sample_additions
from bambo.errors import ConfigError

SMALL = ArithmeticConfig(
    min_operands=2,
    max_operands=2,
    digits=2,
    layers=2,
    hidden=64,
    base_steps=200,
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
