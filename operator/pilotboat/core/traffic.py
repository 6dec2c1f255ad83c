"""Traffic split arithmetic: how many replicas each track runs for a canary weight.

With replica-ratio routing (no mesh, no gateway) one Service spreads requests over the
ready pods of both tracks, so the weight a user sees is the canary's share of the pods.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "route_mirror",
    "ReplicaSplit",
    "gateway_split",
    "replica_split",
    "surge_pods",
    "routable_weight",
    "routed_canary_weight",
    "route_weights",
    "surge_first",
]


@dataclass(frozen=True)
class ReplicaSplit:
    """Replicas per track and the canary share of traffic they give."""

    stable: int
    canary: int

    @property
    def effective_weight(self) -> int:
        """The canary's share of pods, in percent, rounded down."""
        total = self.stable + self.canary
        return 0 if total == 0 else (100 * self.canary) // total


def _check_percent(name: str, value: int) -> None:
    if not 0 <= value <= 100:
        raise ValueError(f"{name} must be within 0..100, not {value}")


def surge_pods(max_surge: int | str | None, replicas: int) -> int:
    """The extra pods a replica-ratio canary may run above `replicas`: a count, or a percent
    of `replicas` rounded up (as a Deployment's maxSurge); 0 when unset.

    >>> surge_pods(None, 4), surge_pods(2, 4), surge_pods("25%", 2), surge_pods("0%", 8)
    (0, 2, 1, 0)
    """
    if max_surge is None:
        return 0
    if isinstance(max_surge, str):
        return math.ceil(replicas * int(max_surge.rstrip("%")) / 100)
    return max_surge


def replica_split(
    replicas: int, weight: int, *, promoted: bool = False, surge: int = 0
) -> ReplicaSplit:
    """Split `replicas` between the tracks for a canary `weight` (0–100).

    The canary gets ceil(replicas × weight / 100) replicas, so any weight above 0 runs at
    least one canary pod; the stable track keeps the rest but never fewer than one replica
    before promotion, so a release in progress always has somewhere safe to send traffic.
    The total may therefore exceed `replicas` by one at high weights.

    With `surge` (extra pods allowed above `replicas`, from ``maxSurge``) a weight the
    count cannot give is met as closely as up to `replicas + surge` pods can: the split
    whose canary share is nearest the weight, keeping at least `replicas` pods (the plain
    split when it is as near).

    >>> replica_split(2, 10), replica_split(2, 10, surge=1)
    (ReplicaSplit(stable=1, canary=1), ReplicaSplit(stable=2, canary=1))
    >>> replica_split(3, 40, surge=1)
    ReplicaSplit(stable=2, canary=1)
    >>> replica_split(10, 10, surge=5)
    ReplicaSplit(stable=9, canary=1)
    >>> replica_split(4, 0)
    ReplicaSplit(stable=4, canary=0)
    >>> replica_split(4, 10)
    ReplicaSplit(stable=3, canary=1)
    >>> replica_split(4, 50)
    ReplicaSplit(stable=2, canary=2)
    >>> replica_split(4, 100)
    ReplicaSplit(stable=1, canary=4)
    >>> replica_split(1, 20)
    ReplicaSplit(stable=1, canary=1)
    >>> replica_split(4, 100, promoted=True)
    ReplicaSplit(stable=0, canary=4)
    >>> replica_split(0, 50)
    ReplicaSplit(stable=0, canary=0)
    """
    _check_percent("weight", weight)
    if replicas <= 0:
        return ReplicaSplit(0, 0)
    canary = math.ceil(replicas * weight / 100)
    stable = replicas - canary
    if not promoted:
        stable = max(stable, 1)
    base = ReplicaSplit(stable=stable, canary=canary)
    if surge <= 0 or promoted or weight in (0, 100) or _miss(base, weight) == 0:
        return base
    return min([base, *_surged(replicas, surge)], key=lambda s: _miss(s, weight))


def surge_first(share: ReplicaSplit, replicas: int, canary_ready: int | None) -> ReplicaSplit:
    """The replicas per track while a canary comes up: the canary runs its `share` at once,
    and the stable track gives up only the capacity ready canary pods replace. It keeps
    ``replicas - canary_ready`` pods while that is more than its share, so the ready pods of
    both tracks never drop below `replicas` (spec.replicas) because of the release.
    `canary_ready` None (not known): the share alone.

    >>> share = ReplicaSplit(stable=3, canary=1)
    >>> surge_first(share, 4, None)
    ReplicaSplit(stable=3, canary=1)
    >>> surge_first(share, 4, 0)
    ReplicaSplit(stable=4, canary=1)
    >>> surge_first(ReplicaSplit(stable=2, canary=2), 4, 1)
    ReplicaSplit(stable=3, canary=2)
    >>> surge_first(ReplicaSplit(stable=3, canary=3), 6, 2)
    ReplicaSplit(stable=4, canary=3)
    """
    if canary_ready is None:
        return share
    kept = min(replicas, max(share.stable, replicas - min(canary_ready, share.canary)))
    return ReplicaSplit(stable=kept, canary=share.canary)


def _surged(replicas: int, surge: int) -> list[ReplicaSplit]:
    """Every split with a canary pod, a stable pod and `replicas` to `replicas + surge`
    pods in all, most stable pods first, then fewest pods: the order ties are broken in."""
    return [
        ReplicaSplit(stable=s, canary=c)
        for s in range(replicas, 0, -1)
        for c in range(max(1, replicas - s), replicas + surge - s + 1)
    ]


def _miss(split: ReplicaSplit, weight: int) -> float:
    """How far the canary's share of pods is from `weight`, in percent."""
    return abs(100 * split.canary / (split.stable + split.canary) - weight)


def gateway_split(replicas: int, weight: int) -> ReplicaSplit:
    """Replicas when a gateway splits traffic by weight: the canary needs capacity for its
    share only, the stable track keeps all its replicas until promotion.

    >>> gateway_split(4, 10)
    ReplicaSplit(stable=4, canary=1)
    >>> gateway_split(4, 0)
    ReplicaSplit(stable=4, canary=0)
    >>> gateway_split(4, 100)
    ReplicaSplit(stable=4, canary=4)
    """
    _check_percent("weight", weight)
    if replicas <= 0:
        return ReplicaSplit(0, 0)
    return ReplicaSplit(stable=replicas, canary=math.ceil(replicas * weight / 100))


def route_weights(
    rules: Sequence[Mapping[str, Any]], *, stable: str, canary: str, port: int, weight: int
) -> list[dict[str, Any]]:
    """An HTTPRoute's rules with the stable/canary backendRefs weighted for `weight`.

    Rules that send to the stable Service get both backends with the weights; other rules
    and other backends are left as they are. A rule without the canary backend gains it,
    right after the stable one; a canary backend already there keeps its place and every
    field but its port and weight, so the fields the API server defaults (``group``,
    ``kind``) survive and a route already at `weight` comes back unchanged.

    >>> rules = [{"backendRefs": [{"name": "cart-stable", "port": 80}]}]
    >>> new = route_weights(rules, stable="cart-stable", canary="cart-canary", port=80, weight=10)
    >>> [(r["name"], r["weight"]) for r in new[0]["backendRefs"]]
    [('cart-stable', 90), ('cart-canary', 10)]
    >>> stored = [{"backendRefs": [
    ...     {"group": "", "kind": "Service", "name": "cart-stable", "port": 80, "weight": 90},
    ...     {"group": "", "kind": "Service", "name": "cart-canary", "port": 80, "weight": 10}]}]
    >>> same = route_weights(stored, stable="cart-stable", canary="cart-canary", port=80, weight=10)
    >>> same == stored
    True
    """
    _check_percent("weight", weight)
    result = []
    for rule in rules:
        new = dict(rule)
        refs = [dict(r) for r in rule.get("backendRefs", []) or []]
        names = [r.get("name") for r in refs]
        if stable in names:
            if canary not in names:
                refs.insert(names.index(stable) + 1, {"name": canary})
            first = next(i for i, r in enumerate(refs) if r.get("name") == canary)
            refs = [r for i, r in enumerate(refs) if r.get("name") != canary or i == first]
            for ref in refs:
                if ref.get("name") == stable:
                    ref["weight"] = 100 - weight
                elif ref.get("name") == canary:
                    ref.update(port=port, weight=weight)
            new["backendRefs"] = refs
        result.append(new)
    return result


def routed_canary_weight(rules: Sequence[Mapping[str, Any]], *, stable: str, canary: str) -> int:
    """The canary weight an HTTPRoute gives now: that of the first rule sending to `stable`
    (0 when it has no `canary` backend, or no rule sends to `stable`).

    >>> rules = [{"backendRefs": [{"name": "cart-stable", "weight": 90},
    ...                           {"name": "cart-canary", "weight": 10}]}]
    >>> routed_canary_weight(rules, stable="cart-stable", canary="cart-canary")
    10
    """
    for rule in rules:
        refs = rule.get("backendRefs", []) or []
        if stable in [r.get("name") for r in refs]:
            weights = [int(r.get("weight", 1)) for r in refs if r.get("name") == canary]
            return weights[0] if weights else 0
    return 0


def routable_weight(wanted: int, routed: int, *, canary_ready: int, replicas: int) -> int:
    """The canary weight a gateway may be given now, on the way to `wanted`.

    A gateway sends a weight's share to the canary Service whether or not a pod is there
    to answer, so a weight goes up only once the canary has the ready replicas
    :func:`gateway_split` gives it for that weight; until then the route keeps `routed`.
    Weights that go down apply at once: taking traffic away is always safe.

    >>> routable_weight(10, 0, canary_ready=0, replicas=4)
    0
    >>> routable_weight(10, 0, canary_ready=1, replicas=4)
    10
    >>> routable_weight(100, 50, canary_ready=3, replicas=4)
    50
    >>> routable_weight(0, 50, canary_ready=0, replicas=4)
    0
    """
    if wanted <= routed or canary_ready >= gateway_split(replicas, wanted).canary:
        return wanted
    return routed


def route_mirror(
    rules: Sequence[Mapping[str, Any]], *, stable: str, canary: str, port: int, percent: int
) -> list[dict[str, Any]]:
    """An HTTPRoute's rules with a RequestMirror of `percent`% to `canary` on every rule that
    sends to `stable` (none when `percent` is 0). Other filters are kept as they are.

    >>> rules = [{"backendRefs": [{"name": "cart-stable", "port": 80}]}]
    >>> on = route_mirror(rules, stable="cart-stable", canary="cart-canary", port=80, percent=20)
    >>> on[0]["filters"]
    [{'type': 'RequestMirror', 'requestMirror': {'backendRef': {'name': 'cart-canary', \
'port': 80}, 'percent': 20}}]
    >>> route_mirror(on, stable="cart-stable", canary="cart-canary", port=80, percent=0)
    [{'backendRefs': [{'name': 'cart-stable', 'port': 80}]}]
    """
    _check_percent("percent", percent)
    result = []
    for rule in rules:
        new = dict(rule)
        if stable in [r.get("name") for r in rule.get("backendRefs", []) or []]:
            filters, kept = [], False
            for f in rule.get("filters", []) or []:
                mirror = f.get("requestMirror") or {}
                if (
                    f.get("type") != "RequestMirror"
                    or mirror.get("backendRef", {}).get("name") != canary
                ):
                    filters.append(dict(f))
                elif percent and mirror.get("percent") == percent and not kept:
                    # as stored, with the fields the API server defaulted: no change to write
                    if mirror.get("backendRef", {}).get("port") == port:
                        filters.append(dict(f))
                        kept = True
            if percent and not kept:
                filters.append(
                    {
                        "type": "RequestMirror",
                        "requestMirror": {
                            "backendRef": {"name": canary, "port": port},
                            "percent": percent,
                        },
                    }
                )
            if filters:
                new["filters"] = filters
            else:
                new.pop("filters", None)
        result.append(new)
    return result
