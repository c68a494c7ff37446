"""The generation evaluator on a tiny randomly initialised causal LM (behaviour that does not need training)."""

import pytest
import torch

from bambo.benchmarks.arithmetic.data import build_tokenizer, parse_answer
from bambo.benchmarks.arithmetic.model import llama
from bambo.errors import ConfigError
from bambo.generation import Anchors, Example, Generated, GenerationEvaluator, normalised


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


EXAMPLES = [Example("<s>1+2=", "3"), Example("<s>10+20+30=", "60"), Example("<s>9=", "9")]


def test_a_model_that_never_stops_costs_max_new_tokens(tokenizer):
    never = llama(tokenizer, layers=1, hidden=16, heads=2, max_positions=64, seed=0)
    with torch.no_grad():
        never.model.norm.weight.zero_()  # every logit 0: greedy writes token 0 (padding), never the end
    evaluator = GenerationEvaluator(tokenizer, EXAMPLES, parse_answer, max_new_tokens=7, batch_size=2)
    generated = evaluator.generate(never)
    assert [g.tokens for g in generated] == [7, 7, 7] and not any(g.stopped for g in generated)
    metrics = evaluator(model=never)
    assert metrics == {"accuracy": 0.0, "tokens": 7.0}


def test_accuracy_counts_exact_matches_of_the_parsed_answer(tokenizer):
    evaluator = GenerationEvaluator(tokenizer, EXAMPLES, parse_answer, max_new_tokens=4)

    generated = [Generated("1+2=3;A3", 9, True), Generated("A61", 4, True), Generated("A9x", 4, False)]
    assert evaluator.score(generated) == {"accuracy": pytest.approx(2 / 3), "tokens": pytest.approx(17 / 3)}
    anchored = GenerationEvaluator(
        tokenizer, EXAMPLES, parse_answer, max_new_tokens=4, anchors=Anchors((0.5, 1.0), (10.0, 4.0))
    )
    metrics = anchored.score(generated)
    assert metrics["f_accuracy"] == pytest.approx((2 / 3 - 0.5) / 0.5)
    assert metrics["f_tokens"] == pytest.approx((17 / 3 - 10.0) / (4.0 - 10.0))
    assert normalised(4.0, (10.0, 4.0)) == 1.0 and normalised(10.0, (10.0, 4.0)) == 0.0


def test_bad_settings_are_named(tokenizer):
    with pytest.raises(ConfigError, match="at least one example"):
        GenerationEvaluator(tokenizer, [], parse_answer, max_new_tokens=4)
    with pytest.raises(ConfigError, match="max_new_tokens and batch_size must be >= 1, got 0"):
        GenerationEvaluator(tokenizer, EXAMPLES, parse_answer, max_new_tokens=0)
    with pytest.raises(ConfigError, match="anchors for tokens must be two different finite values"):
        Anchors((0.0, 1.0), (5.0, 5.0))

    class NoEos:
        eos_token_id = None
        pad_token_id = 0

    with pytest.raises(ConfigError, match="no eos token"):
        GenerationEvaluator(NoEos(), EXAMPLES, parse_answer, max_new_tokens=4)
