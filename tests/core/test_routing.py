"""The traffic routers: chosen from the spec, and what each writes for a step (a table)."""

from __future__ import annotations

import doctest
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

import pilotboat.core.routing
from pilotboat.api import CanaryStrategy
from pilotboat.api.microservice import MicroserviceSpec
from pilotboat.core.routing import (
    REPLICA_RATIO,
    GatewayAPIRouter,
    ReplicaRatioRouter,
    RouteShift,
    TrafficTarget,
    router_of,
)
from pilotboat.core.traffic import ReplicaSplit, replica_split
from pilotboat.core.workload import Owner

OWNER = Owner("cart", "shop", "uid-cart")
SPEC = MicroserviceSpec.model_validate(
    {"image": "localhost/pilotboat/echo:v2", "version": "v2", "replicas": 4}
)
GATEWAY = GatewayAPIRouter("cart-route", 80)


def route(canary_weight: int | None = None, **rule: Any) -> dict[str, Any]:
    refs: list[dict[str, Any]] = [{"name": "cart-stable", "port": 80}]
    if canary_weight is not None:
        refs = [{"name": "cart-stable", "port": 80, "weight": 100 - canary_weight},
                {"name": "cart-canary", "port": 80, "weight": canary_weight}]  # fmt: skip
    return {"metadata": {"name": "cart-route", "resourceVersion": "41"},
            "spec": {"rules": [{"backendRefs": refs, **rule}]}}  # fmt: skip


def weights(shift: RouteShift) -> list[tuple[str, int]]:
    assert shift.patch is not None
    refs = shift.patch["spec"]["rules"][0]["backendRefs"]
    return [(r["name"], r["weight"]) for r in refs]


def test_the_spec_chooses_the_router() -> None:
    assert router_of(None) is REPLICA_RATIO
    default = CanaryStrategy.model_validate({"steps": [{"setWeight": 50}]})
    assert router_of(default) is REPLICA_RATIO
    gateway = CanaryStrategy.model_validate(
        {"steps": [{"setWeight": 50}],
         "trafficRouting": {"gatewayAPI": {"httpRoute": "cart-route", "port": 80}}}
    )
    assert router_of(gateway) == GATEWAY
    assert (router_of(gateway).routing, router_of(gateway).route_ref) == (
        "gatewayAPI", ("HTTPRoute", "cart-route"))  # fmt: skip


def test_each_router_names_its_services_and_its_replicas() -> None:
    assert [s["metadata"]["name"] for s in REPLICA_RATIO.services(OWNER, SPEC)] == ["cart"]
    assert [s["metadata"]["name"] for s in GATEWAY.services(OWNER, SPEC)] == [
        "cart", "cart-stable", "cart-canary"]  # fmt: skip
    assert REPLICA_RATIO.split(4, 25) == ReplicaSplit(stable=3, canary=1)
    assert GATEWAY.split(4, 25) == ReplicaSplit(stable=4, canary=1), "stable stays whole"
    assert REPLICA_RATIO.route_ref is None
    assert REPLICA_RATIO.shift(OWNER, None, TrafficTarget(25, 0, 1, 4)) == RouteShift()


def test_the_docstring_examples_hold() -> None:
    result = doctest.testmod(pilotboat.core.routing)
    assert result.attempted > 0 and result.failed == 0


def test_only_a_router_with_a_route_can_mirror() -> None:
    assert GATEWAY.can_mirror and not REPLICA_RATIO.can_mirror
    assert not ReplicaRatioRouter("50%").can_mirror


@pytest.mark.parametrize(
    ("current", "target", "expected", "routed"),
    [
        pytest.param(route(), TrafficTarget(25, 0, canary_ready=1, replicas=4),
                     [("cart-stable", 75), ("cart-canary", 25)], 25, id="up, canary ready"),
        pytest.param(route(), TrafficTarget(25, 0, canary_ready=0, replicas=4),
                     [("cart-stable", 100), ("cart-canary", 0)], 0,
                     id="up waits for a ready canary pod"),
        pytest.param(route(50), TrafficTarget(100, 0, canary_ready=3, replicas=4),
                     None, 50, id="not enough ready pods for 100: unchanged, no write"),
        pytest.param(route(50), TrafficTarget(0, 0, canary_ready=0, replicas=4),
                     [("cart-stable", 100), ("cart-canary", 0)], 0, id="down at once"),
        pytest.param(route(25), TrafficTarget(25, 0, canary_ready=1, replicas=4),
                     None, 25, id="already there"),
    ],
)  # fmt: skip
def test_the_gateway_router_shifts_weights_only_as_far_as_ready_pods_go(
    current: dict[str, Any], target: TrafficTarget, expected: Any, routed: int
) -> None:
    shift = GATEWAY.shift(OWNER, current, target)
    assert shift.routed == routed
    if expected is None:
        assert shift.patch is None and shift.event is None
    else:
        assert weights(shift) == expected
        assert shift.patch is not None
        assert shift.patch["metadata"] == {"resourceVersion": "41"}, "optimistic concurrency"
        assert shift.event is not None and shift.event.reason == "TrafficShifted"


def test_the_gateway_router_mirrors_and_says_when_its_route_is_missing() -> None:
    mirrored = GATEWAY.shift(OWNER, route(25), TrafficTarget(25, 10, canary_ready=1, replicas=4))
    assert mirrored.patch is not None
    (mirror,) = mirrored.patch["spec"]["rules"][0]["filters"]
    assert mirror["requestMirror"] == {"backendRef": {"name": "cart-canary", "port": 80},
                                       "percent": 10}  # fmt: skip
    missing = GATEWAY.shift(OWNER, None, TrafficTarget(25, 0, canary_ready=1, replicas=4))
    assert (missing.patch, missing.routed) == (None, None)
    assert [(e.reason, e.warning) for e in missing.events] == [("HTTPRouteMissing", True)]


# --- maxSurge: a weight the replica count cannot give, met with extra canary pods ----------



def ratio_strategy(max_surge: Any) -> CanaryStrategy:
    return CanaryStrategy.model_validate({
        "steps": [{"setWeight": 10}],
        "trafficRouting": {"replicaRatio": {"maxSurge": max_surge}}})


@pytest.mark.parametrize(
    ("replicas", "weight", "max_surge", "stable", "canary", "actual"),
    [
        (2, 10, None, 1, 1, 50),  # no surge: the one canary pod is half the pods
        (2, 10, 1, 2, 1, 33),  # the stable track keeps both pods
        (2, 10, "25%", 2, 1, 33),  # 25 % of 2 rounds up to one pod
        (4, 10, 1, 4, 1, 20),
        (10, 10, 5, 9, 1, 10),  # the plain split is exact: no extra pod
        (3, 40, 1, 2, 1, 33),  # 33 % is nearer 40 than 2 of 4 (50 %)
        (4, 50, "100%", 2, 2, 50),
        (2, 10, "0%", 1, 1, 50),
    ],
)
def test_max_surge_splits_nearer_the_weight(
    replicas: int, weight: int, max_surge: Any, stable: int, canary: int, actual: int
) -> None:
    router = router_of(ratio_strategy(max_surge))
    split = router.split(replicas, weight)
    assert (split.stable, split.canary) == (stable, canary)
    assert split.effective_weight == actual


def test_without_max_surge_the_router_is_the_plain_one() -> None:
    assert router_of(CanaryStrategy.model_validate({"steps": [{"setWeight": 10}]})) \
        is REPLICA_RATIO
    assert router_of(ratio_strategy(2)) == ReplicaRatioRouter(2)
    assert GATEWAY.surge(4) == 0 and REPLICA_RATIO.surge(4) == 0


@pytest.mark.parametrize("bad", ["150%", "10", "%", -1, 1001, "ten%"])
def test_a_malformed_max_surge_is_refused_naming_the_field(bad: Any) -> None:
    with pytest.raises(ValidationError) as refused:
        ratio_strategy(bad)
    assert "maxSurge" in str(refused.value)


@given(replicas=st.integers(1, 40), weight=st.integers(1, 99), surge=st.integers(0, 10))
def test_a_surged_split_never_drops_capacity_nor_exceeds_the_surge(
    replicas: int, weight: int, surge: int
) -> None:
    plain, surged = replica_split(replicas, weight), replica_split(replicas, weight, surge=surge)
    assert surged.stable >= 1 and surged.canary >= 1
    assert replicas <= surged.stable + surged.canary <= max(
        replicas + surge, plain.stable + plain.canary)
    def miss(s: ReplicaSplit) -> float:
        return abs(100 * s.canary / (s.stable + s.canary) - weight)
    assert miss(surged) <= miss(plain)
