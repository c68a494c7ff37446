"""The layering rule, checked by import-linter: the core never imports the benchmarks or the CLI.

The core is every module of ``bambo`` except ``bambo.benchmarks`` (shipped benchmark
problems, found by the core through entry points only) and ``bambo.cli`` (the command
line, which may use everything). The contract is generated from the package's modules,
so a new core module is covered without editing a list.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import bambo

OUTER = ("bambo.benchmarks", "bambo.cli")
LINT = Path(sys.executable).with_name("lint-imports")


def core_modules() -> list[str]:
    names = [f"bambo.{m.name}" for m in pkgutil.iter_modules(bambo.__path__)]
    return sorted(n for n in names if n not in OUTER)


def lint(tmp_path: Path, sources: list[str], forbidden: tuple[str, ...]) -> subprocess.CompletedProcess:
    config = tmp_path / "contracts.ini"
    config.write_text(
        "[importlinter]\nroot_package = bambo\n\n"
        "[importlinter:contract:layers]\nname = the core never imports the benchmarks or the CLI\n"
        "type = forbidden\nsource_modules =\n"
        + "".join(f"    {m}\n" for m in sources)
        + "forbidden_modules =\n"
        + "".join(f"    {m}\n" for m in forbidden)
    )
    return subprocess.run(
        [str(LINT), "--config", str(config), "--no-cache"], capture_output=True, text=True, cwd=tmp_path, check=False
    )


@pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (pip install -e '.[dev]')")
def test_the_core_never_imports_the_benchmarks_or_the_cli(tmp_path):
    core = core_modules()
    assert {"bambo.experiment", "bambo.runner", "bambo.benchmark", "bambo.strategies"} <= set(core)
    outcome = lint(tmp_path, core, OUTER)
    assert outcome.returncode == 0, outcome.stdout + outcome.stderr


@pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (pip install -e '.[dev]')")
def test_the_contract_catches_a_violation(tmp_path):
    outcome = lint(tmp_path, ["bambo.cli"], ("bambo.benchmarks",))  # the CLI may, and does, import them
    assert outcome.returncode != 0 and "bambo.cli" in outcome.stdout
