"""lm-evaluation-harness as an evaluator: its tasks and metrics, on the live merged model (extra ``bambo[lm-eval]``).

LLM users already score models with EleutherAI's lm-evaluation-harness. :class:`HarnessEvaluator`
runs ``lm_eval.simple_evaluate`` on the model a merge problem writes each candidate into
(``HFLM(pretrained=model, tokenizer=tokenizer)``: nothing is written to disk), maps the
tasks' metrics to objectives by lm-eval's own names (``"gsm8k/exact_match,strict-match"``:
task, then metric and filter as lm-eval keys them) and counts the generated tokens from the
logged samples (``"<task>/tokens"``: the mean over the task's documents, the end-of-sequence
token counted once for a response that stopped before ``max_gen_toks``, as
:class:`~bambo.generation.GenerationEvaluator` counts it).

lm-eval's imports take about a minute on a loaded 2-core machine, so they happen once, when
the evaluator is built, and so do the checks: a task name lm-eval does not know and a metric
a task does not produce are :class:`~bambo.errors.ConfigError`\\ s naming them, before any
evaluation. Custom tasks (a YAML and its data, ``include_path``) run fully offline.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from bambo.errors import ConfigError

__all__ = ["HarnessEvaluator", "harness_available"]


def harness_available() -> bool:
    """Whether lm-evaluation-harness and accelerate (its ``hf`` backend needs it) are installed."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("lm_eval", "accelerate"))


def _import_harness() -> Any:  # noqa: ANN401 - the lm_eval module
    if not harness_available():
        raise ConfigError(
            "lm-evaluation-harness is not installed: `pip install 'bambo[lm-eval]' -c constraints.txt` "
            "(lm_eval and accelerate)"
        )
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lm_eval

    return lm_eval


class HarnessEvaluator:
    """Scores a live causal LM with lm-evaluation-harness tasks.

    Args:
        tokenizer: The model's tokenizer.
        tasks: lm-eval task names (built-in, or defined by YAML files under ``include_path``).
        metrics: Metrics to return, ``"<task>/<metric>,<filter>"`` as lm-eval keys its results
            (default: every metric of every task).
        include_path: Folder of custom task YAMLs.
        limit: Documents per task at most (``None``: all).
        batch_size: Generation batch size.

    Raises:
        ConfigError: lm-eval is not installed, a task it does not know, or a metric a task
            does not produce (each named, with the valid names).
    """

    def __init__(
        self,
        tokenizer: object,
        tasks: Sequence[str],
        metrics: Sequence[str] | None = None,
        include_path: Path | str | None = None,
        limit: int | None = None,
        batch_size: int = 64,
    ) -> None:
        lm_eval = _import_harness()
        from lm_eval.tasks import TaskManager, get_task_dict

        if not tasks:
            raise ConfigError("the harness evaluator needs at least one task, got none")
        self.manager = TaskManager(include_path=None if include_path is None else str(include_path))
        unknown = [t for t in tasks if t not in self.manager.all_tasks]
        if unknown:
            custom = sorted(set(self.manager.all_tasks) - set(TaskManager().all_tasks)) if include_path else []
            raise ConfigError(
                f"lm-eval knows no task {', '.join(map(repr, unknown))}"
                + (f"; the tasks under {include_path}: {', '.join(custom) or 'none'}" if include_path else "")
            )
        self.tasks = list(tasks)
        self.produced = self._produced(get_task_dict(self.tasks, self.manager))
        wanted = list(metrics) if metrics is not None else sorted(self.produced)
        missing = [m for m in wanted if m not in self.produced]
        if missing:
            raise ConfigError(
                f"the tasks do not produce metric {', '.join(map(repr, missing))}; they produce: "
                + ", ".join(sorted(self.produced))
            )
        self.metrics = wanted
        self.tokenizer = tokenizer
        self.limit = limit
        self.batch_size = batch_size
        self._lm_eval = lm_eval

    @staticmethod
    def _produced(task_dict: Mapping[str, Any]) -> set[str]:
        """``"<task>/<metric>,<filter>"`` for every metric and filter of every task, and ``"<task>/tokens"``."""
        out: set[str] = set()
        for name, task in task_dict.items():
            config = task.config
            filters = [f["name"] for f in (config.filter_list or [])] or ["none"]
            for metric in config.metric_list or []:
                out |= {f"{name}/{metric['metric']},{f}" for f in filters}
            if config.output_type == "generate_until":
                out.add(f"{name}/tokens")
        return out

    def __call__(
        self, state_dict: Mapping[str, Tensor] | None = None, model: nn.Module | None = None
    ) -> dict[str, float]:
        """The chosen metrics of the live ``model``.

        Raises:
            ConfigError: No live model given.
        """
        if model is None:
            raise ConfigError("the harness evaluator needs the live model (model=...), got only a state dict")
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(pretrained=model, tokenizer=self.tokenizer, batch_size=self.batch_size)
        results = self._lm_eval.simple_evaluate(
            model=lm, tasks=self.tasks, task_manager=self.manager, limit=self.limit, log_samples=True, verbosity="ERROR"
        )
        out: dict[str, float] = {}
        for key in self.metrics:
            task, metric = key.split("/", 1)
            if metric == "tokens":
                out[key] = self._mean_tokens(results["samples"][task], results["configs"][task])
            else:
                out[key] = float(results["results"][task][metric])
        return out

    def _mean_tokens(self, samples: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> float:
        """Mean generated tokens over a task's logged samples (end-of-sequence counted when it stopped)."""
        limit = (config.get("generation_kwargs") or {}).get("max_gen_toks", 256)
        counts = []
        for sample in samples:
            text = sample["resps"][0][0]
            n = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            counts.append(n + 1 if n < limit else n)
        return sum(counts) / len(counts)
