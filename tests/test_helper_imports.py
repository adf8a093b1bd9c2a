"""Tests take their shared helpers from the ``tests`` package, which a plain checkout imports: not
from ``latent_verbalizer.components.*.tests`` (resolved only under an editable install), not from
other test modules or a conftest, not through ``sys.path`` edits."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def checked_files() -> list[Path]:
    return sorted([*(REPO / "tests").rglob("*.py"), *(REPO / "components").glob("*/tests/*.py")])


def helper_import_problems(path: Path) -> list[str]:
    problems = []
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
            if node.level:
                problems.append(f"relative import from {'.' * node.level}{node.module or ''}")
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "insert"
              and ast.unparse(node.func.value) == "sys.path"):
            problems.append("sys.path.insert")
            continue
        else:
            continue
        for name in names:
            parts = name.split(".")
            if ".tests" in name and name.startswith("latent_verbalizer.components."):
                problems.append(f"import of {name}")
            elif any(p.startswith("test_") or p == "conftest" for p in parts):
                problems.append(f"import of the test module {name}")
    return [f"{path.relative_to(REPO)}: {p}" for p in problems]


def test_helpers_come_from_the_tests_package():
    problems = [p for path in checked_files() for p in helper_import_problems(path)]
    assert not problems, "move shared helpers into tests/ and import them from there:\n" + "\n".join(problems)
