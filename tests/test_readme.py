"""The README's Python example runs as written, with the facade and at most two imports; the other
examples (README and docs/) use only names the package exports; the README's config is a real example."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


def python_blocks(page: Path = README) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


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

    assert DOCS, "docs/*.md not found"
    blocks = [(README, code) for code in python_blocks()[1:]]
    blocks += [(page, code) for page in DOCS for code in python_blocks(page)]
    assert len(blocks) >= 5, [page.name for page, _ in blocks]  # the docs' examples are found
    for page, code in blocks:
        for module, names in re.findall(r"^\s*from (bambo[\w.]*) import ([\w, ]+)", code, flags=re.M):
            imported = importlib.import_module(module)
            for name in names.replace(" ", "").split(","):
                assert hasattr(imported, name), f"{page.name}: from {module} import {name}"
        for name in re.findall(r"\bbambo\.(\w+)", code):
            assert hasattr(bambo, name) or importlib.util.find_spec(f"bambo.{name}"), f"{page.name}: bambo.{name}"


def test_the_readme_configs_are_examples_that_validate():
    from bambo.config import RunConfig

    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks
    examples = {path.name: path.read_text() for path in (ROOT / "examples").glob("*.yaml")}
    for block in blocks:
        found = [name for name, text in examples.items() if block.strip() in text]
        assert found, f"a README config is not one of examples/*.yaml:\n{block}"
        assert RunConfig.from_yaml(ROOT / "examples" / found[0]).models is not None  # a valid config
    assert blocks[0].strip() in examples["digits.yaml"], "the README's first config is not examples/digits.yaml"
