"""Plots of evaluated points and Pareto fronts (matplotlib, headless)."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bambo.strategies.base import ParetoResult  # noqa: E402


def plot_front(result: ParetoResult, path: Path | str, title: str = "") -> Path:
    """Scatter of every completed evaluation with the Pareto set highlighted.

    Two objectives give one panel; more give one panel per pair. Axes are in the
    objectives' own directions.

    Args:
        result: A search result.
        path: Where to write the PNG.
        title: Figure title.
    """
    Y = result.Y_user[result.ok].numpy()
    P = result.pareto_Y_user.numpy()
    names = result.objective_names
    pairs = list(combinations(range(len(names)), 2)) or [(0, 0)]
    cols = min(3, len(pairs))
    rows = (len(pairs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.0 * rows), squeeze=False)
    for ax, (i, j) in zip(axes.flat, pairs, strict=False):
        ax.scatter(Y[:, i], Y[:, j], s=14, c="0.65", label="evaluated")
        order = P[:, i].argsort()
        ax.plot(P[order, i], P[order, j], "o-", c="tab:red", ms=5, lw=1, label="Pareto set")
        ax.set_xlabel(names[i])
        ax.set_ylabel(names[j])
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(pairs) :]:
        ax.axis("off")
    axes.flat[0].legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
