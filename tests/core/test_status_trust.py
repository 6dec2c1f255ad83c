"""Which status fields the operator believes: those it wrote (managedFields), and commands."""

from __future__ import annotations

import doctest
from typing import Any

import pytest

import pilotboat.core.status_trust
from pilotboat.core.status_trust import foreign_status_fields, trusted_status


def entry(manager: str, *fields: str, subresource: str = "status") -> dict[str, Any]:
    return {"manager": manager, "operation": "Update", "subresource": subresource,
            "fieldsV1": {"f:status": {f"f:{f}": {} for f in fields}}}


def test_docstring_examples_hold() -> None:
    result = doctest.testmod(pilotboat.core.status_trust)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    ("managed", "foreign"),
    [
        ([], set()),
        (None, set()),
        ([entry("pilotboat", "phase", "analysis")], set()),
        ([entry("kubectl-pilotboat", "commands")], set()),
        ([entry("kubectl-patch", "analysis", "commands")], {"analysis"}),
        ([entry("OpenAPI-Generator/33.1.0/python", "phase")], {"phase"}),
        ([entry("pilotboat", "phase"), entry("intruder", "release", "conditions")],
         {"release", "conditions"}),
        ([{"manager": "kubectl-client-side-apply", "fieldsV1": {"f:spec": {"f:image": {}}}}],
         set()),
    ],
)
def test_fields_another_manager_owns_are_foreign(
    managed: list[dict[str, Any]] | None, foreign: set[str]
) -> None:
    assert foreign_status_fields(managed) == foreign


def test_a_forged_field_reads_as_absent_and_the_rest_stays() -> None:
    status = {"phase": "Degraded", "canaryWeight": 20, "commands": {"promote": "t"}}
    managed = [entry("pilotboat", "canaryWeight"), entry("intruder", "phase", "commands")]
    assert trusted_status(status, managed) == {"canaryWeight": 20, "commands": {"promote": "t"}}
