"""Status conditions in the Kubernetes convention, as pure functions over plain dicts.

Mirrors `k8s.io/apimachinery/pkg/api/meta.SetStatusCondition`: conditions are a list keyed
by `type`; `lastTransitionTime` changes only when `status` flips.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pilotboat.core import reasons

__all__ = [
    "ConditionStatus",
    "DesiredCondition",
    "find_condition",
    "flipped",
    "set_conditions",
]

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


def flipped(
    old: Sequence[Mapping[str, Any]] | None,
    desired: Sequence[DesiredCondition],
    *,
    warn: bool,
    seen_reasons: Iterable[str] = (),
) -> list[tuple[DesiredCondition, bool]]:
    """The conditions of `desired` whose status or reason differs from `old`'s, to announce
    as Events: ``Ready`` always, every other type only with `warn`; one per reason, and none
    whose reason is in `seen_reasons` (an Event of the pass already says it). Each comes with
    whether its Event is a warning (a False condition, with `warn`).

    >>> old = [{"type": "Ready", "status": "True", "reason": "Stable"}]
    >>> new = [DesiredCondition("Ready", "False", "RolledBack", "v2 failed"),
    ...        DesiredCondition("Progressing", "False", "RolledBack", "v2 failed")]
    >>> [(c.type, w) for c, w in flipped(old, new, warn=True)]
    [('Ready', True)]
    >>> flipped(old, new, warn=False, seen_reasons=["RolledBack"])
    []
    """
    seen = set(seen_reasons)
    changes = []
    for want in desired:
        before = find_condition(old, want.type) or {}
        changed = before.get("status") != want.status or before.get("reason") != want.reason
        if changed and (want.type == reasons.READY or warn) and want.reason not in seen:
            seen.add(want.reason)
            changes.append((want, want.status == "False" and warn))
    return changes
