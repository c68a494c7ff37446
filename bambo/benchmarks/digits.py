"""The embedded digits merge benchmark: a base MLP and experts on real handwritten digits.

Data: the UCI handwritten digits that ship with scikit-learn (``load_digits``,
1,797 8x8 images). Each *task* is the 10-class problem under one transform:
``rotated`` (90 degrees), ``inverted`` (1 - x), ``flipped`` (left-right),
``noisy`` (fixed Gaussian noise), ``transposed``. Images are split once, seeded,
into train / val / test (60/20/20); every task uses the same split.

Models: a residual MLP (input projection, ``depth`` residual hidden layers named
``layers.{i}``, a ``head``). As with CLIP in MAP, the base is pretrained on a mix
of every task so it is fair at each; each expert is fine-tuned from it on its own
task with small SGD steps, so task vectors stay small (a few percent of the base's
L1 norm; MAP Assumption 1) and merges trade one task against another.

Training is seeded and runs on one thread (float reductions depend on the thread
count, and the weights must not depend on the machine); it takes about a second
and is cached on disk in safetensors, keyed by a hash of the :class:`DigitsConfig`
and :data:`RECIPE_VERSION`.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from safetensors.torch import load_file, save_file
from sklearn.datasets import load_digits
from torch import Tensor, nn
from torch.func import functional_call

from bambo.benchmark import Benchmark
from bambo.benchmarks.common import select_task_vectors
from bambo.config_base import FrozenConfig
from bambo.errors import ConfigError, UnknownNameError
from bambo.fidelity import nested_subset
from bambo.merge import Merger, TaskVectors, get_merge_method
from bambo.merge_problem import MergeProblem
from bambo.problem import Objective

TASKS = ("rotated", "inverted", "flipped", "noisy", "transposed")
# Bump when the training code changes in a way that changes the weights (invalidates caches).
RECIPE_VERSION = 2
# Training runs on one thread: float reductions differ with the thread count, and the
# weights must not depend on the machine.
TRAIN_THREADS = 1
Split = Literal["train", "val", "test"]


class DigitsConfig(FrozenConfig):
    """Settings of the digits benchmark (all of them key the cache).

    Attributes:
        tasks: Transforms that get an expert, in order.
        width: Hidden width of the MLP.
        depth: Number of residual hidden layers (the "layers" of the space).
        pretrain_steps: Adam steps of the base on the task mix.
        pretrain_lr: Adam learning rate of the base.
        finetune_steps: SGD steps of each expert on its own task.
        finetune_lr: SGD learning rate of the experts (small: small task vectors).
        batch_size: Mini-batch size of both phases.
        noise_std: Standard deviation of the ``noisy`` task's noise (pixels in [0, 1]).
        seed: Seed of the split, the initialisation, the batches and the noise.
    """

    tasks: tuple[str, ...] = ("rotated", "inverted", "flipped", "noisy")
    width: int = Field(64, ge=4)
    depth: int = Field(6, ge=1)
    pretrain_steps: int = Field(300, ge=1)
    pretrain_lr: float = Field(1e-3, gt=0)
    finetune_steps: int = Field(300, ge=1)
    finetune_lr: float = Field(0.01, gt=0)
    batch_size: int = Field(32, ge=1)
    noise_std: float = Field(0.35, ge=0)
    seed: int = 0

    def key(self) -> str:
        """A short hash of the settings and the recipe version, used as the cache key."""
        payload = f"{RECIPE_VERSION}:{self.model_dump_json()}"
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class DigitsMLP(nn.Module):
    """Residual MLP: ``input`` (64 -> width), ``layers.{i}`` (width -> width), ``head`` (width -> 10)."""

    def __init__(self, width: int = 64, depth: int = 6) -> None:
        super().__init__()
        self.input = nn.Linear(64, width)
        self.layers = nn.ModuleList([nn.Linear(width, width) for _ in range(depth)])
        self.head = nn.Linear(width, 10)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.input(x))
        for layer in self.layers:
            h = h + torch.relu(layer(h))
        return self.head(h)


def _transform(task: str, images: np.ndarray, noise_std: float, seed: int) -> np.ndarray:
    if task == "rotated":
        return np.rot90(images, 1, axes=(1, 2))
    if task == "inverted":
        return 1.0 - images
    if task == "flipped":
        return images[:, :, ::-1]
    if task == "noisy":
        noise = np.random.default_rng(seed + 1).normal(0.0, noise_std, images.shape)
        return np.clip(images + noise, 0.0, 1.0)
    if task == "transposed":
        return np.transpose(images, (0, 2, 1))
    raise UnknownNameError("digits task", task, TASKS)


@dataclass(frozen=True)
class DigitsData:
    """Inputs per task and the shared labels and split indices.

    Attributes:
        inputs: ``{task: float32 tensor of shape (1797, 64)}``.
        labels: Shape ``(1797,)``.
        splits: ``{"train"|"val"|"test": index tensor}``.
    """

    inputs: dict[str, Tensor]
    labels: Tensor
    splits: dict[str, Tensor]

    def get(self, task: str, split: Split) -> tuple[Tensor, Tensor]:
        """Inputs ``(n, 64)`` and labels ``(n,)`` of one task and split."""
        index = self.splits[split]
        return self.inputs[task][index], self.labels[index]


def load_digits_tasks(config: DigitsConfig) -> DigitsData:
    """Load scikit-learn's digits and build every task of ``config`` with the seeded split."""
    for task in config.tasks:
        if task not in TASKS:
            raise UnknownNameError("digits task", task, TASKS)
    if len(set(config.tasks)) != len(config.tasks):
        raise ConfigError(f"digits tasks must be unique, got {config.tasks}")
    raw = load_digits()
    images = raw.images.astype(np.float64) / 16.0
    n = len(raw.target)
    perm = np.random.default_rng(config.seed).permutation(n)
    n_train, n_val = int(0.6 * n), int(0.2 * n)
    splits = {
        "train": torch.as_tensor(perm[:n_train]),
        "val": torch.as_tensor(perm[n_train : n_train + n_val]),
        "test": torch.as_tensor(perm[n_train + n_val :]),
    }
    inputs = {
        task: torch.as_tensor(
            np.ascontiguousarray(_transform(task, images, config.noise_std, config.seed)).reshape(n, -1),
            dtype=torch.float32,
        )
        for task in config.tasks
    }
    return DigitsData(inputs, torch.as_tensor(raw.target, dtype=torch.long), splits)


def _train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    X: Tensor,
    y: Tensor,
    steps: int,
    batch_size: int,
    generator: torch.Generator,
) -> None:
    model.train()
    for _ in range(steps):
        index = torch.randint(len(y), (batch_size,), generator=generator)
        loss = nn.functional.cross_entropy(model(X[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def train_digits_models(
    config: DigitsConfig, data: DigitsData
) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]]]:
    """Train the base (task mix) and one expert per task, deterministically from ``config.seed``.

    Returns:
        ``(base state dict, {task: expert state dict})``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        return _train_all(config, data)
    finally:
        torch.set_num_threads(threads)


def _train_all(config: DigitsConfig, data: DigitsData) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]]]:
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = DigitsMLP(config.width, config.depth)
    train = data.splits["train"]
    X_mix = torch.cat([data.inputs[t][train] for t in config.tasks])
    y_mix = data.labels[train].repeat(len(config.tasks))
    _train(
        model,
        torch.optim.Adam(model.parameters(), lr=config.pretrain_lr),
        X_mix,
        y_mix,
        config.pretrain_steps,
        config.batch_size,
        generator,
    )
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    experts = {}
    for task in config.tasks:
        model.load_state_dict(base)
        X, y = data.get(task, "train")
        _train(
            model,
            torch.optim.SGD(model.parameters(), lr=config.finetune_lr),
            X,
            y,
            config.finetune_steps,
            config.batch_size,
            generator,
        )
        experts[task] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return base, experts


def _read_cache(path: Path, tasks: Sequence[str]) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]]] | None:
    """The cached models, or ``None`` if the file is unreadable or incomplete (then it is rebuilt)."""
    try:
        flat = load_file(str(path))
    except Exception:  # noqa: BLE001 - a corrupt cache is rebuilt, not fatal
        return None
    base = {k[len("base/") :]: v for k, v in flat.items() if k.startswith("base/")}
    experts = {t: {k[len(t) + 1 :]: v for k, v in flat.items() if k.startswith(f"{t}/")} for t in tasks}
    if not base or any(set(sd) != set(base) for sd in experts.values()):
        return None
    return base, experts


def default_cache_dir() -> Path:
    """``$BAMBO_CACHE_DIR`` or ``~/.cache/bambo``."""
    return Path(os.environ.get("BAMBO_CACHE_DIR", Path.home() / ".cache" / "bambo"))


class DigitsBenchmark(Benchmark):
    """Base, experts and evaluation of the digits benchmark.

    Build it with :meth:`build`. Metrics are ``acc/{task}`` (accuracy, maximise)
    and ``loss/{task}`` (cross-entropy, minimise) on one split.

    Args:
        config: The settings the models were trained with.
        base: Base state dict.
        experts: ``{task: expert state dict}`` in ``config.tasks`` order.
        data: The task data.
    """

    name = "digits"
    config_class = DigitsConfig
    default_tasks = ("inverted", "noisy")
    default_budget = 32
    splits = ("train", "val", "test")

    def __init__(
        self, config: DigitsConfig, base: dict[str, Tensor], experts: dict[str, dict[str, Tensor]], data: DigitsData
    ) -> None:
        self.config = config
        self.base = base
        self.experts = experts
        self.data = data
        self._model = DigitsMLP(config.width, config.depth)

    @classmethod
    def build(
        cls,
        config: DigitsConfig | None = None,
        cache_dir: Path | str | None = None,
        use_cache: bool = True,
        progress: Callable[[str], None] | None = None,  # noqa: ARG003 - training takes seconds
    ) -> DigitsBenchmark:
        """Load the models from the cache, or train and cache them.

        Args:
            config: Settings (defaults to :class:`DigitsConfig()`).
            cache_dir: Cache folder (default :func:`default_cache_dir` / ``digits``).
            use_cache: Read and write the cache; ``False`` always trains.
            progress: Unused (training takes about a second).
        """
        config = config or DigitsConfig()
        data = load_digits_tasks(config)
        path = Path(cache_dir or default_cache_dir() / "digits") / f"{config.key()}.safetensors"
        if use_cache and path.exists():
            cached = _read_cache(path, config.tasks)
            if cached is not None:
                return cls(config, cached[0], cached[1], data)
        base, experts = train_digits_models(config, data)
        if use_cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            flat = {f"base/{k}": v.contiguous() for k, v in base.items()}
            for task, sd in experts.items():
                flat.update({f"{task}/{k}": v.contiguous() for k, v in sd.items()})
            handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            os.close(handle)
            save_file(flat, tmp, metadata={"config": config.model_dump_json()})
            os.replace(tmp, path)  # atomic: concurrent builders never see a partial file
        return cls(config, base, experts, data)

    @property
    def tasks(self) -> tuple[str, ...]:
        """Task names in order."""
        return self.config.tasks

    @property
    def task_names(self) -> list[str]:
        """Task names in order (the name every benchmark shares)."""
        return list(self.config.tasks)

    @torch.no_grad()
    def evaluate(
        self,
        state_dict: Mapping[str, Tensor],
        split: Split = "val",
        tasks: Sequence[str] | None = None,
        model: nn.Module | None = None,
        fidelity: float = 1.0,
    ) -> dict[str, float]:
        """Accuracy and cross-entropy of a state dict on each task.

        Args:
            state_dict: The weights (ignored when ``model`` is given).
            split: The split scored.
            tasks: The tasks scored (default: all).
            model: A live model holding the weights already (a merge problem merges each
                candidate into it, ``Merger.merge(c, into=model)``); it is run as it is.
            fidelity: Share of the split's images scored: the same nested, seeded subset for
                every task (:func:`bambo.fidelity.nested_subset`, seeded by the config's seed).

        Returns:
            ``{"acc/{task}": float, "loss/{task}": float}`` for every task.
        """
        out = {}
        for task in tasks or self.tasks:
            X, y = self.data.get(task, split)
            if fidelity < 1.0:
                keep = nested_subset(len(y), fidelity, self.config.seed)
                X, y = X[keep], y[keep]
            logits = model(X) if model is not None else functional_call(self._model, dict(state_dict), (X,))
            out[f"acc/{task}"] = float((logits.argmax(dim=1) == y).double().mean())
            out[f"loss/{task}"] = float(nn.functional.cross_entropy(logits, y))
        return out

    def task_vectors(self, tasks: Sequence[str] | None = None) -> TaskVectors:
        """Task vectors of the chosen experts (default: all)."""
        return select_task_vectors(self.base, self.experts, list(tasks or self.tasks), "digits")

    def problem(
        self,
        tasks: Sequence[str] | None = None,
        method: str = "task_arithmetic",
        granularity: Literal["model", "layer", "block"] = "model",
        blocks: Sequence[Sequence[int]] | int = 3,
        partitioner: str = "uniform",
        bounds: tuple[float, float] = (0.0, 1.0),
        metric: Literal["acc", "loss"] = "acc",
        split: Split = "val",
        **method_options: object,
    ) -> MergeProblem:
        """A merge problem with one objective per task (accuracy or loss on ``split``).

        Args:
            tasks: Experts to merge and tasks to score (default: all).
            method: Merge method name.
            granularity: ``model``, ``layer`` or ``block``.
            blocks: Blocks for block granularity: a partition (e.g. from
                :func:`bambo.partition.partition_layers`) or a count K of blocks.
            partitioner: How a count K is split: ``uniform`` or ``hybrid`` (BAMBO's DP
                partition of the experts' layer differences), ``variance``, ``balance``.
            bounds: Bounds of every coefficient.
            metric: ``acc`` (maximised) or ``loss`` (minimised).
            split: Split the objectives are measured on.
            **method_options: Options of the merge method.
        """
        tasks = list(tasks or self.tasks)
        direction = "maximize" if metric == "acc" else "minimize"
        value_range = (0.0, 1.0) if metric == "acc" else (0.0, None)
        objectives = [Objective(name=f"{metric}/{t}", direction=direction, bounds=value_range) for t in tasks]
        # Hypervolume reference: chance level (accuracy 0.1, cross-entropy ln 10) on every task.
        chance = 0.1 if metric == "acc" else math.log(10.0)
        evaluator = partial(self.evaluate, split=split, tasks=tasks)
        return MergeProblem.from_task_vectors(
            self.task_vectors(tasks),
            evaluator,
            objectives,
            method,
            granularity,
            blocks,
            partitioner,
            bounds,
            ref_point=[chance] * len(tasks),
            method_options=method_options,
            model_factory=self.new_model,
        )

    def new_model(self) -> nn.Module:
        """A fresh model of the benchmark's architecture (evaluation mode) that merges are written into."""
        with torch.device("meta"):  # no initialisation: every merge overwrites all the weights
            model = DigitsMLP(self.config.width, self.config.depth)
        return model.to_empty(device="cpu").eval()

    def summary(self, split: Split = "val") -> dict[str, dict[str, float]]:
        """Accuracy of the base and each expert on every task: ``{model: {task: acc}}``."""
        rows = {"base": self.base, **self.experts}
        return {name: {t: self.evaluate(sd, split)[f"acc/{t}"] for t in self.tasks} for name, sd in rows.items()}

    def describe(self, split: Split = "val") -> str:
        """See :func:`describe`."""
        return describe(self, split)


def describe(benchmark: DigitsBenchmark, split: Split = "val") -> str:
    """A plain-text report: task-vector ratios, then the accuracy of the base, each
    expert and a few task-arithmetic merges on every task (the trade-offs merging makes)."""
    tv = benchmark.task_vectors()
    merger = Merger(tv, get_merge_method("task_arithmetic"))
    n = tv.n_experts
    rows: dict[str, Mapping[str, Tensor]] = {"base": benchmark.base, **benchmark.experts}
    for scale in (0.3, 0.6, 1.0):
        rows[f"TA all c={scale}"] = merger.merge(torch.full((n,), scale))
    for i in range(min(n - 1, 2)):
        c = torch.zeros(n)
        c[i] = c[i + 1] = 0.5
        rows[f"TA {tv.expert_names[i]}+{tv.expert_names[i + 1]} c=0.5"] = merger.merge(c)
    width = max(map(len, rows)) + 2
    lines = [
        "task vector L1 ratio ||tau||/||base||: "
        + ", ".join(f"{t} {r:.4f}" for t, r in zip(tv.expert_names, tv.l1_ratio(), strict=True)),
        f"{split} accuracy".ljust(width) + "".join(t.rjust(12) for t in benchmark.tasks),
    ]
    for name, state_dict in rows.items():
        metrics = benchmark.evaluate(state_dict, split)
        lines.append(name.ljust(width) + "".join(f"{metrics[f'acc/{t}']:12.4f}" for t in benchmark.tasks))
    return "\n".join(lines)
