"""Human-readable outputs of a search: a rich table and pareto.csv / .json / .png."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from bambo.atomic import atomic_path, atomic_write_text
from bambo.plotting import plot_front
from bambo.result import ParetoResult


def pareto_table(result: ParetoResult, title: str = "Pareto set", digits: int = 4, max_variables: int = 6) -> Table:
    """The Pareto set as a table: objectives in their own directions, then decision variables.

    Args:
        result: A search result.
        title: Table title.
        digits: Decimals shown.
        max_variables: Show the decision variables only if there are at most this
            many (block-wise spaces have dozens; they are in ``pareto.csv``).
    """
    show_x = len(result.parameter_names) <= max_variables
    caption = None if show_x else f"{len(result.parameter_names)} coefficients per point: see pareto.csv"
    table = Table(title=title, caption=caption)
    table.add_column("#", justify="right")
    for name, sign in zip(result.objective_names, result.signs.tolist(), strict=True):
        arrow = "↑" if sign > 0 else "↓"
        table.add_column(f"{name} {arrow}", justify="right", style="green")
    if show_x:
        for name in result.parameter_names:
            table.add_column(name, justify="right", style="cyan")
    X, Y = result.pareto_X, result.pareto_Y
    order = Y[:, 0].argsort(descending=bool(result.signs[0] > 0))
    for rank, i in enumerate(order.tolist()):
        cells = [f"{v:.{digits}f}" for v in Y[i].tolist()]
        if show_x:
            cells += [f"{v:.{digits}f}" for v in X[i].tolist()]
        table.add_row(str(rank), *cells)
    return table


def write_pareto(
    result: ParetoResult, out_dir: Path | str, metadata: dict[str, Any] | None = None, title: str = ""
) -> list[Path]:
    """Write ``pareto.csv``, ``pareto.json`` and ``pareto.png`` to ``out_dir``.

    ``pareto.csv`` has one row per Pareto point (decision variables, then
    objectives in their own directions). ``pareto.json`` adds every evaluation,
    failures with their messages, the hypervolume history and ``metadata``.

    Returns:
        The three paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    X, Y = result.pareto_X, result.pareto_Y
    csv_path = out / "pareto.csv"
    with atomic_path(csv_path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*result.parameter_names, *result.objective_names])
        for x, y in zip(X.tolist(), Y.tolist(), strict=True):
            writer.writerow([*(f"{v:.8g}" for v in x), *(f"{v:.8g}" for v in y)])
    payload = {
        "metadata": metadata or {},
        "parameter_names": result.parameter_names,
        "objectives": [
            {"name": n, "direction": "maximize" if s > 0 else "minimize"}
            for n, s in zip(result.objective_names, result.signs.tolist(), strict=True)
        ],
        "pareto": [{"x": x, "objectives": y} for x, y in zip(X.tolist(), Y.tolist(), strict=True)],
        "evaluations": [
            {"x": x, "objectives": None if i in result.errors else y, "error": result.errors.get(i)}
            for i, (x, y) in enumerate(zip(result.X.tolist(), result.Y.tolist(), strict=True))
        ],
        "ref_point": None
        if result.ref_point is None
        else (result.ref_point * result.signs[result.front_columns or slice(None)]).tolist(),
        "hypervolume_history": result.hypervolume_history,
        "strategy": result.strategy,
        "info": result.info,
    }
    if result.predicted_front is not None and result.predicted_X is not None:
        payload["predicted_front"] = [
            {"x": x, "objectives": y}
            for x, y in zip(result.predicted_X.tolist(), result.predicted_front.tolist(), strict=True)
        ]
    json_path = out / "pareto.json"
    atomic_write_text(json_path, json.dumps(payload, indent=1))
    png_path = plot_front(result, out / "pareto.png", title=title)
    return [csv_path, json_path, png_path]
