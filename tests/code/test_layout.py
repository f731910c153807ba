"""The package is a library in layers (design.md §9): imports only go down.

core/ (schema, paths, config, io, device) → data, features → models → evaluation
→ training → inference → monitoring (drift and quality; it scores the served champion)
→ loop (the operations loop's steps, deploy, workspace, replay, stream) → stages. Nothing
in the library imports a stage; pipelines imports nothing from dags/ or services/.
"""

from __future__ import annotations

import ast
from pathlib import Path

from pipelines.core.paths import PROJECT
from tests.code.imports import direct_imports

PACKAGE = PROJECT.root / "pipelines"
CORE = {"core"}
RANK = {
    "core": 0,
    "data": 1,
    "features": 1,
    "models": 2,
    "evaluation": 3,
    "training": 4,
    "inference": 5,
    "monitoring": 6,
    "loop": 7,
    "stages": 8,
}


def layer_of(module_or_path: str | Path) -> str:
    if isinstance(module_or_path, Path):
        parts = module_or_path.relative_to(PACKAGE).with_suffix("").parts
    else:
        parts = tuple(module_or_path.split(".")[1:])
    if not parts or parts[0] in CORE or parts[0] == "__init__":
        return "core"
    return parts[0]


def imported_roots(source: str) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_pipelines_imports_nothing_from_dags_or_services() -> None:
    for path in PACKAGE.rglob("*.py"):
        assert not imported_roots(path.read_text()) & {"dags", "services"}, path


def test_every_folder_is_a_known_layer() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= set(RANK), folders - set(RANK)


def test_imports_only_go_down_the_layers() -> None:
    for path in PACKAGE.rglob("*.py"):
        layer = layer_of(path)
        for module in direct_imports(path):
            target = layer_of(module)
            if target == layer:
                continue
            assert RANK[target] < RANK[layer], f"{path.relative_to(PROJECT.root)} imports {module}"


def test_nothing_in_the_library_imports_a_stage() -> None:
    for path in PACKAGE.rglob("*.py"):
        if layer_of(path) == "stages":
            continue
        stages = [m for m in direct_imports(path) if layer_of(m) == "stages"]
        assert not stages, f"{path.relative_to(PROJECT.root)} imports {stages}"


def test_only_the_config_loader_and_io_parse_yaml() -> None:
    # params.yaml is read at the edge by core.config; DVC's own files by core.io
    allowed = {PACKAGE / "core" / "config.py", PACKAGE / "core" / "io.py"}
    for path in PACKAGE.rglob("*.py"):
        if path not in allowed:
            assert not imported_roots(path.read_text()) & {"yaml", "ruamel"}, path
