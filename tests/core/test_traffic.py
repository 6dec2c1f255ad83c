"""HTTPRoute weights: only the service's two backends change, and only when they must."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pilotboat.core.traffic import route_weights

STABLE, CANARY = "cart-stable", "cart-canary"


def ref(name: str, weight: int | None = None, port: int = 80) -> dict[str, Any]:
    """A backendRef as the API server stores it: group and kind defaulted."""
    out: dict[str, Any] = {"group": "", "kind": "Service", "name": name, "port": port}
    if weight is not None:
        out["weight"] = weight
    return out


def weigh(rules: list[dict[str, Any]], weight: int) -> list[dict[str, Any]]:
    return route_weights(rules, stable=STABLE, canary=CANARY, port=80, weight=weight)


@pytest.mark.parametrize("weight", [0, 10, 50, 100])
def test_a_route_the_operator_wrote_is_left_as_it_is(weight: int) -> None:
    stored = [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
               "backendRefs": [ref(STABLE, 100 - weight), ref(CANARY, weight)]}]
    assert weigh(copy.deepcopy(stored), weight) == stored


def test_only_the_weights_of_the_two_backends_change() -> None:
    rules = [
        {"matches": [{"headers": [{"name": "x-tenant", "value": "eu"}]}],
         "filters": [{"type": "RequestHeaderModifier",
                      "requestHeaderModifier": {"add": [{"name": "x-a", "value": "1"}]}}],
         "backendRefs": [ref("legacy", 5), ref(STABLE, 95), ref(CANARY, 0, port=81)]},
        {"backendRefs": [ref("static", 1)]},
    ]
    new = weigh(copy.deepcopy(rules), 30)
    assert new[1] == rules[1]
    assert new[0]["matches"] == rules[0]["matches"]
    assert new[0]["filters"] == rules[0]["filters"]
    assert new[0]["backendRefs"] == [ref("legacy", 5), ref(STABLE, 70), ref(CANARY, 30)]


def test_the_canary_joins_after_the_stable_and_only_once() -> None:
    assert weigh([{"backendRefs": [ref(STABLE)]}], 10)[0]["backendRefs"] == [
        ref(STABLE, 90), {"name": CANARY, "port": 80, "weight": 10}
    ]
    doubled = [{"backendRefs": [ref(STABLE, 50), ref(CANARY, 50), ref(CANARY, 50)]}]
    assert weigh(doubled, 20)[0]["backendRefs"] == [ref(STABLE, 80), ref(CANARY, 20)]
