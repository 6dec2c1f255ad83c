"""Which namespaces an operator's webhooks apply to: watched by name (``shop``, ``!sandbox``),
every webhook carries a ``namespaceSelector`` on ``kubernetes.io/metadata.name`` and no CEL
condition on the namespace; watched by a glob, the CEL ``watched-namespaces`` condition and
no selector; watching every namespace, neither. (The chart rendering the same is
tests/cluster/test_install.py's, which has Helm.)"""

from __future__ import annotations

import doctest
from typing import Any

import pytest

import pilotboat.handlers.webhooks
from pilotboat.handlers.webhooks import (
    _configurations,
    namespace_match_expression,
    namespace_selector,
)

CLIENT = {"url": "https://127.0.0.1:9443", "caBundle": "Y2E="}
NAME = "kubernetes.io/metadata.name"
CEL = "watched-namespaces"


def _hooks(namespaces: list[str]) -> list[dict[str, Any]]:
    configurations = _configurations("pilotboat-test", CLIENT, namespaces)
    hooks = [h for c in configurations for h in c["webhooks"]]
    assert len(hooks) == 10
    return hooks


def _scoped_by_cel(hook: dict[str, Any]) -> bool:
    return any(c["name"] == CEL for c in hook["matchConditions"])


@pytest.mark.parametrize(
    ("namespaces", "expressions"),
    [
        (["shop", "pay"], [{"key": NAME, "operator": "In", "values": ["pay", "shop"]}]),
        (["shop,pay", " shop "], [{"key": NAME, "operator": "In", "values": ["pay", "shop"]}]),
        (["shop", "!sandbox", "!old"], [{"key": NAME, "operator": "In", "values": ["shop"]},
                                        {"key": NAME, "operator": "NotIn",
                                         "values": ["old", "sandbox"]}]),
        (["!sandbox"], [{"key": NAME, "operator": "NotIn", "values": ["sandbox"]}]),
    ],
    ids=["names", "comma-separated", "names-and-exclusions", "exclusions-only"],
)
def test_names_are_selected_by_a_namespace_selector_not_cel(
    namespaces: list[str], expressions: list[dict[str, Any]]
) -> None:
    assert namespace_selector(namespaces) == {"matchExpressions": expressions}
    for hook in _hooks(namespaces):
        assert hook["namespaceSelector"] == {"matchExpressions": expressions}, hook["name"]
        assert not _scoped_by_cel(hook), hook["name"]


@pytest.mark.parametrize(
    "namespaces",
    [["shop-*"], ["shop", "t-?"], ["shop", "!shop-*"], ["t-*", "!t-skip"]],
    ids=["glob", "a name and a glob", "a glob excluded", "glob and exclusion"],
)
def test_any_glob_keeps_the_cel_condition_and_no_selector(namespaces: list[str]) -> None:
    expression = namespace_match_expression(namespaces)
    assert expression is not None
    assert namespace_selector(namespaces) is None
    for hook in _hooks(namespaces):
        assert "namespaceSelector" not in hook, hook["name"]
        assert hook["matchConditions"][0] == {"name": CEL, "expression": expression}


def test_every_namespace_has_neither() -> None:
    assert namespace_selector([]) is None
    for hook in _hooks([]):
        assert "namespaceSelector" not in hook, hook["name"]
        assert not _scoped_by_cel(hook), hook["name"]


def test_docstring_examples_hold() -> None:
    result = doctest.testmod(pilotboat.handlers.webhooks)
    assert result.attempted > 0 and result.failed == 0
