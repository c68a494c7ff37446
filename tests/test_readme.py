"""The README's Python example runs as written, with the facade and at most two imports."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_first_python_example_runs_with_the_facade(monkeypatch, tmp_path):
    code = python_blocks()[0]
    imports = [line for line in code.splitlines() if re.match(r"\s*(import|from)\s", line)]
    assert imports and len(imports) <= 2, imports
    monkeypatch.setenv("BAMBO_CACHE_DIR", str(tmp_path))
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the README's own example
    result, problem = namespace["result"], namespace["problem"]
    assert result.n_evaluations == 12 and result.pareto_Y.shape[1] == 2
    assert (result.pareto_Y > 0.1).all()  # better than chance on both tasks
    assert set(namespace["merged"]) == set(problem.merger.task_vectors.base)


def test_every_other_example_uses_names_the_package_exports():
    import bambo

    for code in python_blocks()[1:]:
        for name in re.findall(r"\bbambo\.(\w+)", code):
            assert hasattr(bambo, name), name
