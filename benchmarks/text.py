"""Text benchmark report: ``python -m benchmarks.text`` (or ``make bench-text``).

Builds (or loads from the cache) the MiniLM experts of :mod:`bambo.benchmarks.text`,
times the build and one merged-model evaluation, and writes
``benchmarks/results/text.md``: per task the accuracy of the base (frozen
encoder + head), every expert and a few task-arithmetic merges, and the layer
differences of the experts (BAMBO Eq. 4) on these real weights.
"""

from __future__ import annotations

import torch

from bambo.benchmarks.text import TextBenchmark, TextConfig, describe
from bambo.merge import Merger, get_merge_method
from bambo.partition import layer_differences_from_task_vectors, partition_layers
from benchmarks.common import RESULTS, Clock, machine_header


def main() -> None:
    torch.set_num_threads(2)
    clock = Clock()
    bench = TextBenchmark.build(TextConfig(), progress=print)
    built = clock.elapsed()
    tv = bench.task_vectors()
    merged = Merger(tv, get_merge_method("task_arithmetic")).merge(torch.full((tv.n_experts,), 0.5))
    clock.restart()
    bench.evaluate(merged)
    evaluation = clock.elapsed()
    diffs = layer_differences_from_task_vectors(tv)
    blocks = partition_layers(diffs.l1, 3)
    config = bench.config
    text = "\n".join(
        [
            "# Text merge benchmark (all-MiniLM-L6-v2, real sentiment data)",
            "",
            machine_header(("torch", "transformers", "bambo")),
            "- command: `python -m benchmarks.text` (builds the experts, or loads them from the cache)",
            f"- this run: build or cache load {built.text()}; one evaluation of a merged encoder on "
            f"{len(bench.task_names)} tasks x {config.n_val} validation texts: {evaluation.text(1)} "
            "(this process, all threads)",
            f"- experts: {config.finetune_steps} AdamW steps, batch {config.batch_size}, lr {config.lr}, "
            f"{config.n_train} training texts per task; tasks: "
            + ", ".join(f"{t.name} ({t.source}{', ' + t.file if t.file else ''})" for t in config.tasks),
            "",
            "```",
            describe(bench),
            "```",
            "",
            "Layer differences of the experts, Diff_l = sum_i ||TV_l^(i) - mean TV_l||_1 (BAMBO Eq. 4): "
            + ", ".join(f"{v:.4g}" for v in diffs.l1)
            + f"; hybrid partition into 3 blocks: {blocks.describe()}",
            "",
        ]
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "text.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
