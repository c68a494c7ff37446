"""Every benchmark report says how it was made: the command (an existing runner), the date and the machine."""

import re
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
INDEX = BENCHMARKS / "results" / "README.md"  # the index of the reports, not a report
REPORTS = sorted(p for p in (BENCHMARKS / "results").glob("*.md") if p != INDEX)
COMMAND = re.compile(r"^- command: `python -m (benchmarks(?:\.\w+)*)(?: [^`]*)?`", re.MULTILINE)


def runner_exists(module: str) -> bool:
    """Whether ``python -m module`` runs a runner in ``benchmarks/``: the package's ``__main__``, or a
    module with a ``if __name__ == "__main__":`` entry point."""
    parts = module.split(".")[1:]
    if not parts:
        return (BENCHMARKS / "__main__.py").is_file()
    path = BENCHMARKS.joinpath(*parts[:-1], f"{parts[-1]}.py")
    return path.is_file() and re.search(r"^if __name__ == .__main__.:", path.read_text(), re.MULTILINE) is not None


def test_there_are_reports():
    assert len(REPORTS) >= 5, f"expected the benchmark reports in {BENCHMARKS / 'results'}"


@pytest.mark.parametrize("report", REPORTS, ids=lambda path: path.name)
def test_report_states_its_command_date_and_machine(report):
    text = report.read_text()
    command = COMMAND.search(text)
    assert command, f"{report.name}: no '- command: `python -m benchmarks...`' line"
    assert runner_exists(command.group(1)), f"{report.name}: {command.group(1)} is not a runner in benchmarks/"
    assert re.search(r"^- date: \d{4}-\d{2}-\d{2}", text, re.MULTILINE), f"{report.name}: no '- date:' line"
    assert re.search(r"^- machine: \S", text, re.MULTILINE), f"{report.name}: no '- machine:' line"


def test_the_index_links_every_report():
    linked = set(re.findall(r"\]\(([\w.-]+\.md)\)", INDEX.read_text()))
    assert {p.name for p in REPORTS} <= linked, sorted({p.name for p in REPORTS} - linked)


def test_runner_check_rejects_a_module_that_does_not_exist():
    assert runner_exists("benchmarks") and runner_exists("benchmarks.strategies_synthetic")
    assert not runner_exists("benchmarks.no_such_runner") and not runner_exists("benchmarks.results.quick")
    assert not runner_exists("benchmarks.suite")  # a library module, no entry point
