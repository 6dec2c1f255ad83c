"""Traffic routers: where the canary weight goes besides the replica counts.

- replica ratio: the Service over both tracks does it; nothing more to write.
- Gateway API: the operator owns the weights of the HTTPRoute's backendRefs that point to
  `<name>-stable` and `<name>-canary`; every other field of the route stays the user's.
"""

from __future__ import annotations

import copy

from pilotboat.adapters.kube import Kube
from pilotboat.api import CanaryStrategy
from pilotboat.core.rollout import Decision, Routing
from pilotboat.core.traffic import (
    routable_weight,
    route_mirror,
    route_weights,
    routed_canary_weight,
)
from pilotboat.core.workload import Owner
from pilotboat.handlers.context import Reconcile

__all__ = ["Routing", "route", "routing_of"]


def routing_of(strategy: CanaryStrategy | None) -> Routing:
    if strategy is not None and strategy.traffic_routing.gateway_api is not None:
        return "gatewayAPI"
    return "replicaRatio"


def route(
    kube: Kube,
    rc: Reconcile,
    owner: Owner,
    strategy: CanaryStrategy | None,
    decision: Decision,
    *,
    canary_ready: int,
    replicas: int,
) -> int | None:
    """Set the HTTPRoute's weights for the decision, when the strategy routes by gateway;
    a weight goes up only once `canary_ready` replicas of the release can take it. Returns
    the canary's weight on the route (None: no route to set)."""
    if strategy is None or strategy.traffic_routing.gateway_api is None:
        return None
    gateway = strategy.traffic_routing.gateway_api
    current = kube.get("HTTPRoute", owner.namespace, gateway.http_route)
    if current is None:
        rc.event(
            "HTTPRouteMissing",
            f"HTTPRoute {gateway.http_route} does not exist; "
            "traffic follows the replica ratio only",
            warning=True,
        )
        return None
    weight = decision.state.canary_weight if decision.canary else 0
    if decision.state.promoting and decision.phase == "Progressing":
        weight = 100
    stable, canary = f"{owner.name}-stable", f"{owner.name}-canary"
    current_rules = current.get("spec", {}).get("rules", []) or []
    weight = routable_weight(
        weight,
        routed_canary_weight(current_rules, stable=stable, canary=canary),
        canary_ready=canary_ready,
        replicas=replicas,
    )
    rules = route_weights(
        current_rules, stable=stable, canary=canary, port=gateway.port, weight=weight
    )
    mirror = (
        decision.state.mirror_percent if decision.canary and not decision.state.promoting else 0
    )
    rules = route_mirror(rules, stable=stable, canary=canary, port=gateway.port, percent=mirror)
    if rules != current.get("spec", {}).get("rules"):
        kube.merge_patch(
            "HTTPRoute",
            owner.namespace,
            gateway.http_route,
            {
                "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                "spec": {"rules": copy.deepcopy(rules)},
            },
        )
        rc.event(
            "TrafficShifted",
            f"HTTPRoute {gateway.http_route}: canary {weight}%, stable {100 - weight}%",
        )
    return weight
