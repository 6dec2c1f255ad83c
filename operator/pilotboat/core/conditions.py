"""Status conditions in the Kubernetes convention, as pure functions over plain dicts.

Mirrors `k8s.io/apimachinery/pkg/api/meta.SetStatusCondition`: conditions are a list keyed
by `type`; `lastTransitionTime` changes only when `status` flips.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["ConditionStatus", "DesiredCondition", "find_condition", "set_conditions"]

ConditionStatus = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class DesiredCondition:
    """What a reconcile concluded about one condition type."""

    type: str
    status: ConditionStatus
    reason: str
    message: str


def find_condition(
    conditions: Sequence[Mapping[str, Any]] | None, type_: str
) -> dict[str, Any] | None:
    for cond in conditions or ():
        if cond.get("type") == type_:
            return dict(cond)
    return None


def set_conditions(
    existing: Sequence[Mapping[str, Any]] | None,
    desired: Iterable[DesiredCondition],
    *,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """Merge `desired` into `existing`, keeping order and untouched types.

    >>> old = [{"type": "Ready", "status": "False", "reason": "A", "message": "",
    ...         "lastTransitionTime": "t0", "observedGeneration": 1}]
    >>> new = set_conditions(old, [DesiredCondition("Ready", "False", "B", "m")],
    ...                      generation=2, now="t1")
    >>> new[0]["lastTransitionTime"], new[0]["reason"], new[0]["observedGeneration"]
    ('t0', 'B', 2)
    >>> set_conditions(old, [DesiredCondition("Ready", "True", "C", "")],
    ...                generation=2, now="t1")[0]["lastTransitionTime"]
    't1'
    """
    result = [dict(c) for c in existing or ()]
    index = {c.get("type"): i for i, c in enumerate(result)}
    for want in desired:
        entry = {
            "type": want.type,
            "status": want.status,
            "reason": want.reason,
            "message": want.message,
            "observedGeneration": generation,
        }
        if want.type in index:
            old = result[index[want.type]]
            same = old.get("status") == want.status and old.get("lastTransitionTime")
            entry["lastTransitionTime"] = old["lastTransitionTime"] if same else now
            result[index[want.type]] = entry
        else:
            entry["lastTransitionTime"] = now
            index[want.type] = len(result)
            result.append(entry)
    return result
