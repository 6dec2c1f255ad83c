"""The contract rules as a table: every case in ``contract_cases/`` is a pair of OpenAPI
documents and the rule the change breaks (or none), one family of changes per file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pilotboat.core.contracts import breaking_changes, load_document

CASES_DIR = Path(__file__).parent / "contract_cases"
BREAKING_RULES = {
    "path-removed", "operation-removed",
    "request-body-required", "request-media-type-removed", "request-field-required",
    "request-parameter-required", "request-parameter-moved", "request-field-removed",
    "request-enum-narrowed", "request-nullable-removed", "request-maximum-tightened",
    "request-minimum-tightened", "request-max-length-tightened", "request-min-length-tightened",
    "request-max-items-tightened", "request-min-items-tightened", "request-pattern-changed",
    "response-status-removed", "response-media-type-removed", "response-field-removed",
    "response-field-optional", "response-enum-widened", "response-nullable-added",
    "type-changed", "format-changed",
    "security-requirement-added", "security-scope-added", "security-scheme-changed",
}  # fmt: skip


def _document(partial: dict[str, Any]) -> dict[str, Any]:
    return {"openapi": "3.0.3", "info": {"title": "pets", "version": "1"}, **partial}


def _cases() -> list[Any]:
    found = []
    for path in sorted(CASES_DIR.glob("*.yaml")):
        for case in yaml.safe_load(path.read_text()):
            found.append(pytest.param(case, id=f"{path.stem}: {case['name']}"))
    return found


CASES = _cases()


@pytest.mark.parametrize("case", CASES)
def test_the_verdict_and_the_rule(case: dict[str, Any]) -> None:
    old = load_document(_document(case["old"]))
    new = load_document(_document(case["new"]))
    found = breaking_changes(old, new)
    described = [v.describe() for v in found]
    if case["rule"] is None:
        assert found == [], described
        assert breaking_changes(old, old) == []
    else:
        assert {v.rule for v in found} == {case["rule"]}, described
        assert all(v.message for v in found)


def test_the_table_covers_every_rule_both_ways() -> None:
    cases = [c.values[0] for c in CASES]
    assert len(cases) >= 40
    assert {c["rule"] for c in cases if c["rule"]} == BREAKING_RULES
    assert sum(1 for c in cases if c["rule"] is None) >= 20
    names = [c["name"] for c in cases]
    assert len(names) == len(set(names))


def test_the_rules_are_documented() -> None:
    from pilotboat.core import contracts

    doc = contracts.__doc__ or ""
    missing = [rule for rule in BREAKING_RULES if f"``{rule}``" not in doc]
    assert not missing
