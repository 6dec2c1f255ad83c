"""Traffic split arithmetic: how many replicas each track runs for a canary weight.

With replica-ratio routing (no mesh, no gateway) one Service spreads requests over the
ready pods of both tracks, so the weight a user sees is the canary's share of the pods.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ReplicaSplit", "gateway_split", "replica_split", "route_weights"]


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


def replica_split(replicas: int, weight: int, *, promoted: bool = False) -> ReplicaSplit:
    """Split `replicas` between the tracks for a canary `weight` (0–100).

    The canary gets ceil(replicas × weight / 100) replicas, so any weight above 0 runs at
    least one canary pod; the stable track keeps the rest but never fewer than one replica
    before promotion, so a release in progress always has somewhere safe to send traffic.
    The total may therefore exceed `replicas` by one at high weights.

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
    if not 0 <= weight <= 100:
        raise ValueError(f"weight must be within 0..100, not {weight}")
    if replicas <= 0:
        return ReplicaSplit(0, 0)
    canary = math.ceil(replicas * weight / 100)
    stable = replicas - canary
    if not promoted:
        stable = max(stable, 1)
    return ReplicaSplit(stable=stable, canary=canary)


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
    if not 0 <= weight <= 100:
        raise ValueError(f"weight must be within 0..100, not {weight}")
    if replicas <= 0:
        return ReplicaSplit(0, 0)
    return ReplicaSplit(stable=replicas, canary=math.ceil(replicas * weight / 100))


def route_weights(
    rules: Sequence[Mapping[str, Any]], *, stable: str, canary: str, port: int, weight: int
) -> list[dict[str, Any]]:
    """An HTTPRoute's rules with the stable/canary backendRefs weighted for `weight`.

    Rules that send to the stable Service get both backends with the weights; other rules
    and other backends are left as they are. A rule without the canary backend gains it.

    >>> rules = [{"backendRefs": [{"name": "cart-stable", "port": 80}]}]
    >>> new = route_weights(rules, stable="cart-stable", canary="cart-canary", port=80, weight=10)
    >>> [(r["name"], r["weight"]) for r in new[0]["backendRefs"]]
    [('cart-stable', 90), ('cart-canary', 10)]
    """
    if not 0 <= weight <= 100:
        raise ValueError(f"weight must be within 0..100, not {weight}")
    result = []
    for rule in rules:
        new = dict(rule)
        refs = [dict(r) for r in rule.get("backendRefs", []) or []]
        if stable in [r.get("name") for r in refs]:
            refs = [r for r in refs if r.get("name") != canary]
            for ref in refs:
                if ref.get("name") == stable:
                    ref["weight"] = 100 - weight
            at = [r.get("name") for r in refs].index(stable) + 1
            refs.insert(at, {"name": canary, "port": port, "weight": weight})
            new["backendRefs"] = refs
        result.append(new)
    return result
