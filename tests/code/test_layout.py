"""Imports flow dags → pipelines ← services; pipelines never imports the other two."""

from __future__ import annotations

import ast

from pipelines import paths


def imported_roots(source: str) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_pipelines_imports_nothing_from_dags_or_services() -> None:
    for path in (paths.ROOT / "pipelines").rglob("*.py"):
        assert not imported_roots(path.read_text()) & {"dags", "services"}, path
