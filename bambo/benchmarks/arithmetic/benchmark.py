"""The arithmetic LM benchmark: a thinking and a direct expert of a tiny causal LM (BAMBO's setting).

BAMBO (Sec. 4.1) merges a "thinking" model (accurate, long answers) with an "instruct"
model (short answers) and searches the trade-off between accuracy and output tokens.
This benchmark builds that setting at CPU scale:

- **base**: a Llama-layout ``LlamaForCausalLM`` (:func:`~bambo.benchmarks.arithmetic.model.llama`)
  trained on multi-operand additions answered in both styles, thinking more often the
  more numbers a problem has (:func:`~bambo.benchmarks.arithmetic.data.think_probability`);
- **thinking** expert: the base fine-tuned on the step-by-step style;
- **direct** expert: the base fine-tuned on the answer-at-once style.

Objectives: ``accuracy`` (exact match of the parsed answer, maximise) and ``tokens``
(mean generated tokens, end-of-sequence included, minimise) of greedy generation on
the validation problems (:class:`~bambo.generation.GenerationEvaluator`); the test
problems are held back for reporting, and no training batch contains a validation or
test problem. Each model is saved with the tokenizer as a plain transformers folder
(``save_pretrained``), so ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` reload it; the folders are cached, keyed by a hash of
the settings, and training is seeded and runs on one thread.

The default recipe (additions of 2 to 5 two-digit numbers; the base 1,200 steps at a peak
learning rate of 1e-3 on the graded mix, each expert 350 steps at 5e-4) was chosen among
the recipes measured in ``docs/benchmarks.md``: it is the one that met every target of
the benchmark (thinking accuracy >= 0.9 at >= 4x the direct expert's tokens, direct at
least 0.15 less accurate, three task-arithmetic merges strictly between the experts,
training within 10 CPU-minutes).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from bambo.benchmark import Benchmark
from bambo.benchmarks.arithmetic.data import STYLES, Addition, build_tokenizer, parse_answer, sample_additions
from bambo.benchmarks.arithmetic.model import llama, train
from bambo.benchmarks.common import select_task_vectors
from bambo.benchmarks.digits import default_cache_dir
from bambo.config_base import FrozenConfig
from bambo.errors import ConfigError
from bambo.generation import Anchors, Example, GenerationEvaluator
from bambo.merge import Merger, StateDict, TaskVectors, get_merge_method
from bambo.merge_problem import MergeProblem
from bambo.problem import Objective

RECIPE_VERSION = 2
HARNESS_TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["</s>"]
  do_sample: false
  max_gen_toks: {limit}
process_results: !function utils.process_results
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""
HARNESS_UTILS = """# Written by bambo: scores a generation as bambo's GenerationEvaluator does.
from bambo.benchmarks.arithmetic.data import parse_answer


def process_results(doc, results):
    return {"exact_match": int(parse_answer(results[0]) == doc["answer"])}
"""
TRAIN_THREADS = 1
MODELS = ("base", *STYLES)
Split = Literal["val", "test"]


class ArithmeticConfig(FrozenConfig):
    """Settings of the arithmetic benchmark (all of them key the cache).

    Attributes:
        min_operands: Fewest numbers in a problem.
        max_operands: Most numbers in a problem (each problem draws its count uniformly:
            the direct expert answers short problems well and long ones badly, so a merge
            that thinks on the long ones only lies between the experts on both objectives).
        digits: Digits per number.
        layers: Decoder layers.
        hidden: Hidden size.
        heads: Attention heads.
        base_steps: Steps of the base on the graded mix of both styles.
        expert_steps: Steps of each expert on its own style.
        base_lr: Peak learning rate of the base.
        expert_lr: Peak learning rate of the experts.
        batch_size: Problems per step.
        n_val: Validation problems (the search's objectives).
        n_test: Test problems (held back).
        seed: Seeds the splits, the initialisation and the batches.
    """

    min_operands: int = Field(2, ge=2, le=6)
    max_operands: int = Field(5, ge=2, le=6)
    digits: int = Field(2, ge=1, le=4)
    layers: int = Field(4, ge=1)
    hidden: int = Field(128, ge=8)
    heads: int = Field(4, ge=1)
    base_steps: int = Field(1200, ge=1)
    expert_steps: int = Field(350, ge=1)
    base_lr: float = Field(1e-3, gt=0)
    expert_lr: float = Field(5e-4, gt=0)
    batch_size: int = Field(64, ge=1)
    n_val: int = Field(200, ge=1)
    n_test: int = Field(200, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _operand_range(self) -> ArithmeticConfig:
        if self.min_operands > self.max_operands:
            raise ValueError(f"min_operands {self.min_operands} is more than max_operands {self.max_operands}")
        return self

    def key(self) -> str:
        """Hash of the settings, the recipe version and the training thread count."""
        payload = f"{RECIPE_VERSION}:{TRAIN_THREADS}:{self.model_dump_json()}"
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def operands(self) -> tuple[int, int]:
        """``(min_operands, max_operands)``."""
        return (self.min_operands, self.max_operands)

    @property
    def max_new_tokens(self) -> int:
        """Room for the thinking style's longest answer, and a little more."""
        step = 2 * (self.digits + 1) + self.digits + 2  # "sum+x=sum';" with sums one digit longer
        return (self.max_operands - 1) * step + self.digits + 4 + 8


class ArithmeticBenchmark(Benchmark):
    """Base, experts and generation evaluator of the arithmetic benchmark; build it with :meth:`build`."""

    name = "arithmetic"
    config_class = ArithmeticConfig
    default_tasks = STYLES
    default_budget = 24
    splits = ("val", "test")

    def __init__(
        self, config: ArithmeticConfig, tokenizer: object, models: dict[str, nn.Module], curves: dict[str, list]
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.models = models
        self.curves = curves
        self.base = {k: v.detach().clone() for k, v in models["base"].state_dict().items()}
        self.experts = {s: {k: v.detach().clone() for k, v in models[s].state_dict().items()} for s in STYLES}
        self.problems = self._splits()
        self._evaluators: dict[Split, GenerationEvaluator] = {}

    def _splits(self) -> dict[Split, list[Addition]]:
        cfg = self.config
        val = sample_additions(cfg.n_val, cfg.operands, cfg.digits, seed=cfg.seed * 1000 + 1)
        test = sample_additions(cfg.n_test, cfg.operands, cfg.digits, seed=cfg.seed * 1000 + 2, exclude=frozenset(val))
        return {"val": val, "test": test}

    @property
    def task_names(self) -> list[str]:
        """The experts: ``["thinking", "direct"]``."""
        return list(STYLES)

    @classmethod
    def build(
        cls,
        config: ArithmeticConfig | None = None,
        cache_dir: Path | str | None = None,
        use_cache: bool = True,
        progress: Callable[[str], None] | None = None,
    ) -> ArithmeticBenchmark:
        """Load the three models from the cache, or train and cache them.

        Args:
            config: Settings (default :class:`ArithmeticConfig()`).
            cache_dir: Cache folder (default ``default_cache_dir() / "arithmetic"``).
            use_cache: Read and write the cache.
            progress: Called with a line of text per learning-curve point.
        """
        config = config or ArithmeticConfig()
        say = progress or (lambda _: None)
        folder = (Path(cache_dir) if cache_dir is not None else default_cache_dir() / "arithmetic") / config.key()
        if use_cache and (folder / "curves.json").exists():
            loaded = cls._load(config, folder)
            if loaded is not None:
                say(f"loaded the models from {folder}")
                return loaded
        threads = torch.get_num_threads()
        torch.set_num_threads(TRAIN_THREADS)
        try:
            bench = cls._train(config, say)
        finally:
            torch.set_num_threads(threads)
        if use_cache:
            bench.save(folder)
        return bench

    @classmethod
    def _train(cls, config: ArithmeticConfig, say: Callable[[str], None]) -> ArithmeticBenchmark:
        tokenizer = build_tokenizer()
        probe = cls.__new__(cls)
        probe.config = config
        held_out = frozenset(p for split in probe._splits().values() for p in split)
        model = llama(tokenizer, config.layers, config.hidden, config.heads, 4 * config.max_new_tokens, config.seed)
        common = {"operands": config.operands, "digits": config.digits, "batch_size": config.batch_size}
        curves: dict[str, list] = {}
        start = time.process_time()
        say(f"training the base ({config.base_steps} steps, thinking more often the more numbers)")
        curves["base"] = train(
            model, tokenizer, "graded", config.base_steps, lr=config.base_lr, seed=config.seed,
            exclude=held_out, progress=say, **common,
        )  # fmt: skip
        models = {"base": model}
        for i, style in enumerate(STYLES):
            expert = copy.deepcopy(model)
            say(f"fine-tuning the {style} expert ({config.expert_steps} steps)")
            curves[style] = train(
                expert, tokenizer, style, config.expert_steps, lr=config.expert_lr, seed=config.seed + 1 + i,
                exclude=held_out, progress=say, **common,
            )  # fmt: skip
            models[style] = expert
        curves["cpu_seconds"] = [[0, time.process_time() - start]]
        return cls(config, tokenizer, models, curves)

    def save(self, folder: Path) -> None:
        """Each model with the tokenizer as a transformers folder, and the learning curves (atomic)."""
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, suffix=".tmp"))
        for name, model in self.models.items():
            model.save_pretrained(tmp / name)
            self.tokenizer.save_pretrained(tmp / name)
        (tmp / "curves.json").write_text(json.dumps(self.curves))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)

    @classmethod
    def _load(cls, config: ArithmeticConfig, folder: Path) -> ArithmeticBenchmark | None:
        try:
            tokenizer = load_tokenizer(folder / "base")
            models = {name: load_model(folder / name) for name in MODELS}
            curves = json.loads((folder / "curves.json").read_text())
        except (OSError, ValueError, ConfigError):  # a corrupt cache is rebuilt
            return None
        return cls(config, tokenizer, models, curves)

    def evaluator(self, split: Split = "val", normalise: bool = False) -> GenerationEvaluator:
        """The generation evaluator of a split (``normalise``: with BAMBO's Eq. 2 anchors)."""
        if split not in self.problems:
            raise ConfigError(f"unknown split {split!r}; valid: {', '.join(self.problems)}")
        examples = [Example(p.prompt(), str(p.total)) for p in self.problems[split]]
        anchors = None
        if normalise:
            thinking, direct = (self.evaluate(self.models[s], split) for s in STYLES)
            anchors = Anchors((direct["accuracy"], thinking["accuracy"]), (thinking["tokens"], direct["tokens"]))
        return GenerationEvaluator(
            self.tokenizer,
            examples,
            parse_answer,
            self.config.max_new_tokens,
            batch_size=100,
            anchors=anchors,
            seed=self.config.seed,
        )

    def write_harness_task(self, folder: Path | str, split: Split = "val") -> str:
        """The split as an lm-evaluation-harness task (YAML, JSON lines, ``utils.py``) in ``folder``.

        The task generates greedily until the end-of-sequence token, at most
        :attr:`ArithmeticConfig.max_new_tokens` tokens, and scores ``exact_match`` of the
        parsed answer, as :meth:`evaluator` does; pass ``folder`` as lm-eval's ``include_path``
        (:class:`~bambo.harness.HarnessEvaluator`).

        Returns:
            The task's name, ``bambo_arithmetic_<split>``.
        """
        if split not in self.problems:
            raise ConfigError(f"unknown split {split!r}; valid: {', '.join(self.problems)}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"bambo_arithmetic_{split}"
        data = folder / f"{name}.jsonl"
        rows = [json.dumps({"prompt": p.prompt(), "answer": str(p.total)}) for p in self.problems[split]]
        data.write_text("\n".join(rows) + "\n")
        (folder / "utils.py").write_text(HARNESS_UTILS)
        (folder / f"{name}.yaml").write_text(
            HARNESS_TASK.format(name=name, data=json.dumps(str(data.resolve())), limit=self.config.max_new_tokens)
        )
        return name

    def evaluate(self, model: nn.Module, split: Split = "val") -> dict[str, float]:
        """``accuracy`` and ``tokens`` of a live model on a split."""
        if split not in self._evaluators:
            self._evaluators[split] = self.evaluator(split)
        return self._evaluators[split](model=model)

    def summary(self, split: str = "val") -> dict[str, dict[str, float]]:
        """``{model: {"accuracy": ..., "tokens": ...}}`` for the base and both experts."""
        return {name: self.evaluate(self.models[name], split) for name in MODELS}  # type: ignore[arg-type]

    def task_vectors(self, tasks: Sequence[str] | None = None) -> TaskVectors:
        """Task vectors of the chosen experts (default both)."""
        return select_task_vectors(self.base, self.experts, list(tasks or STYLES), "arithmetic")

    def new_model(self) -> nn.Module:
        """A copy of the base model (evaluation mode) that merges are written into."""
        return copy.deepcopy(self.models["base"]).eval()

    def problem(
        self,
        tasks: Sequence[str] | None = None,
        method: str = "task_arithmetic",
        granularity: Literal["model", "layer", "block"] = "model",
        blocks: Sequence[Sequence[int]] | int = 3,
        partitioner: str = "uniform",
        bounds: tuple[float, float] = (0.0, 1.0),
        split: Split = "val",
        normalise: bool = False,
        **method_options: object,
    ) -> MergeProblem:
        """A merge problem of the two experts: maximise ``accuracy``, minimise ``tokens``.

        Args:
            tasks: The experts merged (default both; the objectives are always the two).
            method: Merge method.
            granularity: ``model``, ``layer`` or ``block``.
            blocks: Blocks for ``block`` granularity (a partition or a count K).
            partitioner: How a count K is split.
            bounds: Coefficient bounds.
            split: Split of the objectives.
            normalise: Search BAMBO's normalised objectives (Eq. 2) ``f_accuracy`` and
                ``f_tokens`` (both maximised, 0 at the opposite expert, 1 at its own).
            **method_options: Options of the merge method.
        """
        evaluator = self.evaluator(split, normalise)
        if normalise:
            objectives = [Objective(name="f_accuracy"), Objective(name="f_tokens")]
            ref_point = [-0.1, -0.1]
        else:
            objectives = [
                Objective(name="accuracy", bounds=(0.0, 1.0)),
                Objective(name="tokens", direction="minimize", bounds=(0.0, float(self.config.max_new_tokens))),
            ]
            ref_point = [0.0, float(self.config.max_new_tokens)]

        def evaluate(state_dict: StateDict, model: nn.Module, fidelity: float = 1.0) -> dict[str, float]:
            return evaluator(state_dict, model=model, fidelity=fidelity)

        return MergeProblem.from_task_vectors(
            self.task_vectors(tasks),
            evaluate,
            objectives,
            method,
            granularity,
            blocks,
            partitioner,
            bounds,
            ref_point=ref_point,
            method_options=method_options,
            model_factory=self.new_model,
        )

    def describe(self, split: str = "val") -> str:
        """See :func:`describe`."""
        return describe(self, split)  # type: ignore[arg-type]


def describe(bench: ArithmeticBenchmark, split: Split = "val") -> str:
    """The base, both experts and a grid of task-arithmetic merges: accuracy and tokens, and which
    merges lie strictly between the experts on both objectives."""
    rows = {name: bench.evaluate(bench.models[name], split) for name in MODELS}
    thinking, direct = rows["thinking"], rows["direct"]
    merger = Merger(bench.task_vectors(), get_merge_method("task_arithmetic"))
    model = bench.new_model()
    between = 0
    for a in (0.3, 0.5, 0.7, 1.0):
        for b in (0.3, 0.5, 0.7, 1.0):
            merger.merge(torch.tensor([a, b]), into=model)
            metrics = bench.evaluate(model, split)
            rows[f"TA thinking {a} direct {b}"] = metrics
            inside = direct["accuracy"] < metrics["accuracy"] < thinking["accuracy"]
            inside &= direct["tokens"] < metrics["tokens"] < thinking["tokens"]
            between += inside
    width = max(map(len, rows)) + 2
    lines = [f"{split} split, {len(bench.problems[split])} problems".ljust(width) + "  accuracy    tokens"]
    lines += [f"{label.ljust(width)}{m['accuracy']:10.3f}{m['tokens']:10.2f}" for label, m in rows.items()]
    lines.append(f"merges strictly between the experts on both objectives: {between} of 16")
    return "\n".join(lines)


def load_tokenizer(folder: Path):  # noqa: ANN201 - a transformers tokenizer
    """The tokenizer saved in a model folder.

    Raises:
        ConfigError: The folder has no tokenizer (names the folder).
    """
    from transformers import AutoTokenizer

    if not (folder / "tokenizer.json").exists() and not (folder / "tokenizer_config.json").exists():
        raise ConfigError(f"{folder} has no tokenizer (tokenizer.json / tokenizer_config.json)")
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def load_model(folder: Path) -> nn.Module:
    """A causal LM saved in a folder, in evaluation mode, offline."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval()
