"""Adopting an existing Deployment (`spec.workloadRef`), as data: pure, no I/O.

The operator runs the Microservice's own stable Deployment from the referenced ("original")
Deployment's pod template and scales the original down only as the Microservice's pods
become ready: with `r` replicas recorded at adoption and `k` Microservice pods ready, the
original is asked for `r - k` (never more than it has now), so the ready pods behind a
Service that selects both never drop below `r`. Once the Microservice has all the pods it
wants ready, the original is asked for 0. It is never deleted, and never scaled up while
adopted; the replica count it had is kept in an annotation, so that deleting the
Microservice can hand it back (`hand_back`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pilotboat.core.workload import LABEL_MANAGED_BY, LABEL_NAME, LABEL_TRACK, LABEL_VERSION

__all__ = [
    "ANNOTATION_ADOPTED_BY",
    "ANNOTATION_ADOPTED_REPLICAS",
    "AdoptionStep",
    "HandBack",
    "adoption_problem",
    "hand_back",
    "plan_adoption",
]

ANNOTATION_ADOPTED_BY = "pilotboat.dev/adopted-by"
ANNOTATION_ADOPTED_REPLICAS = "pilotboat.dev/adopted-replicas"
# Labels the operator sets on its pods: an original whose selector needs another value of
# one of them could not keep selecting the Microservice's pods.
_OPERATOR_LABELS = (LABEL_NAME, LABEL_TRACK, LABEL_VERSION, LABEL_MANAGED_BY)
FIELD = "spec.workloadRef.name"


def _meta(deployment: Mapping[str, Any]) -> Mapping[str, Any]:
    return deployment.get("metadata") or {}


def recorded_replicas(deployment: Mapping[str, Any]) -> int | None:
    """The replicas the original had when it was adopted, from its annotation."""
    value = (_meta(deployment).get("annotations") or {}).get(ANNOTATION_ADOPTED_REPLICAS)
    try:
        return max(0, int(value)) if value is not None else None
    except ValueError:
        return None


def _replicas(deployment: Mapping[str, Any]) -> int:
    value = (deployment.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def adoption_problem(
    deployment: Mapping[str, Any] | None, *, name: str, namespace: str, service: str
) -> str | None:
    """Why the Deployment `name` cannot be adopted by Microservice `service`, naming the
    field; None when it can."""
    if deployment is None:
        return f"{FIELD}: Deployment {name} does not exist in namespace {namespace}"
    meta = _meta(deployment)
    labels = meta.get("labels") or {}
    refs = meta.get("ownerReferences") or []
    if labels.get(LABEL_MANAGED_BY) == "pilotboat" or any(
        r.get("kind") == "Microservice" for r in refs
    ):
        return (f"{FIELD}: Deployment {name} is run by the operator for a Microservice; "
                "refer to a Deployment of your own")
    controller = next((r for r in refs if r.get("controller")), None)
    if controller is not None:
        return (f"{FIELD}: Deployment {name} is controlled by {controller.get('kind')} "
                f"{controller.get('name')}; it would undo the scale-down")
    adopted_by = (meta.get("annotations") or {}).get(ANNOTATION_ADOPTED_BY)
    if adopted_by not in (None, service):
        return f"{FIELD}: Deployment {name} is adopted by Microservice {adopted_by}"
    selector = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    ours = {LABEL_NAME: service, LABEL_MANAGED_BY: "pilotboat"}
    for key in _OPERATOR_LABELS:
        if key in selector and (key not in ours or selector[key] != ours[key]):
            return (f"{FIELD}: Deployment {name} selects {key}={selector[key]}, a label the "
                    "operator sets on its pods to another value; the Microservice's pods "
                    "could not carry it, so a Service selecting the original's pods would "
                    "lose them")
    return None


@dataclass(frozen=True)
class AdoptionStep:
    """What to write to the original this pass: None for nothing, else a merge patch."""

    patch: Mapping[str, Any] | None
    replicas: int
    """The replicas the original is left with."""
    message: str | None = None


def plan_adoption(
    deployment: Mapping[str, Any],
    *,
    service: str,
    ready: int,
    wanted: int,
    scale_down: str = "progressively",
) -> AdoptionStep:
    """The next write to the original Deployment, given the Microservice's `ready` pods and
    the pods it `wanted` (spec.replicas).

    The original is asked for `recorded - ready`, never more than it has (it is never
    scaled up), and 0 once `ready >= wanted > 0` (a Microservice scaled to 0 takes nothing
    away); with `scale_down: never` it keeps its count.
    The first write records the adopting Microservice and the original's replicas."""
    current = _replicas(deployment)
    recorded = recorded_replicas(deployment)
    annotations = _meta(deployment).get("annotations") or {}
    patch: dict[str, Any] = {}
    if annotations.get(ANNOTATION_ADOPTED_BY) != service or recorded is None:
        recorded = current if recorded is None else recorded
        # With the resourceVersion read: of two Microservices adopting at once, one wins.
        patch["metadata"] = {"annotations": {ANNOTATION_ADOPTED_BY: service,
                                             ANNOTATION_ADOPTED_REPLICAS: str(recorded)},
                             "resourceVersion": _meta(deployment).get("resourceVersion")}
    target = current
    if scale_down == "progressively":
        target = 0 if 0 < wanted <= ready else max(0, recorded - ready)
        target = min(current, target)
    message = None
    if target != current:
        patch["spec"] = {"replicas": target}
        message = (f"Scaled adopted Deployment {_meta(deployment).get('name')} from {current} "
                   f"to {target} replicas: {ready} of the Microservice's pods are ready")
    return AdoptionStep(patch or None, target, message)


@dataclass(frozen=True)
class HandBack:
    """What deleting the Microservice does to the original this pass."""

    patch: Mapping[str, Any] | None
    done: bool
    """The original is back (or was never adopted): the Microservice may go."""
    message: str


def hand_back(deployment: Mapping[str, Any] | None, *, service: str) -> HandBack:
    """Give the original back before the Microservice (and its pods) go: its recorded
    replicas first, then, once that many of its pods are ready, the annotations off."""
    if deployment is None:
        return HandBack(None, True, "the adopted Deployment no longer exists")
    name = _meta(deployment).get("name")
    annotations = _meta(deployment).get("annotations") or {}
    if annotations.get(ANNOTATION_ADOPTED_BY) != service:
        return HandBack(None, True, f"Deployment {name} is not adopted by {service}")
    recorded = recorded_replicas(deployment) or 0
    if _replicas(deployment) < recorded:
        return HandBack({"spec": {"replicas": recorded}}, False,
                        f"scaling Deployment {name} back to {recorded} replicas")
    ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
    if ready < recorded:
        return HandBack(None, False,
                        f"waiting for Deployment {name}: {ready}/{recorded} pods ready")
    off = {ANNOTATION_ADOPTED_BY: None, ANNOTATION_ADOPTED_REPLICAS: None}
    return HandBack({"metadata": {"annotations": off}}, True,
                    f"Deployment {name} handed back with {recorded} ready replicas")
