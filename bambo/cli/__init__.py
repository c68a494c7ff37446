"""The ``bambo`` command line: one typer app, its commands listed here explicitly.

Commands import what they use when they run (torch, BoTorch, matplotlib, the
benchmarks), so ``bambo --help`` and a bad argument answer at once.
"""

from __future__ import annotations

from typing import Annotated

import typer

from bambo import __version__
from bambo.cli import inspect, runs
from bambo.cli.common import console

app = typer.Typer(
    help="bambo: find the Pareto set of merged neural networks with few evaluations.", no_args_is_help=True
)


def _version(value: bool) -> None:
    if value:
        console.print(f"bambo {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """bambo: find the Pareto set of merged neural networks with few evaluations."""


app.command()(runs.demo)
app.command()(runs.run)
app.command()(runs.resume)
app.command()(runs.report)
app.command()(runs.export)
app.command()(inspect.describe)
app.command()(inspect.partition)
bench_app = typer.Typer(help="Benchmarks that ship with bambo.", no_args_is_help=True)
bench_app.command("surrogates")(inspect.bench_surrogates)
app.add_typer(bench_app, name="bench")

__all__ = ["app"]

if __name__ == "__main__":  # pragma: no cover
    app()
