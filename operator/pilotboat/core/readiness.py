"""What a Deployment's own status says about a track: ready, progressing or stuck.

Pure: the Deployment is passed in as the dict the API returned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pilotboat.core import reasons

__all__ = ["TrackHealth", "track_health"]


@dataclass(frozen=True)
class TrackHealth:
    """One Deployment's rollout, read from its status."""

    exists: bool
    desired: int
    ready: int
    updated: int
    available: int
    complete: bool
    stuck: bool
    reason: str
    message: str


def _condition(deployment: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for cond in deployment.get("status", {}).get("conditions", ()) or ():
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def updated_ready(deployment: Mapping[str, Any] | None) -> int:
    """The ready pods of `deployment`'s current template, never overstated: 0 until the
    Deployment controller has seen its latest generation (until then its status counts the
    pods of the template before), then the ready pods less every pod not yet updated (each
    old pod counted as if it were ready).

    >>> d = {"metadata": {"generation": 3}, "spec": {"replicas": 2},
    ...      "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
    ...                 "readyReplicas": 2}}
    >>> updated_ready(d)
    0
    >>> d["status"].update(observedGeneration=3, replicas=3, updatedReplicas=1)
    >>> updated_ready(d)
    0
    >>> d["status"].update(replicas=2, updatedReplicas=2)
    >>> updated_ready(d), updated_ready(None)
    (2, 0)
    """
    if deployment is None:
        return 0
    status = deployment.get("status", {}) or {}
    seen = int(status.get("observedGeneration", 0) or 0) >= int(
        deployment.get("metadata", {}).get("generation", 0) or 0
    )
    if not seen:
        return 0
    ready = int(status.get("readyReplicas", 0) or 0)
    old = int(status.get("replicas", 0) or 0) - int(status.get("updatedReplicas", 0) or 0)
    return max(0, ready - max(0, old))


def track_health(deployment: Mapping[str, Any] | None, version: str) -> TrackHealth:
    """Whether `deployment` runs `version` on all its desired replicas.

    Complete means the controller has seen the latest generation and every desired replica
    is updated, ready and available, exactly the test `kubectl rollout status` applies.

    >>> track_health(None, "v1").reason
    'DeploymentMissing'
    >>> d = {"metadata": {"generation": 2}, "spec": {"replicas": 2},
    ...      "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
    ...                 "readyReplicas": 2, "availableReplicas": 2}}
    >>> track_health(d, "v1").complete
    True
    >>> d["status"]["readyReplicas"] = 1
    >>> h = track_health(d, "v1"); (h.complete, h.reason, h.message)
    (False, 'ReplicasNotReady', '1/2 replicas of v1 ready')
    """
    if deployment is None:
        return TrackHealth(
            False,
            0,
            0,
            0,
            0,
            False,
            False,
            reasons.DEPLOYMENT_MISSING,
            "the Deployment does not exist yet",
        )
    spec = deployment.get("spec", {})
    status = deployment.get("status", {}) or {}
    desired = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas", 0) or 0)
    updated = int(status.get("updatedReplicas", 0) or 0)
    available = int(status.get("availableReplicas", 0) or 0)
    total = int(status.get("replicas", 0) or 0)
    seen = int(status.get("observedGeneration", 0) or 0) >= int(
        deployment.get("metadata", {}).get("generation", 0) or 0
    )
    progressing = _condition(deployment, "Progressing")
    stuck = progressing.get("reason") == "ProgressDeadlineExceeded"
    complete = seen and updated == desired and ready == desired and available == desired
    complete = complete and total == desired
    if stuck:
        reason, message = reasons.PROGRESS_DEADLINE_EXCEEDED, str(progressing.get("message", ""))
    elif not seen:
        reason, message = (
            reasons.DEPLOYMENT_PENDING,
            "the Deployment controller has not seen the change yet",
        )
    elif complete:
        reason, message = reasons.REPLICAS_READY, f"{ready}/{desired} replicas of {version} ready"
    elif updated < desired:
        reason, message = reasons.ROLLING_OUT, f"{updated}/{desired} replicas updated to {version}"
    elif total > desired:
        reason = reasons.ROLLING_OUT
        message = (
            f"{total - desired} old replicas still terminating ({version} is on all {desired})"
        )
    else:
        reason, message = (
            reasons.REPLICAS_NOT_READY,
            f"{ready}/{desired} replicas of {version} ready",
        )
    return TrackHealth(True, desired, ready, updated, available, complete, stuck, reason, message)
