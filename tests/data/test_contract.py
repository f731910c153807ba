"""The data contract as published: every check, the problem it names and the reason it gives.

`pipelines/data/contract.py` is declarative: a list of rules whose words reach
every quarantine report. `tests/data/contract.md` is that list rendered for fixed
inputs, so a rule that changes (a bound, a pattern, a reason, a dropped check) shows
up as a diff to review here, not silently in a stranger's report. After a deliberate
change, rewrite the file with

    RECOPS_UPDATE_CONTRACT=1 python -m pytest tests/data/test_contract.py

and review the diff. How each kind of rule behaves on real rows is tested in
`test_validate.py`.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from pipelines.data.contract import (
    TABLES,
    Rule,
    ValueRule,
    interaction_rules,
    item_rules,
    user_rules,
    value_rule,
    value_rules,
)

PUBLISHED = Path(__file__).with_name("contract.md")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
BANDS = (18, 25, 35, 45, 50, 56)
USER = "u_0123456789abcdef"


def rendered() -> str:
    """The contract for fixed inputs, one Markdown table row per check."""
    rules: list[Rule | ValueRule] = [
        *item_rules(NOW),
        *user_rules(BANDS, 3),
        *interaction_rules((1.0, 5.0), NOW, ["1", "2"], [USER], ratings_required=True),
        *(rule for table in TABLES for rule in value_rules(table)),
    ]
    lines = [
        "# The data contract (rendered by tests/data/test_contract.py; do not edit by hand)",
        "",
        f"For items and interactions checked on {NOW.date()}, age bands {BANDS}, "
        "3-character regions, ratings 1–5 required, known items 1 and 2 and one known user.",
        "",
        "| table | column | check | scope | problem | reason | arguments |",
        "|---|---|---|---|---|---|---|",
    ]
    for rule in rules:
        if isinstance(rule, Rule):
            assert isinstance(rule.keep_first, tuple), rule
            keep = f", keep first of {list(rule.keep_first)}" if rule.keep_first else ""
            scope, arguments = rule.scope + keep, json.dumps(rule.kwargs, sort_keys=True)
        else:
            scope, arguments = "cells", ""
        cells = [rule.table, rule.column or "", rule.kind, scope, rule.problem, rule.reason]
        cells.append(arguments)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def test_the_contract_is_the_published_one() -> None:
    text = rendered()
    if os.environ.get("RECOPS_UPDATE_CONTRACT"):
        PUBLISHED.write_text(text, encoding="utf-8")
    published = PUBLISHED.read_text(encoding="utf-8").splitlines()
    changed = [line for line in text.splitlines() if line not in published]
    gone = [line for line in published if line not in text.splitlines()]
    assert not changed and not gone, (
        "the contract differs from tests/data/contract.md; after a deliberate change run "
        f"RECOPS_UPDATE_CONTRACT=1 pytest {__file__}\nnew: {changed}\ngone: {gone}"
    )
    assert text.splitlines() == published  # same rules, same order


def test_explicit_feedback_adds_exactly_the_blank_rating_check() -> None:
    args = ((1.0, 5.0), NOW, ["1"], [USER])
    implicit = interaction_rules(*args)
    explicit = interaction_rules(*args, ratings_required=True)
    assert [rule for rule in explicit if rule not in implicit] == [
        rule for rule in explicit if rule.problem.startswith("have no rating")
    ]
    assert len(explicit) == len(implicit) + 1


def test_value_rules_are_found_by_table_and_column() -> None:
    assert value_rule("users", "age").kind == "ValuesAreFiniteNumbers"
    assert {rule.column for rule in value_rules("users")} == {"age", "gender", "occupation"}
    assert value_rules("nowhere") == []
