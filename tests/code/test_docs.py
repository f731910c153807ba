"""The docs stay true to the tree (docs/testing.md).

README.md is a manual: at most 200 lines, every `make help` target in it. Every relative
link in README.md, RESULTS.md and docs/ resolves (the file, and the heading an anchor
names), and every project path README.md and docs/ name in backticks exists, so a file
that moves (pipelines/paths.py became pipelines/core/paths.py) cannot leave the manual
pointing at nothing. RESULTS.md is a record of what was measured where, so its paths are
not checked; its links are.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipelines.core.paths import PROJECT

ROOT = PROJECT.root
README = ROOT / "README.md"
MANUAL = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINKED = [*MANUAL, ROOT / "RESULTS.md"]
PROJECT_PATH = re.compile(r"`((?:pipelines|services|dags|tests|bench|profiles|docs)/[^`\s]*)`")


def names(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(ROOT)) for path in paths]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {slug(heading) for heading in re.findall(r"^#+ (.+)$", text, re.M)}


def test_the_readme_is_a_manual_of_at_most_200_lines() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 200


def test_every_make_target_is_in_the_readme() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = re.findall(r"^([a-zA-Z_-]+):.*## ", makefile, re.M)
    assert "lint" in targets and "run" in targets
    readme = README.read_text(encoding="utf-8")
    missing = [target for target in targets if f"`make {target}`" not in readme]
    assert not missing, f"README.md does not describe: {missing}"


@pytest.mark.parametrize("doc", LINKED, ids=names(LINKED))
def test_every_relative_link_resolves(doc: Path) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not ours to check offline
        path, _, anchor = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        assert linked.exists(), f"{doc.name}: {target} does not exist"
        if anchor:
            assert anchor in anchors(linked), f"{doc.name}: no heading #{anchor} in {path}"


@pytest.mark.parametrize("doc", MANUAL, ids=names(MANUAL))
def test_every_project_path_the_manual_names_exists(doc: Path) -> None:
    for named in PROJECT_PATH.findall(doc.read_text(encoding="utf-8")):
        path = named.split("::")[0].rstrip(".,;:")
        if any(mark in path for mark in "<>*{}|"):
            continue  # a pattern (pipelines/models/<name>.py), not a path
        assert (ROOT / path).exists(), f"{doc.name} names {path}, which does not exist"
