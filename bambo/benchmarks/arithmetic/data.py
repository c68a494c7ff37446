"""Synthetic multi-operand addition: problems, the two answer styles, the character tokenizer.

A problem is ``k`` numbers of ``digits`` digits each; the prompt is ``"<s>12+34+56="``.
Two answer styles trade accuracy against length by construction:

- **thinking** writes the running sums, one addition of two numbers per step, before the
  answer: ``"12+34=46;46+56=102;A102</s>"``. Each step is a two-number addition, which a
  small model learns to do reliably;
- **direct** answers at once: ``"A102</s>"``. It must add all ``k`` numbers in one step,
  which a small model does less reliably (that is what makes the trade-off real).

The answer is the digits after the last ``"A"``; the end of the answer is the
tokenizer's end-of-sequence token. The tokenizer is character level (one token per
digit or symbol), a :class:`transformers.PreTrainedTokenizerFast` built locally, so it
is saved beside the model and both reload with plain transformers.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Style = Literal["thinking", "direct"]
STYLES: tuple[Style, ...] = ("thinking", "direct")
Mix = Literal["thinking", "direct", "graded"]
SYMBOLS = "0123456789+=;A"
PAD, BOS, EOS = "<pad>", "<s>", "</s>"
ANSWER_MARK = "A"


@dataclass(frozen=True)
class Addition:
    """One problem: its operands and their sum."""

    operands: tuple[int, ...]

    @property
    def total(self) -> int:
        """The correct answer."""
        return sum(self.operands)

    def prompt(self) -> str:
        """``"<s>12+34+56="``."""
        return BOS + "+".join(map(str, self.operands)) + "="

    def answer(self, style: Style) -> str:
        """The completion in one style, end-of-sequence token included."""
        if style == "direct":
            return f"{ANSWER_MARK}{self.total}{EOS}"
        steps, running = [], self.operands[0]
        for x in self.operands[1:]:
            steps.append(f"{running}+{x}={running + x}")
            running += x
        return ";".join(steps) + f";{ANSWER_MARK}{self.total}{EOS}"


def sample_additions(
    n: int, operands: int | tuple[int, int], digits: int, seed: int, exclude: frozenset = frozenset()
) -> list[Addition]:
    """``n`` distinct problems, seeded, none of them in ``exclude``.

    Args:
        n: How many.
        operands: Numbers per problem, or ``(fewest, most)``: each problem draws its count
            uniformly (mixed lengths make a merge think on some problems and answer others
            at once, so its mean output length lies between the experts').
        digits: Digits per number (leading digit non-zero for more than one digit).
        seed: Seed of the draw.
        exclude: Problems to avoid (another split's).

    Raises:
        ValueError: Fewer than ``n`` distinct problems exist outside ``exclude``.
    """
    fewest, most = (operands, operands) if isinstance(operands, int) else operands
    rng = random.Random(seed)
    low = 10 ** (digits - 1) if digits > 1 else 0
    space = sum((10**digits - low) ** k for k in range(fewest, most + 1))
    if n > space - len(exclude):
        raise ValueError(f"asked for {n} distinct problems, but only {space - len(exclude)} exist")
    seen: set[Addition] = set()
    out: list[Addition] = []
    while len(out) < n:
        k = rng.randint(fewest, most)
        problem = Addition(tuple(rng.randrange(low, 10**digits) for _ in range(k)))
        if problem not in seen and problem not in exclude:
            seen.add(problem)
            out.append(problem)
    return out


def parse_answer(text: str) -> str | None:
    """The digits after the last answer mark of a generated text (``None`` without one)."""
    if ANSWER_MARK not in text:
        return None
    tail = text.rsplit(ANSWER_MARK, 1)[1]
    digits = ""
    for ch in tail:
        if not ch.isdigit():
            break
        digits += ch
    return digits or None


def build_tokenizer():  # noqa: ANN201 - transformers' PreTrainedTokenizerFast, imported lazily
    """The character-level tokenizer: special tokens first, then one token per symbol.

    Returns:
        A ``PreTrainedTokenizerFast`` with ``<pad>``, ``<s>``, ``</s>`` as pad, BOS and EOS,
        padding on the left (generation appends on the right).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([PAD, BOS, EOS, *SYMBOLS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token=None))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("<[a-z/]+>|."), behavior="isolated")
    core.decoder = decoders.Fuse()  # characters back to text without spaces between them
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD, padding_side="left"
    )


def think_probability(count: int, operands: tuple[int, int]) -> float:
    """How often the base's training data thinks on a problem of ``count`` numbers.

    Linear in the count, from ``0.5 / n`` for the fewest numbers to ``1 - 0.5 / n`` for the
    most (``n`` counts, so every count is seen in both styles). A base that learned to
    think more often the longer the problem carries that rule into its merges: adding
    more of the thinking task vector moves the switch from answering at once to thinking
    one operand count at a time, so merges answer short problems directly and think on
    long ones, and lie between the experts on both objectives (with a rule that ignores
    the problem, a merge switches style on every problem at once and lands on one expert
    or the other: the recipes tried and what each gave are in ``docs/benchmarks.md``).

    Args:
        count: Numbers in the problem.
        operands: ``(fewest, most)`` numbers of the problems trained on.
    """
    fewest, most = operands
    return (count - fewest + 0.5) / (most - fewest + 1)


def training_texts(
    problems: Sequence[Addition], mix: Mix, operands: tuple[int, int], rng: random.Random
) -> list[tuple[str, str]]:
    """``(prompt, completion)`` pairs.

    Args:
        problems: The problems.
        mix: One style for all, or ``"graded"``: each problem thinks with
            :func:`think_probability` of its operand count (the base's mix).
        operands: ``(fewest, most)`` numbers per problem.
        rng: Draws the styles of a graded mix.
    """
    pairs = []
    for p in problems:
        style: Style = mix if mix != "graded" else (
            "thinking" if rng.random() < think_probability(len(p.operands), operands) else "direct"
        )  # fmt: skip
        pairs.append((p.prompt(), p.answer(style)))
    return pairs
