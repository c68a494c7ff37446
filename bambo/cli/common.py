"""What the CLI's commands share: the console, error handling, torch set-up, printing a result."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from bambo.errors import BamboError, BamboWarning

if TYPE_CHECKING:
    from bambo.result import ParetoResult

console = Console()
T = TypeVar("T")


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print an error (its text taken literally, brackets included) and return the exit to raise."""
    console.print(f"[red]error:[/red] {escape(message)}", emoji=False)  # ":b:" in a message stays text
    return typer.Exit(code=code)


def guarded(step: Callable[[], T]) -> T:
    """Run a command's work: bad input exits 2; a failure mid-run exits 1 and points to resume.

    bambo's own warnings (:class:`~bambo.errors.BamboWarning`) are printed as ``warning:`` lines.
    """
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _bambo_warnings_on_console(warnings.showwarning)
            return step()
    except BamboError as exc:
        raise fail(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a strategy or library failure mid-run
        console.print(f"[red]the run stopped:[/red] {escape(f'{type(exc).__name__}: {exc}')}")
        console.print("every finished evaluation is in the journal; fix the cause and continue with `bambo resume`")
        raise typer.Exit(code=1) from exc


def _bambo_warnings_on_console(original: Callable[..., None]) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints bambo's warnings on the console and others as before."""

    def show(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
        if issubclass(category, BamboWarning):
            console.print(f"[yellow]warning:[/yellow] {escape(str(message))}")
        else:
            original(message, category, *args, **kwargs)

    return show


def require(path: Path, *names: str) -> None:
    """Exit 2 at once (before any heavy import) if ``path`` or a file it must hold is missing.

    A config file must be a readable regular file: a FIFO, a device or an unreadable
    path is refused without being opened.

    Args:
        path: A run folder or a config file.
        names: Files the folder must hold (none: ``path`` itself must be a file).
    """
    if not names:
        from bambo.validation import check_regular_file  # stdlib only: the CLI stays light

        try:  # stat only: a FIFO or a device is refused before anything opens it
            check_regular_file(path, "config")
        except BamboError as exc:
            raise fail(str(exc)) from None
        return
    if not path.is_dir():
        raise fail(f"{path} is not a run folder (no such folder)")
    missing = [n for n in names if not (path / n).is_file()]
    if missing:
        raise fail(f"{path} is not a run folder (it has no {', '.join(missing)})")


def setup_torch(threads: int) -> None:
    """Set torch's CPU threads and flush denormals (subnormal floats slow the acquisition optimiser)."""
    import torch

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)


def print_run(run_dir: Path, result: ParetoResult) -> None:
    """The Pareto table, failed evaluations and the final hypervolume of a run."""
    from bambo.report import pareto_table

    title = f"Pareto set ({int(result.pareto_mask.sum())} of {result.n_evaluations} evaluated)"
    console.print(pareto_table(result, title=title))
    if result.errors:
        console.print(f"[yellow]{len(result.errors)} failed evaluations[/yellow]")
        for row, text in sorted(result.errors.items())[:5]:
            console.print(f"  trial {result.trial_ids[row] if result.trial_ids else row}: {escape(text)}")
    fidelity = result.info.get("fidelity")
    if fidelity:
        console.print(
            f"multi-fidelity: {result.n_evaluations} full and {fidelity['low_fidelity_trials']} low-fidelity "
            f"evaluations, cost {fidelity['cost']:.4g} full evaluations"
        )
    if result.hypervolume_history:
        console.print(f"hypervolume {result.hypervolume_history[-1]:.4g}; run folder {run_dir}")
