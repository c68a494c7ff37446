"""The tiny causal LM: a Llama-layout ``LlamaForCausalLM`` and its seeded CPU training loop.

The layout is Hugging Face's Llama (RMSNorm, rotary positions, SwiGLU), the family the
papers merge, at a size that trains on one CPU thread in minutes. Training is next-token
cross-entropy on the completion only (the prompt's tokens are masked), AdamW with a
linear warm-up and decay, gradient clipping at 1; every batch is drawn from a seeded
generator, so the same settings give the same weights on one thread.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from bambo.benchmarks.arithmetic.data import Addition, Mix, sample_additions, training_texts

__all__ = ["completion_loss", "encode_batch", "llama", "train"]


def llama(tokenizer: object, layers: int, hidden: int, heads: int, max_positions: int, seed: int):  # noqa: ANN201
    """A freshly initialised ``LlamaForCausalLM`` sized for ``tokenizer`` (tied input/output embeddings).

    Args:
        tokenizer: The character tokenizer (:func:`~bambo.benchmarks.arithmetic.data.build_tokenizer`).
        layers: Decoder layers.
        hidden: Hidden size (the MLP is 3x wider).
        heads: Attention heads (as many key/value heads).
        max_positions: Longest sequence, prompt and completion.
        seed: Seeds the initialisation.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=3 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


def encode_batch(tokenizer: object, pairs: Sequence[tuple[str, str]]) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 on the prompt and padding).

    Args:
        tokenizer: The character tokenizer.
        pairs: ``(prompt, completion)`` texts.

    Returns:
        Three tensors of shape ``(len(pairs), longest)``.
    """
    prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p, _ in pairs]
    completions = [tokenizer(c, add_special_tokens=False)["input_ids"] for _, c in pairs]
    length = max(len(p) + len(c) for p, c in zip(prompts, completions, strict=True))
    ids = torch.full((len(pairs), length), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(pairs), length), -100, dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        ids[i, : len(p) + len(c)] = torch.tensor(p + c)
        labels[i, len(p) : len(p) + len(c)] = torch.tensor(c)
    return ids, (ids != tokenizer.pad_token_id).long(), labels


def completion_loss(model: torch.nn.Module, ids: Tensor, mask: Tensor, labels: Tensor) -> Tensor:
    """Summed next-token cross-entropy over the completions' tokens.

    Args:
        model: The causal LM.
        ids: ``input_ids``, shape ``(batch, length)``.
        mask: ``attention_mask``, the same shape.
        labels: The targets, -100 where masked (prompt and padding), the same shape.

    Returns:
        A scalar: the sum over every completion token, the end-of-sequence token included
        (:func:`encode_batch` makes the three tensors).
    """
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
    )


def train(
    model: torch.nn.Module,
    tokenizer: object,
    mix: Mix,
    steps: int,
    operands: int | tuple[int, int],
    digits: int,
    lr: float,
    seed: int,
    batch_size: int = 64,
    micro_batch: int = 16,
    exclude: frozenset[Addition] = frozenset(),
    log_every: int = 100,
    progress: Callable[[str], None] | None = None,
) -> list[tuple[int, float]]:
    """Train ``model`` in place on fresh problems in the given answer styles.

    Args:
        model: The causal LM (trained in place).
        tokenizer: The character tokenizer.
        mix: The answer style, or ``"graded"`` (the base's mix: see
            :func:`~bambo.benchmarks.arithmetic.data.think_probability`).
        steps: Optimiser steps.
        operands: Numbers per problem, or ``(fewest, most)``.
        digits: Digits per number.
        lr: Peak learning rate (linear warm-up over 50 steps, then linear decay to 10%).
        seed: Seeds the problems and the styles of a graded mix.
        batch_size: Problems per step, of mixed operand counts.
        micro_batch: Problems per forward pass: the batch is sorted by length and cut into
            micro-batches, so that short problems are not padded to the longest; the loss is
            summed over completion tokens and divided by the batch's, so the gradient is the
            whole batch's mean with fewer padded positions to compute.
        exclude: Problems never trained on (the validation and test splits).
        log_every: Steps between learning-curve points.
        progress: Called with a line per learning-curve point.

    Returns:
        The learning curve: ``(step, mean training loss since the previous point)``.
    """
    rng = random.Random(seed)
    span = operands if isinstance(operands, tuple) else (operands, operands)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / 50) * max(0.1, 1.0 - s / max(1, steps))
    )
    model.train()
    curve: list[tuple[int, float]] = []
    running, count = 0.0, 0
    for step in range(steps):
        problems = sample_additions(batch_size, span, digits, rng.randrange(2**31), exclude)
        pairs = sorted(training_texts(problems, mix, span, rng), key=lambda pair: len(pair[0]) + len(pair[1]))
        optimiser.zero_grad(set_to_none=True)
        chunks = [encode_batch(tokenizer, pairs[i : i + micro_batch]) for i in range(0, len(pairs), micro_batch)]
        targets = sum(int((labels != -100).sum()) for _, _, labels in chunks)
        loss = 0.0
        for chunk in chunks:
            part = completion_loss(model, *chunk) / targets
            part.backward()
            loss += part.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        running, count = running + loss, count + 1
        if (step + 1) % log_every == 0 or step + 1 == steps:
            curve.append((step + 1, running / count))
            if progress is not None:
                progress(f"step {step + 1}/{steps}: loss {running / count:.4f}")
            running, count = 0.0, 0
    model.eval()
    return curve
