"""Gateway API routing: the operator moves the weights of a user's HTTPRoute between the
`<name>-stable` and `<name>-canary` Services as the canary steps go, and touches nothing
else in the route. The CRDs are the real standard-channel ones (hack/gateway-api.sh), so
the API server validates and defaults every route the operator writes."""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from tests.manifests import microservice
from tests.story import Story, phase_is

pytestmark = pytest.mark.usefixtures("operator", "gateway_api")

PORT = 8080
STEPS = [
    {"setWeight": 10},
    {"pause": {"untilPromoted": True}},
    {"setWeight": 50},
    {"pause": {"untilPromoted": True}},
]


def routed_service(name: str, version: str) -> dict[str, Any]:
    return microservice(
        name,
        version=version,
        replicas=4,
        rollout={
            "canary": {
                "steps": STEPS,
                "trafficRouting": {"gatewayAPI": {"httpRoute": f"{name}-route", "port": PORT}},
            }
        },
    )


def user_route(name: str) -> dict[str, Any]:
    """What a team writes: its gateway, hostnames, matches, and one backend, the stable."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": f"{name}-route"},
        "spec": {
            "parentRefs": [{"name": "shop-gateway", "sectionName": "http"}],
            "hostnames": ["checkout.shop.example"],
            "rules": [
                {
                    "matches": [
                        {
                            "path": {"type": "PathPrefix", "value": "/checkout"},
                            "headers": [{"name": "x-shop-tenant", "value": "eu"}],
                        }
                    ],
                    "backendRefs": [{"name": f"{name}-stable", "port": PORT}],
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
                    "backendRefs": [{"name": "static-files", "port": 80}],
                },
            ],
        },
    }


def weights(route: dict[str, Any] | None, name: str) -> tuple[int | None, int | None]:
    """(stable, canary) weights of the route's first rule; None for a missing backend."""
    refs = {r["name"]: r for r in ((route or {}).get("spec") or {})["rules"][0]["backendRefs"]}
    stable, canary = refs.get(f"{name}-stable"), refs.get(f"{name}-canary")
    return (
        None if stable is None else stable.get("weight", 1),
        None if canary is None else canary.get("weight", 1),
    )


def weights_are(name: str, expected: tuple[int, int]):  # type: ignore[no-untyped-def]
    return lambda route: route is not None and weights(route, name) == expected


def without_weights(spec: dict[str, Any], name: str) -> dict[str, Any]:
    """The route's spec as the user owns it: the operator's backend and weights taken out."""
    spec = copy.deepcopy(spec)
    for rule in spec["rules"]:
        refs = [r for r in rule.get("backendRefs", []) if r["name"] != f"{name}-canary"]
        for ref in refs:
            if ref["name"] == f"{name}-stable":
                ref.pop("weight", None)
        rule["backendRefs"] = refs
    return spec


def canary_shifts(story: Story, name: str) -> list[int]:
    """The canary weights of the operator's TrafficShifted events, in ascending order
    (Events carry whole seconds only, too coarse to order writes a reconcile apart)."""
    return sorted(
        int(re.search(r"canary (\d+)%", e["message"]).group(1))  # type: ignore[union-attr]
        for e in story.events(name)
        if e["reason"] == "TrafficShifted"
    )


def start_release(story: Story, name: str) -> dict[str, Any]:
    """v1 running and Healthy behind the user's route; then v2 is applied. Returns the
    route's spec as the API server stored it before the operator touched it."""
    story.given(user_route(name))
    before = story.get("HTTPRoute", f"{name}-route")
    assert before is not None
    story.given(routed_service(name, "v1"))
    story.wait_for("Microservice", name, phase_is("Healthy"), timeout=90, what="Healthy at v1")
    story.apply(routed_service(name, "v2"))
    return dict(before["spec"])


def assert_only_weights_changed(story: Story, name: str, before: dict[str, Any]) -> None:
    route = story.get("HTTPRoute", f"{name}-route")
    assert route is not None
    spec = route["spec"]
    assert spec["parentRefs"] == before["parentRefs"]
    assert spec["hostnames"] == before["hostnames"]
    assert [r.get("matches") for r in spec["rules"]] == [r.get("matches") for r in before["rules"]]
    assert spec["rules"][1] == before["rules"][1], "a rule without the service was changed"
    assert without_weights(spec, name) == without_weights(before, name)


def test_route_weights_follow_the_steps_and_promotion_returns_all_traffic_to_stable(
    story: Story,
) -> None:
    before = start_release(story, "checkout")

    for name in ("checkout-stable", "checkout-canary"):
        service = story.wait_for("Service", name, lambda s: s is not None, what="created")
        assert service is not None
        assert service["spec"]["ports"][0]["port"] == PORT
    stable_svc, canary_svc = (
        story.get("Service", "checkout-stable"),
        story.get("Service", "checkout-canary"),
    )
    assert stable_svc is not None and canary_svc is not None
    assert stable_svc["spec"]["selector"]["pilotboat.dev/track"] == "stable"
    assert canary_svc["spec"]["selector"]["pilotboat.dev/track"] == "canary"

    story.wait_for("Microservice", "checkout", phase_is("Paused", 1), timeout=90, what="paused")
    route = story.wait_for(
        "HTTPRoute", "checkout-route", weights_are("checkout", (90, 10)), what="at 90/10"
    )
    assert route is not None
    story.wait_for("Microservice", "checkout",
                   lambda o: (o or {})["status"].get("actualWeight") == 10, timeout=30,
                   what="actually at 10%")
    assert_only_weights_changed(story, "checkout", before)

    story.patch_status_command("checkout", "promote")
    story.wait_for("Microservice", "checkout", phase_is("Paused", 3), timeout=90, what="paused")
    story.wait_for(
        "HTTPRoute", "checkout-route", weights_are("checkout", (50, 50)), what="at 50/50"
    )
    assert_only_weights_changed(story, "checkout", before)

    story.patch_status_command("checkout", "promote")
    ms = story.wait_for(
        "Microservice",
        "checkout",
        lambda o: phase_is("Healthy")(o) and o["status"].get("stableVersion") == "v2",  # type: ignore[index]
        timeout=120,
        what="promoted to v2",
    )
    assert ms is not None
    story.wait_for(
        "HTTPRoute", "checkout-route", weights_are("checkout", (100, 0)), what="all on stable"
    )
    assert_only_weights_changed(story, "checkout", before)
    # One write per change: the canary backend joins at 0% while v1 is stable, then 10%,
    # 50%, 100% while the stable track takes v2, and 0% once it has.
    assert canary_shifts(story, "checkout") == [0, 0, 10, 50, 100]


def owns(fields: Mapping[str, Any], path: Sequence[str | None]) -> bool:
    """Whether a managedFields entry's `fieldsV1` covers `path` (None: any element of a
    list). A field whose value is `{}` is owned whole: a scalar, or an atomic list or map,
    as Gateway API declares `spec.rules` and each rule's `backendRefs`, `matches`, `filters`."""
    head, *rest = path
    if head is None:
        children = [v for k, v in fields.items() if k[:2] in ("k:", "v:", "i:")]
    else:
        children = [fields[f"f:{head}"]] if f"f:{head}" in fields else []
    return any(child == {} or not rest or owns(child, rest) for child in children)


def owned_leaves(fields: Mapping[str, Any], prefix: str = "") -> set[str]:
    """The fields an entry owns, as dotted paths (`spec.rules`), down to what it owns whole."""
    leaves: set[str] = set()
    for key, child in fields.items():
        if key == ".":
            continue
        path = f"{prefix}.{key[2:]}" if prefix else key[2:]
        leaves |= owned_leaves(child, path) if child else {path}
    return leaves


def owners(route: Mapping[str, Any], path: Sequence[str | None]) -> set[str]:
    entries = route["metadata"]["managedFields"]
    return {e["manager"] for e in entries if owns(e.get("fieldsV1") or {}, path)}


WEIGHT = ["spec", "rules", None, "backendRefs", None, "weight"]


def test_the_weights_belong_to_field_manager_pilotboat_which_argo_cd_can_ignore(
    story: Story,
) -> None:
    """docs/argocd.md: `ignoreDifferences: managedFieldsManagers: [pilotboat]` keeps Argo CD
    from resetting the weights mid-release. What that ignores is exactly what the managed
    fields say manager `pilotboat` owns."""
    start_release(story, "till")
    story.wait_for("Microservice", "till", phase_is("Paused", 1), timeout=90, what="paused")
    route = story.wait_for(
        "HTTPRoute", "till-route", weights_are("till", (90, 10)), what="at 90/10"
    )
    assert route is not None

    assert owners(route, WEIGHT) == {"pilotboat"}, route["metadata"]["managedFields"]
    ours = [e for e in route["metadata"]["managedFields"] if e["manager"] == "pilotboat"]
    assert [(e["operation"], e.get("subresource")) for e in ours] == [("Update", None)]
    # Gateway API makes spec.rules an atomic list: the API server cannot record a weight's
    # owner apart from its rule, so the operator's write owns every rule whole (matches,
    # filters, the other backends too) and nothing else. That is what Argo CD then ignores.
    assert owned_leaves(ours[0]["fieldsV1"]) == {"spec.rules"}, ours[0]
    # The rest of the route stays the user's (its applier, here the tests' own; Git's under
    # Argo CD): compared and synced as ever.
    for field in ("parentRefs", "hostnames"):
        assert owners(route, ["spec", field]) == {"pilotboat-tests"}, field

    story.patch_status_command("till", "abort")
    route = story.wait_for(
        "HTTPRoute", "till-route", weights_are("till", (100, 0)), what="all on stable"
    )
    assert route is not None
    assert owners(route, WEIGHT) == {"pilotboat"}, "after the release the rules stay ours"


def test_an_abort_puts_all_route_traffic_back_on_stable(story: Story) -> None:
    before = start_release(story, "basket")
    story.wait_for("Microservice", "basket", phase_is("Paused", 1), timeout=90, what="paused")
    story.wait_for("HTTPRoute", "basket-route", weights_are("basket", (90, 10)), what="at 90/10")

    story.patch_status_command("basket", "abort")
    ms = story.wait_for(
        "Microservice", "basket", phase_is("Degraded"), timeout=60, what="rolled back"
    )
    assert ms is not None and ms["status"]["canaryWeight"] == 0
    story.wait_for(
        "HTTPRoute", "basket-route", weights_are("basket", (100, 0)), what="all on stable"
    )
    assert_only_weights_changed(story, "basket", before)
    assert canary_shifts(story, "basket") == [0, 0, 10]
    canary = story.wait_for(
        "Deployment",
        "basket-canary",
        lambda d: d is not None and d["spec"]["replicas"] == 0,
        what="scaled to zero",
    )
    assert canary is not None


def test_the_route_sends_nothing_to_a_canary_that_has_no_ready_pod(story: Story) -> None:
    before = start_release(story, "ledger")
    unschedulable = routed_service("ledger", "v2")
    unschedulable["spec"]["nodeSelector"] = {"type": "no-such-node"}
    story.apply(unschedulable)  # the canary's pods stay Pending: nothing can serve there

    ms = story.wait_for(
        "Microservice",
        "ledger",
        lambda o: "waiting for the canary" in str(((o or {}).get("status") or {}).get("message")),
        timeout=60,
        what="waiting for its canary",
    )
    assert ms is not None
    time.sleep(3)  # a few reconciles later, still nothing routed to the canary
    route = story.get("HTTPRoute", "ledger-route")
    assert weights(route, "ledger") == (100, 0)
    # The status tells the step's target from what the route really sends
    ms = story.get("Microservice", "ledger")
    assert ms is not None
    assert (ms["status"]["canaryWeight"], ms["status"]["actualWeight"]) == (10, 0), ms["status"]
    assert_only_weights_changed(story, "ledger", before)

    story.patch_status_command("ledger", "abort")
    story.wait_for("Microservice", "ledger", phase_is("Degraded"), timeout=60, what="rolled back")
    assert weights(story.get("HTTPRoute", "ledger-route"), "ledger") == (100, 0)


def test_a_mirror_step_copies_stable_traffic_to_the_canary_until_the_release_ends(
    story: Story,
) -> None:
    steps = [
        {"mirror": {"percent": 20}},
        {"pause": {"untilPromoted": True}},
        {"setWeight": 50},
        {"pause": {"untilPromoted": True}},
    ]

    def service(version: str) -> dict[str, Any]:
        body = routed_service("cart", version)
        body["spec"]["rollout"]["canary"]["steps"] = steps
        return body

    def mirror(route: dict[str, Any] | None) -> int | None:
        rule = ((route or {}).get("spec") or {})["rules"][0]
        for f in rule.get("filters", []) or []:
            if f.get("type") == "RequestMirror":
                ref = f["requestMirror"]["backendRef"]
                assert (ref["name"], ref["port"]) == ("cart-canary", PORT)
                return int(f["requestMirror"]["percent"])
        return None

    story.given(user_route("cart"), service("v1"))
    story.wait_for(
        "Microservice",
        "cart",
        lambda o: ((o or {}).get("status") or {}).get("phase") == "Healthy",
        timeout=90,
        what="Healthy",
    )
    story.apply(service("v2"))

    route = story.wait_for(
        "HTTPRoute",
        "cart-route",
        lambda r: mirror(r) == 20,
        timeout=90,
        what="mirroring 20% to the canary",
    )
    assert weights(route, "cart")[1] in (None, 0), "mirroring sends no live traffic"
    story.wait_for(
        "Microservice",
        "cart",
        lambda o: ((o or {}).get("status") or {}).get("currentStepIndex") == 1,
        timeout=60,
        what="paused after the mirror step",
    )
    assert any(e["reason"] == "MirrorSet" for e in story.events("cart"))

    story.patch_status_command("cart", "promote")
    route = story.wait_for(
        "HTTPRoute",
        "cart-route",
        lambda r: weights(r, "cart") == (50, 50),
        timeout=90,
        what="at 50/50",
    )
    assert mirror(route) == 20  # the share holds until the release ends

    story.patch_status_command("cart", "abort")
    route = story.wait_for(
        "HTTPRoute",
        "cart-route",
        lambda r: mirror(r) is None and weights(r, "cart")[1] == 0,
        timeout=90,
        what="without mirror, all traffic on stable",
    )
    rule = route["spec"]["rules"][0]  # type: ignore[index]
    assert rule["matches"][0]["path"] == {"type": "PathPrefix", "value": "/checkout"}
    assert route["spec"]["hostnames"] == ["checkout.shop.example"]  # type: ignore[index]
