"""How a canary's traffic is split: one :class:`TrafficRouter` per way, chosen from the spec.

A router answers, purely, the questions a release pass asks of the traffic:

- which Services the Microservice needs (:meth:`TrafficRouter.services`);
- which route object, if any, carries the split and must be read (:attr:`route_ref`);
- how many replicas each track runs for a weight (:meth:`TrafficRouter.split`);
- whether it can mirror requests to the canary, or a mirror step is skipped
  (:attr:`TrafficRouter.can_mirror`);
- what to write to the route for the weight and mirror the release wants now, and which
  weight the canary then really has on it (:meth:`TrafficRouter.shift`).

:class:`ReplicaRatioRouter` has no route: one Service spreads requests over the ready pods
of both tracks, so the weight is the replica ratio. :class:`GatewayAPIRouter` weights the
backends of a Gateway API HTTPRoute between a per-track Service each. A new way of routing
(a mesh, another gateway) is one more class here and one more branch in :func:`router_of`;
the release's state machine (:func:`pilotboat.core.rollout.decide`) asks the router it is
handed and never branches on a router's name.

Replicas per track, with the canary's ready pods known (both routers surge the canary
first, :func:`pilotboat.core.traffic.surge_first`):

>>> REPLICA_RATIO.split(4, 25), REPLICA_RATIO.split(4, 25, canary_ready=0)
(ReplicaSplit(stable=3, canary=1), ReplicaSplit(stable=4, canary=1))
>>> REPLICA_RATIO.split(4, 50, canary_ready=1), REPLICA_RATIO.split(4, 50, canary_ready=2)
(ReplicaSplit(stable=3, canary=2), ReplicaSplit(stable=2, canary=2))
>>> REPLICA_RATIO.split(6, 50, canary_ready=2)
ReplicaSplit(stable=4, canary=3)
>>> GatewayAPIRouter("cart-route", 80).split(4, 25, canary_ready=0)
ReplicaSplit(stable=4, canary=1)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pilotboat.api import CanaryStrategy, MicroserviceSpec
from pilotboat.core import reasons
from pilotboat.core.events import ReleaseEvent
from pilotboat.core.traffic import (
    ReplicaSplit,
    gateway_split,
    replica_split,
    routable_weight,
    route_mirror,
    route_weights,
    routed_canary_weight,
    surge_first,
    surge_pods,
)
from pilotboat.core.workload import Owner, render_service

__all__ = [
    "REPLICA_RATIO",
    "GatewayAPIRouter",
    "ReplicaRatioRouter",
    "RouteShift",
    "Routing",
    "TrafficRouter",
    "TrafficTarget",
    "router_of",
]

Routing = Literal["replicaRatio", "gatewayAPI"]
"""A router's name: the field of ``trafficRouting`` that chooses it."""


@dataclass(frozen=True)
class TrafficTarget:
    """What the release wants of the traffic this pass."""

    weight: int
    """The canary's share (0–100) the release asks for now."""
    mirror: int
    """The percent of the stable's requests copied to the canary (0: none)."""
    canary_ready: int
    """The canary's ready pods of the desired revision."""
    replicas: int
    """spec.replicas."""


@dataclass(frozen=True)
class RouteShift:
    """The router's part of a pass."""

    patch: Mapping[str, Any] | None = None
    """A merge patch of the object :attr:`TrafficRouter.route_ref` names; None: none to write."""
    event: ReleaseEvent | None = None
    """The Event the patch tells, once written."""
    routed: int | None = None
    """The canary's weight on the route after the patch; None: no route carries the traffic
    (the replica ratio does)."""
    events: tuple[ReleaseEvent, ...] = ()
    """Events told whether or not anything is written (a missing route)."""


class TrafficRouter(Protocol):
    """A way of splitting traffic between the stable and the canary track."""

    @property
    def routing(self) -> Routing:
        """The name ``trafficRouting`` chooses this router by (for people; no decision
        branches on it)."""
        ...

    @property
    def can_mirror(self) -> bool:
        """Whether the router can copy a share of the stable's requests to the canary; a
        mirror step it cannot carry out is skipped, saying so."""
        ...

    @property
    def route_ref(self) -> tuple[str, str] | None:
        """The route object (kind, name, in the Microservice's namespace) the pass must read
        and hand to :meth:`shift`; None: the router has none."""
        ...

    def services(self, owner: Owner, spec: MicroserviceSpec) -> list[dict[str, Any]]:
        """The Services the Microservice needs, rendered."""
        ...

    def split(self, replicas: int, weight: int, *, canary_ready: int | None = None) -> ReplicaSplit:
        """Replicas per track for `weight` out of `replicas` (spec.replicas, as `kubectl
        scale` or an autoscaler last set it); with `canary_ready` (the canary's ready pods
        now) the canary surges first (:func:`pilotboat.core.traffic.surge_first`)."""
        ...

    def surge(self, replicas: int) -> int:
        """Extra pods the canary may run above `replicas` to come nearer a weight."""
        ...

    def shift(
        self, owner: Owner, route: Mapping[str, Any] | None, target: TrafficTarget
    ) -> RouteShift:
        """What to write to `route` (as read; None: absent) for `target`."""
        ...


@dataclass(frozen=True)
class ReplicaRatioRouter:
    """One Service over both tracks; the canary's share of ready pods is its weight.
    `max_surge` (``replicaRatio.maxSurge``) lets the canary run extra pods to come nearer
    a weight the replica count cannot give."""

    max_surge: int | str | None = None

    @property
    def routing(self) -> Routing:
        return "replicaRatio"

    @property
    def can_mirror(self) -> bool:
        return False  # one Service over both tracks has nowhere to copy requests to

    @property
    def route_ref(self) -> tuple[str, str] | None:
        return None

    def services(self, owner: Owner, spec: MicroserviceSpec) -> list[dict[str, Any]]:
        return [render_service(owner, spec)]

    def split(self, replicas: int, weight: int, *, canary_ready: int | None = None) -> ReplicaSplit:
        share = replica_split(replicas, weight, surge=self.surge(replicas))
        return surge_first(share, replicas, canary_ready)

    def surge(self, replicas: int) -> int:
        return surge_pods(self.max_surge, replicas)

    def shift(
        self, owner: Owner, route: Mapping[str, Any] | None, target: TrafficTarget
    ) -> RouteShift:
        return RouteShift()


REPLICA_RATIO = ReplicaRatioRouter()


@dataclass(frozen=True)
class GatewayAPIRouter:
    """An HTTPRoute's backend weights between `<name>-stable` and `<name>-canary`; the
    Service over both tracks stays for whoever calls it directly."""

    http_route: str
    port: int

    @property
    def routing(self) -> Routing:
        return "gatewayAPI"

    @property
    def can_mirror(self) -> bool:
        return True  # the HTTPRoute's RequestMirror filter

    @property
    def route_ref(self) -> tuple[str, str] | None:
        return ("HTTPRoute", self.http_route)

    def services(self, owner: Owner, spec: MicroserviceSpec) -> list[dict[str, Any]]:
        return [
            render_service(owner, spec),
            render_service(owner, spec, name=f"{owner.name}-stable", track="stable"),
            render_service(owner, spec, name=f"{owner.name}-canary", track="canary"),
        ]

    def split(self, replicas: int, weight: int, *, canary_ready: int | None = None) -> ReplicaSplit:
        return surge_first(gateway_split(replicas, weight), replicas, canary_ready)

    def surge(self, replicas: int) -> int:
        return 0  # the stable track keeps all its pods; the canary's are extra already

    def shift(
        self, owner: Owner, route: Mapping[str, Any] | None, target: TrafficTarget
    ) -> RouteShift:
        """The route's weights for `target`; a weight goes up only once enough ready canary
        replicas can take it (:func:`routable_weight`), and goes down at once."""
        if route is None:
            missing = ReleaseEvent(
                reasons.HTTP_ROUTE_MISSING,
                f"HTTPRoute {self.http_route} does not exist; "
                "traffic follows the replica ratio only",
                warning=True,
            )
            return RouteShift(events=(missing,))
        stable, canary = f"{owner.name}-stable", f"{owner.name}-canary"
        current = route.get("spec", {}).get("rules", []) or []
        weight = routable_weight(
            target.weight,
            routed_canary_weight(current, stable=stable, canary=canary),
            canary_ready=target.canary_ready,
            replicas=target.replicas,
        )
        rules = route_weights(current, stable=stable, canary=canary, port=self.port, weight=weight)
        rules = route_mirror(
            rules, stable=stable, canary=canary, port=self.port, percent=target.mirror
        )
        if rules == route.get("spec", {}).get("rules"):
            return RouteShift(routed=weight)
        patch = {
            "metadata": {"resourceVersion": route["metadata"]["resourceVersion"]},
            "spec": {"rules": rules},
        }
        shifted = ReleaseEvent(
            reasons.TRAFFIC_SHIFTED,
            f"HTTPRoute {self.http_route}: canary {weight}%, stable {100 - weight}%",
        )
        return RouteShift(patch=patch, event=shifted, routed=weight)


def router_of(strategy: CanaryStrategy | None) -> TrafficRouter:
    """The router `spec.rollout`'s strategy names (replica ratio without one)."""
    gateway = strategy.traffic_routing.gateway_api if strategy is not None else None
    if gateway is not None:
        return GatewayAPIRouter(gateway.http_route, gateway.port)
    ratio = strategy.traffic_routing.replica_ratio if strategy is not None else None
    if ratio is not None and ratio.max_surge is not None:
        return ReplicaRatioRouter(ratio.max_surge)
    return REPLICA_RATIO
