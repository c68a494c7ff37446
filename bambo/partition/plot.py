"""BAMBO Fig. 2-style plot: task-vector norms, layer differences and the chosen blocks."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bambo.partition.differences import LayerDifferences  # noqa: E402
from bambo.partition.dp import Partition  # noqa: E402


def plot_partitions(
    diffs: LayerDifferences, partitions: Mapping[str, Partition], path: Path | str, title: str = ""
) -> Path:
    """Write the figure.

    Rows: per-expert ``||TV_l||_1`` and ``||TV_l||_2``; ``Diff_l`` for p = 1 and
    p = 2; then one strip per partitioner with its blocks in alternating colours.

    Args:
        diffs: Layer differences and norms.
        partitions: ``{label: partition}``, drawn top to bottom.
        path: PNG path.
        title: Figure title.
    """
    L = diffs.n_layers
    layers = np.arange(L)
    heights = [2.0, 2.0, 2.0, 0.45 * max(1, len(partitions))]
    fig, axes = plt.subplots(
        4,
        1,
        figsize=(max(6.0, 0.18 * L + 4.0), sum(heights) + 1.2),
        sharex=True,
        gridspec_kw={"height_ratios": heights},
    )
    for name, row in zip(diffs.expert_names, diffs.expert_l1, strict=True):
        axes[0].plot(layers, row, marker="o", ms=3, label=name)
    axes[0].set_ylabel("||TV||_1")
    axes[0].legend(fontsize=7, ncol=min(4, len(diffs.expert_names)))
    for name, row in zip(diffs.expert_names, diffs.expert_l2, strict=True):
        axes[1].plot(layers, row, marker="o", ms=3, label=name)
    axes[1].set_ylabel("||TV||_2")
    axes[2].bar(layers - 0.2, diffs.l1 / diffs.l1.max(), width=0.4, label="Diff (p=1)")
    axes[2].bar(layers + 0.2, diffs.l2 / diffs.l2.max(), width=0.4, label="Diff (p=2)")
    axes[2].set_ylabel("Diff / max")
    axes[2].legend(fontsize=7)
    strip = axes[3]
    colors = ("tab:blue", "tab:orange")
    for row, partition in enumerate(partitions.values()):
        y = len(partitions) - 1 - row
        for k, block in enumerate(partition):
            strip.broken_barh([(block.start - 0.5, len(block))], (y - 0.4, 0.8), color=colors[k % 2], alpha=0.8)
            strip.text(block.start - 0.5 + len(block) / 2, y, str(k), ha="center", va="center", fontsize=7)
    strip.set_yticks(range(len(partitions)))
    strip.set_yticklabels(list(partitions)[::-1], fontsize=8)
    strip.set_xlabel("layer")
    strip.set_xlim(-0.5, L - 0.5)
    for ax in axes[:3]:
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
