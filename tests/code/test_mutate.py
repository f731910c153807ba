"""bench/mutate.py's list of equivalent mutants (bench/equivalent_mutants.csv) stays usable.

The list is data a benchmark reads, so nothing else notices when it rots: a module moved
(pipelines/io.py became pipelines/core/io.py) or a function renamed silently turns its
equivalent mutants into survivors. These tests fail first.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from pipelines.core.paths import PROJECT

MUTATE = PROJECT.root / "bench" / "mutate.py"


def load_mutate():
    spec = importlib.util.spec_from_file_location("bench_mutate", MUTATE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


mutate = load_mutate()


def defined_functions(path: Path) -> set[str]:
    """Top-level functions as ``name`` and methods as ``Class.name``: what mutmut mutates."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names |= {
                f"{node.name}.{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            }
    return names


def function_of(mutant: str) -> str:
    """mutmut's mangled name back to the function: ``x__fsync__mutmut_4`` -> ``_fsync``,
    ``xǁItemTowerǁforward__mutmut_2`` -> ``ItemTower.forward``."""
    base = re.sub(r"__mutmut_\d+$", "", mutant)
    if base.startswith("xǁ"):
        _, cls, method = base.split("ǁ")
        return f"{cls}.{method}"
    assert base.startswith("x_"), mutant
    return base[2:]


def test_every_listed_mutant_names_an_existing_module_and_function() -> None:
    names = mutate.equivalent_mutants()
    assert len(names) >= 100  # 106 listed on 2026-12-02; a parse that finds few is broken
    functions: dict[str, set[str]] = {}
    for name in sorted(names):
        path = PROJECT.root / mutate.module_of(name)
        assert path.is_file(), f"{name}: no module {path.relative_to(PROJECT.root)}"
        if path not in functions:
            functions[path] = defined_functions(path)
        function = function_of(name.rsplit(".", 1)[1])
        assert function in functions[path], f"{name}: {path.name} defines no {function}"


def test_every_listed_module_is_one_the_script_mutates() -> None:
    mutated = {module for run in mutate.RUNS for module in run.modules}
    listed = {mutate.module_of(name) for name in mutate.equivalent_mutants()}
    assert listed <= mutated, listed - mutated


@pytest.mark.parametrize(
    "text",
    [
        "module,mutants,why\npipelines.core.io,x_f__mutmut_1,same\n",  # wrong header
        "module,mutant,why\npipelines.core.io,x_f__mutmut_1,\n",  # no reason
        "module,mutant,why\ncore.io,x_f__mutmut_1,same\n",  # not a pipelines module
        "module,mutant,why\npipelines.core.io,f_1,same\n",  # not a mutmut name
    ],
)
def test_a_malformed_list_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "equivalent.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=r"equivalent\.csv"):
        mutate.equivalent_mutants(path)


def test_a_reason_may_hold_commas_and_backticks(tmp_path: Path) -> None:
    path = tmp_path / "equivalent.csv"
    path.write_text(
        'module,mutant,why\npipelines.core.io,x_f__mutmut_1,"`a`, and `b`"\n', encoding="utf-8"
    )
    assert mutate.equivalent_mutants(path) == {"pipelines.core.io.x_f__mutmut_1"}
