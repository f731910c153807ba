"""Static import closure of a module inside ``pipelines`` (no code is run)."""

from __future__ import annotations

import ast
from pathlib import Path

from pipelines.core.paths import PROJECT

PACKAGE = PROJECT.root / "pipelines"


def module_file(module: str) -> Path | None:
    """The file of a dotted ``pipelines`` module (a package's ``__init__.py``), or None."""
    relative = Path(*module.split("."))
    for candidate in (
        PROJECT.root / relative.with_suffix(".py"),
        PROJECT.root / relative / "__init__.py",
    ):
        if candidate.exists():
            return candidate
    return None


def _module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT.root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def direct_imports(path: Path) -> set[str]:
    """The ``pipelines`` modules a file imports, anywhere in it (function-level imports too)."""
    found: set[str] = set()
    package = (
        _module_name(path) if path.name == "__init__.py" else _module_name(path).rsplit(".", 1)[0]
    )
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("pipelines"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if not module.startswith("pipelines"):
                continue
            found.add(module)
            # `from pipelines.x import y` may name a submodule y
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {module for module in found if module_file(module) is not None}


def closure(module: str) -> set[Path]:
    """Every file inside ``pipelines`` that importing ``module`` executes, itself included."""
    todo, seen = [module], set()
    files: set[Path] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        # importing a.b.c runs a/__init__.py and a/b/__init__.py first
        parts = name.split(".")
        for depth in range(1, len(parts)):
            parent = ".".join(parts[:depth])
            if parent not in seen:
                todo.append(parent)
        path = module_file(name)
        if path is None:
            continue
        files.add(path)
        todo.extend(direct_imports(path))
    return files
