"""The MiniLM text merge benchmark: experts fine-tuned on real sentiment tasks.

Base: all-MiniLM-L6-v2 (22.7M parameters, 6 layers). Per task, the *base score*
is the frozen encoder with a linear head trained on that task's training split
(so normalising between base and expert is meaningful); the *expert* is the
encoder fine-tuned on that task (every layer trainable) together with a head
started from the base head. Heads are never merged: a merged encoder is scored
on each task with that task's expert head. Objectives are validation accuracies
(the test split is held back for final reporting).

Building is seeded and cached as safetensors keyed by the settings; training
runs on a fixed number of threads so the weights do not depend on the machine.
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from bambo.benchmark import Benchmark
from bambo.benchmarks.common import select_task_vectors
from bambo.benchmarks.digits import default_cache_dir
from bambo.benchmarks.text.data import DEFAULT_TASKS, TextTask, TextTaskSpec, load_task
from bambo.benchmarks.text.model import embed, finetune, load_encoder, minilm_folder, tokenize, train_head
from bambo.config_base import FrozenConfig
from bambo.errors import ConfigError
from bambo.fidelity import nested_subset
from bambo.merge import Merger, TaskVectors, get_merge_method
from bambo.merge_problem import MergeProblem
from bambo.problem import Objective

RECIPE_VERSION = 1
TRAIN_THREADS = 2
Split = Literal["train", "val", "test"]


class TextConfig(FrozenConfig):
    """Settings of the text benchmark (all of them key the cache).

    Attributes:
        tasks: The tasks (data, see :class:`TextTaskSpec`).
        n_train: Training texts per task (heads and fine-tuning).
        n_val: Validation texts per task (the objectives; sized to keep one evaluation
            short: its time is in ``benchmarks/results/text.md``).
        n_test: Test texts per task (held back).
        max_length: Token limit per text.
        finetune_steps: AdamW steps per expert.
        batch_size: Fine-tuning batch size.
        lr: Encoder learning rate (the head uses 10x).
        seed: Seed of splits, heads and fine-tuning.
    """

    tasks: tuple[TextTaskSpec, ...] = DEFAULT_TASKS
    n_train: int = Field(600, ge=2)
    n_val: int = Field(300, ge=2)
    n_test: int = Field(300, ge=2)
    max_length: int = Field(64, ge=8)
    finetune_steps: int = Field(200, ge=0)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-4, gt=0)
    seed: int = 0

    def key(self) -> str:
        """Hash of the settings, the recipe version and the training thread count."""
        payload = f"{RECIPE_VERSION}:{TRAIN_THREADS}:{self.model_dump_json()}"
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class TextBenchmark(Benchmark):
    """Data, base encoder, experts and heads; build it with :meth:`build`."""

    name = "text"
    config_class = TextConfig
    default_tasks = ("amazon", "tweets3")
    default_budget = 12
    splits = ("val", "test")

    def __init__(
        self,
        config: TextConfig,
        encoder: nn.Module,
        tokenizer: object,
        tasks: dict[str, TextTask],
        experts: dict[str, dict[str, Tensor]],
        base_heads: dict[str, nn.Linear],
        expert_heads: dict[str, nn.Linear],
    ) -> None:
        self.config = config
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.tasks = tasks
        self.base = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
        self.experts = experts
        self.base_heads = base_heads
        self.expert_heads = expert_heads
        self._tokens: dict[tuple[str, str], dict[str, Tensor]] = {}

    @property
    def hidden_size(self) -> int:
        """Width of the sentence embeddings."""
        return int(self.encoder.config.hidden_size)  # type: ignore[attr-defined]

    @property
    def task_names(self) -> list[str]:
        """Task names in order."""
        return list(self.tasks)

    def tokens(self, task: str, split: Split) -> tuple[dict[str, Tensor], Tensor]:
        """Tokenised texts and labels of a task's split (tokenised once)."""
        texts, labels = self.tasks[task].split(split)
        if (task, split) not in self._tokens:
            self._tokens[(task, split)] = tokenize(self.tokenizer, texts, self.config.max_length)
        return self._tokens[(task, split)], labels

    @classmethod
    def build(
        cls,
        config: TextConfig | None = None,
        cache_dir: Path | str | None = None,
        use_cache: bool = True,
        progress: Callable[[str], None] | None = None,
    ) -> TextBenchmark:
        """Fetch the data, load MiniLM, train or load the heads and experts.

        Args:
            config: Settings (default :class:`TextConfig()`).
            cache_dir: Cache folder (default ``default_cache_dir() / "text"``).
            use_cache: Read and write the model cache.
            progress: Called with a line of text per step.
        """
        config = config or TextConfig()
        say = progress or (lambda _: None)
        names = [t.name for t in config.tasks]
        if len(set(names)) != len(names):
            raise ConfigError(f"task names must be unique, got {names}")
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "text"
        sizes = {"train": config.n_train, "val": config.n_val, "test": config.n_test}
        tasks = {spec.name: load_task(spec, cache / "sources", sizes, config.seed) for spec in config.tasks}
        encoder, tokenizer = load_encoder(minilm_folder())
        path = cache / f"{config.key()}.safetensors"
        bench = cls(config, encoder, tokenizer, tasks, {}, {}, {})
        if use_cache and path.exists() and bench._load(path):
            say(f"loaded experts from {path}")
            return bench
        threads = torch.get_num_threads()
        torch.set_num_threads(TRAIN_THREADS)
        try:
            bench._train(say)
        finally:
            torch.set_num_threads(threads)
        if use_cache:
            bench._save(path)
        return bench

    def _train(self, say: Callable[[str], None]) -> None:
        cfg = self.config
        for index, (name, task) in enumerate(self.tasks.items()):
            tokens, labels = self.tokens(name, "train")
            n_classes = len(task.classes)
            head = train_head(embed(self.encoder, tokens), labels, n_classes, cfg.seed + index)
            self.base_heads[name] = head
            expert = copy.deepcopy(self.encoder)
            expert_head = copy.deepcopy(head)
            finetune(expert, expert_head, tokens, labels, cfg.finetune_steps, cfg.batch_size, cfg.lr, cfg.seed + index)
            self.experts[name] = {k: v.detach().clone() for k, v in expert.state_dict().items()}
            self.expert_heads[name] = expert_head
            say(f"trained expert {name!r} ({cfg.finetune_steps} steps)")

    def _save(self, path: Path) -> None:
        flat: dict[str, Tensor] = {}
        for name in self.tasks:
            flat.update({f"expert/{name}/{k}": v.contiguous() for k, v in self.experts[name].items()})
            for kind, heads in (("base_head", self.base_heads), ("expert_head", self.expert_heads)):
                flat.update(
                    {f"{kind}/{name}/{k}": v.detach().contiguous() for k, v in heads[name].state_dict().items()}
                )
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(handle)
        save_file(flat, tmp, metadata={"config": self.config.model_dump_json()})
        os.replace(tmp, path)

    def _load(self, path: Path) -> bool:
        try:
            flat = load_file(str(path))
        except Exception:  # noqa: BLE001 - a corrupt cache is rebuilt
            return False
        for name, task in self.tasks.items():
            expert = {k[len(f"expert/{name}/") :]: v for k, v in flat.items() if k.startswith(f"expert/{name}/")}
            if set(expert) != set(self.base):
                return False
            self.experts[name] = expert
            for kind, heads in (("base_head", self.base_heads), ("expert_head", self.expert_heads)):
                head = nn.Linear(self.hidden_size, len(task.classes))
                head.load_state_dict(
                    {k[len(f"{kind}/{name}/") :]: v for k, v in flat.items() if k.startswith(f"{kind}/{name}/")}
                )
                heads[name] = head
        return True

    @torch.no_grad()
    def evaluate(
        self,
        state_dict: Mapping[str, Tensor] | None = None,
        split: Split = "val",
        tasks: Sequence[str] | None = None,
        heads: Literal["expert", "base"] = "expert",
        model: nn.Module | None = None,
        limit: int | None = None,
        fidelity: float = 1.0,
    ) -> dict[str, float]:
        """Accuracy of encoder weights on each task with that task's head.

        Args:
            state_dict: Encoder weights (default: the base encoder; ignored when ``model`` is given).
            split: ``val`` (objectives) or ``test``.
            tasks: Tasks to score (default all).
            heads: ``expert`` heads (for experts and merges) or ``base`` heads.
            model: A live encoder holding the weights already (a merge problem merges each
                candidate into it, ``Merger.merge(c, into=model)``); it is run as it is.
            limit: Score the first ``limit`` texts of the split per task only (a cheaper,
                coarser objective; default all).
            fidelity: Share of those texts scored, a nested seeded subset per task
                (:func:`bambo.fidelity.nested_subset`, seeded by the config's seed).

        Returns:
            ``{"acc/{task}": accuracy}``.
        """
        if limit is not None and limit < 1:
            raise ConfigError(f"limit must be >= 1 text per task, got {limit}")
        chosen = self.expert_heads if heads == "expert" else self.base_heads
        out = {}
        for name in tasks or self.task_names:
            tokens, labels = self.tokens(name, split)
            if limit is not None:
                tokens, labels = {k: v[:limit] for k, v in tokens.items()}, labels[:limit]
            if fidelity < 1.0:
                keep = nested_subset(len(labels), fidelity, self.config.seed)
                tokens, labels = {k: v[keep] for k, v in tokens.items()}, labels[keep]
            pooled = embed(self.encoder, tokens, state_dict) if model is None else embed(model, tokens)
            out[f"acc/{name}"] = float((chosen[name](pooled).argmax(-1) == labels).double().mean())
        return out

    def summary(self, split: Split = "val") -> dict[str, dict[str, float]]:
        """``{model: {task: accuracy}}`` for the base (base heads) and every expert (expert heads)."""
        rows = {"base": self.evaluate(None, split, heads="base")}
        rows.update({name: self.evaluate(self.experts[name], split) for name in self.task_names})
        return {model: {t: m[f"acc/{t}"] for t in self.task_names} for model, m in rows.items()}

    def task_vectors(self, tasks: Sequence[str] | None = None) -> TaskVectors:
        """Task vectors of the chosen experts' encoders."""
        return select_task_vectors(self.base, self.experts, list(tasks or self.task_names), "text")

    def problem(
        self,
        tasks: Sequence[str] | None = None,
        method: str = "task_arithmetic",
        granularity: Literal["model", "layer", "block"] = "model",
        blocks: Sequence[Sequence[int]] | int = 3,
        partitioner: str = "uniform",
        bounds: tuple[float, float] = (0.0, 1.0),
        split: Split = "val",
        limit: int | None = None,
        **method_options: object,
    ) -> MergeProblem:
        """A merge problem over the encoder, one accuracy objective per task.

        Args:
            tasks: Experts to merge and tasks to score (default all).
            method: Merge method.
            granularity: ``model``, ``layer`` or ``block``.
            blocks: Blocks for ``block`` granularity (a partition or a count K).
            partitioner: How a count K is split: ``uniform`` or ``hybrid`` (BAMBO's DP
                partition of the experts' layer differences), ``variance``, ``balance``.
            bounds: Coefficient bounds.
            split: Split of the objectives.
            limit: Score the first ``limit`` texts of the split per task only (default all).
            **method_options: Options of the merge method.
        """
        tasks = list(tasks or self.task_names)
        objectives = [Objective(name=f"acc/{t}", bounds=(0.0, 1.0)) for t in tasks]
        chance = [1.0 / len(self.tasks[t].classes) for t in tasks]

        def evaluator(state_dict: Mapping[str, Tensor], model: nn.Module, fidelity: float = 1.0) -> dict[str, float]:
            return self.evaluate(state_dict, split, tasks, model=model, limit=limit, fidelity=fidelity)

        return MergeProblem.from_task_vectors(
            self.task_vectors(tasks),
            evaluator,
            objectives,
            method,
            granularity,
            blocks,
            partitioner,
            bounds,
            ref_point=chance,
            method_options=method_options,
            model_factory=self.new_model,
        )

    def new_model(self) -> nn.Module:
        """A copy of the encoder (evaluation mode) that merges are written into."""
        return copy.deepcopy(self.encoder).eval()

    def describe(self, split: Split = "val") -> str:
        """See :func:`describe`."""
        return describe(self, split)


def describe(bench: TextBenchmark, split: Split = "val") -> str:
    """Base (with base heads), each expert and a few task-arithmetic merges on every task."""
    names = bench.task_names
    tv = bench.task_vectors()
    merger = Merger(tv, get_merge_method("task_arithmetic"))
    rows: dict[str, dict[str, float]] = {"base (frozen + head)": bench.evaluate(None, split, heads="base")}
    rows.update({f"expert {n}": bench.evaluate(bench.experts[n], split) for n in names})
    n = len(names)
    for scale in (0.3, 0.6, 1.0):
        rows[f"TA all c={scale}"] = bench.evaluate(merger.merge(torch.full((n,), scale)), split)
    for i in range(min(n - 1, 2)):
        c = torch.zeros(n)
        c[i] = c[i + 1] = 0.5
        rows[f"TA {names[i]}+{names[i + 1]} c=0.5"] = bench.evaluate(merger.merge(c), split)
    width = max(map(len, rows)) + 2
    lines = [
        "task vector L1 ratio ||tau||/||base||: "
        + ", ".join(f"{t} {r:.4f}" for t, r in zip(names, tv.l1_ratio(), strict=True)),
        f"{split} accuracy".ljust(width) + "".join(t.rjust(10) for t in names),
    ]
    for label, metrics in rows.items():
        lines.append(label.ljust(width) + "".join(f"{metrics[f'acc/{t}']:10.4f}" for t in names))
    return "\n".join(lines)
