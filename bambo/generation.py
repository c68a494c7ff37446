"""Generative objectives for causal language models: accuracy against output tokens.

BAMBO's setting (BAMBO Sec. 4.1): a "thinking" expert answers accurately after long
working, an "instruct" expert answers at once; a merge trades *ability* (accuracy of the
parsed answer) against *efficiency* (output tokens, fewer is better).
:class:`GenerationEvaluator` measures both on a fixed list of prompts with batched greedy
``generate`` on a live model (the model a merge problem writes each candidate into,
``Merger.merge(c, into=model)``), stopping at the end-of-sequence token. Optionally it
also returns BAMBO's normalised objectives (Eq. 2): each metric placed between the
opposite expert (0) and its own expert (1), for the two-expert case the paper uses
(Sec. 4.1: "the Thinking model serves as the base for efficiency" and the other way round).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bambo.errors import ConfigError
from bambo.fidelity import nested_subset

__all__ = ["Anchors", "Example", "GenerationEvaluator", "Generated", "normalised"]


@dataclass(frozen=True)
class Example:
    """A prompt and its correct answer (compared with the parsed generation)."""

    prompt: str
    answer: str


@dataclass(frozen=True)
class Generated:
    """What the model wrote for one prompt.

    Attributes:
        text: The generated text, special tokens removed.
        tokens: Generated tokens, the end-of-sequence token included; ``max_new_tokens``
            when the model never stopped.
        stopped: Whether it wrote the end-of-sequence token.
    """

    text: str
    tokens: int
    stopped: bool


@dataclass(frozen=True)
class Anchors:
    """The two experts' metrics that BAMBO's Eq. 2 normalises between.

    Attributes:
        accuracy: ``(opposite expert, own expert)``: the efficient expert's accuracy, then
            the accurate expert's.
        tokens: ``(opposite expert, own expert)``: the accurate expert's mean tokens, then
            the efficient expert's.
    """

    accuracy: tuple[float, float]
    tokens: tuple[float, float]

    def __post_init__(self) -> None:
        for name, (low, high) in (("accuracy", self.accuracy), ("tokens", self.tokens)):
            if not (math.isfinite(low) and math.isfinite(high)) or low == high:
                raise ConfigError(
                    f"normalisation anchors for {name} must be two different finite values, got {low}, {high}"
                )


def normalised(value: float, anchors: tuple[float, float]) -> float:
    """BAMBO Eq. 2 for one metric: ``(value - opposite) / (own - opposite)``."""
    low, high = anchors
    return (value - low) / (high - low)


class GenerationEvaluator:
    """Accuracy and mean output tokens of greedy generation on a fixed list of prompts.

    Args:
        tokenizer: The model's tokenizer; prompts are padded on the left in batches.
        examples: Prompts and answers (a validation split for the search; keep a test
            split apart for reporting).
        parse: Extracts the answer from a generated text (``None``: no answer, wrong).
        max_new_tokens: Generation stops there if the model has not stopped.
        batch_size: Prompts per ``generate`` call.
        anchors: Also return BAMBO's normalised objectives ``f_accuracy`` and ``f_tokens``
            (Eq. 2), each between the opposite expert (0) and its own expert (1).

    Raises:
        ConfigError: No examples, a tokenizer without an end-of-sequence or padding token,
            or sizes below 1.
    """

    def __init__(
        self,
        tokenizer: object,
        examples: Sequence[Example],
        parse: Callable[[str], str | None],
        max_new_tokens: int,
        batch_size: int = 64,
        anchors: Anchors | None = None,
        seed: int = 0,
    ) -> None:
        if not examples:
            raise ConfigError("a generation evaluator needs at least one example, got none")
        if max_new_tokens < 1 or batch_size < 1:
            raise ConfigError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens} and {batch_size}")
        for attribute in ("eos_token_id", "pad_token_id"):
            if getattr(tokenizer, attribute, None) is None:
                name = attribute.removesuffix("_token_id")
                raise ConfigError(f"the tokenizer has no {name} token; generation needs one")
        self.tokenizer = tokenizer
        self.examples = list(examples)
        self.parse = parse
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.anchors = anchors
        self.seed = seed

    def subset(self, fidelity: float = 1.0) -> list[Example]:
        """The examples scored at ``fidelity``: a nested, seeded subset (:func:`bambo.fidelity.nested_subset`)."""
        return [self.examples[i] for i in nested_subset(len(self.examples), fidelity, self.seed).tolist()]

    @torch.no_grad()
    def generate(self, model: nn.Module, examples: Sequence[Example] | None = None) -> list[Generated]:
        """Greedy generations of ``model`` for every prompt (default: all examples), in order."""
        examples = self.examples if examples is None else list(examples)
        tokenizer = self.tokenizer
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        was_training = model.training
        model.eval()
        out: list[Generated] = []
        try:
            for start in range(0, len(examples), self.batch_size):
                prompts = [e.prompt for e in examples[start : start + self.batch_size]]
                encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
                device = next(model.parameters()).device
                encoded = {k: v.to(device) for k, v in encoded.items()}
                ids = model.generate(
                    **encoded,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                )
                out += [self._one(row) for row in ids[:, encoded["input_ids"].shape[1] :].cpu()]
        finally:
            tokenizer.padding_side = side
            model.train(was_training)
        return out

    def _one(self, row: Tensor) -> Generated:
        ids = row.tolist()
        eos = self.tokenizer.eos_token_id
        stopped = eos in ids
        n = ids.index(eos) + 1 if stopped else len(ids)
        return Generated(self.tokenizer.decode(ids[:n], skip_special_tokens=True), n, stopped)

    def score(self, generated: Sequence[Generated], examples: Sequence[Example] | None = None) -> dict[str, float]:
        """``accuracy`` (exact match of the parsed answer), ``tokens`` (mean generated tokens) and,
        with anchors, ``f_accuracy`` and ``f_tokens`` (BAMBO Eq. 2), over ``examples`` (default all)."""
        examples = self.examples if examples is None else list(examples)
        correct = sum(self.parse(g.text) == e.answer for g, e in zip(generated, examples, strict=True))
        metrics = {
            "accuracy": correct / len(examples),
            "tokens": sum(g.tokens for g in generated) / len(generated),
        }
        if self.anchors is not None:
            metrics["f_accuracy"] = normalised(metrics["accuracy"], self.anchors.accuracy)
            metrics["f_tokens"] = normalised(metrics["tokens"], self.anchors.tokens)
        return metrics

    def __call__(
        self, state_dict: Mapping[str, Tensor] | None = None, model: nn.Module | None = None, fidelity: float = 1.0
    ) -> dict[str, float]:
        """The metrics of a live ``model`` (run as it is), or of ``model`` loaded with ``state_dict``.

        Args:
            state_dict: Weights to load into ``model`` (``None``: run it as it is).
            model: The model.
            fidelity: Share of the examples scored, a nested seeded subset (:meth:`subset`).

        Raises:
            ConfigError: No model given (a state dict alone has no architecture).
        """
        if model is None:
            raise ConfigError("the generation evaluator needs the live model (model=...), got only a state dict")
        if state_dict is not None and model is not None and not _holds(model, state_dict):
            model.load_state_dict(dict(state_dict), strict=True)
        examples = self.subset(fidelity)
        return self.score(self.generate(model, examples), examples)


def _holds(model: nn.Module, state_dict: Mapping[str, Tensor]) -> bool:
    """Whether the model's tensors already are the state dict's (a merge written into it)."""
    own = model.state_dict()
    return all(k in own and own[k].data_ptr() == v.data_ptr() for k, v in state_dict.items())
