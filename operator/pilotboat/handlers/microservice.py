"""The Microservice reconciler: level-triggered, idempotent, thin.

It reacts to every watch event of a Microservice and of the Deployments it owns, reads
what exists, asks the core what should exist, applies the difference with server-side
apply, and writes `status` once. Nothing is remembered between calls, so a crash at any
line is repaired by the next event: the same inputs give the same applies, and applying
an object twice changes nothing. It never writes `spec`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from pilotboat import GROUP, VERSION
from pilotboat.adapters.kube import Kube
from pilotboat.api import MicroserviceSpec
from pilotboat.core import reasons
from pilotboat.core.conditions import DesiredCondition
from pilotboat.core.readiness import track_health
from pilotboat.core.workload import (
    ANNOTATION_TEMPLATE_HASH,
    LABEL_MANAGED_BY,
    Owner,
    render_deployment,
    render_service,
)
from pilotboat.handlers.context import Reconcile, describe_validation_error, runtime
from pilotboat.handlers.faults import crash_point

__all__ = ["reconcile_microservice"]

_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(namespace: str, name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault((namespace, name), threading.Lock())


def _apply_if_changed(
    kube: Kube, rc: Reconcile, desired: dict[str, Any], current: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """Apply `desired` unless `current` already carries the same template hash."""
    want = desired["metadata"].get("annotations", {}).get(ANNOTATION_TEMPLATE_HASH)
    have = (current or {}).get("metadata", {}).get("annotations", {}) or {}
    if current is not None and want is not None and have.get(ANNOTATION_TEMPLATE_HASH) == want:
        return None
    applied = kube.apply(desired)
    verb = "Created" if current is None else "Updated"
    kind, name = desired["kind"], desired["metadata"]["name"]
    rc.log.info("%s %s %s", verb.lower(), kind, name)
    rc.event(f"{kind}{verb}", f"{verb} {kind} {name}")
    return applied


def _service_differs(desired: Mapping[str, Any], current: Mapping[str, Any] | None) -> bool:
    if current is None:
        return True
    have, want = current.get("spec", {}), desired["spec"]
    have_ports = [
        {k: p.get(k) for k in ("name", "port", "targetPort", "protocol")}
        for p in have.get("ports", [])
    ]
    return bool(have.get("selector") != want["selector"] or have_ports != want["ports"])


def reconcile_microservice(kube: Kube, body: Mapping[str, Any], rc: Reconcile) -> None:
    """Bring the children of one Microservice in line with its spec; then write status."""
    meta = body["metadata"]
    generation = int(meta.get("generation", 0))
    status: dict[str, Any] = dict(body.get("status") or {})
    try:
        spec = MicroserviceSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        message = describe_validation_error(exc)
        conditions = [
            DesiredCondition(reasons.SPEC_VALID, "False", reasons.INVALID_SPEC, message),
            DesiredCondition(reasons.READY, "False", reasons.INVALID_SPEC, message),
        ]
        rc.write_status(status, conditions, {"observedGeneration": generation}, warn=True)
        return

    owner = Owner(meta["name"], meta["namespace"], meta["uid"])
    deployment = render_deployment(owner, spec, track="stable", replicas=spec.replicas)
    current = kube.get("Deployment", owner.namespace, deployment["metadata"]["name"])
    current = _apply_if_changed(kube, rc, deployment, current) or current
    crash_point("microservice.after-deployment")

    service = render_service(owner, spec)
    current_service = kube.get("Service", owner.namespace, owner.name)
    if _service_differs(service, current_service):
        kube.apply(service)
        verb = "Created" if current_service is None else "Updated"
        rc.event(f"Service{verb}", f"{verb} Service {owner.name}")
    crash_point("microservice.after-service")

    health = track_health(current, spec.version)
    ready = "True" if health.complete else "False"
    conditions = [
        DesiredCondition(reasons.SPEC_VALID, "True", reasons.VALID, "the spec is valid"),
        DesiredCondition(reasons.AVAILABLE, ready, health.reason, health.message),
        DesiredCondition(
            reasons.PROGRESSING,
            "False" if health.complete or health.stuck else "True",
            health.reason,
            health.message,
        ),
        DesiredCondition(reasons.READY, ready, health.reason, health.message),
    ]
    fields: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": "Healthy" if health.complete else ("Degraded" if health.stuck else "Progressing"),
        "replicas": health.desired,
        "readyReplicas": health.ready,
        "canaryWeight": 0,
        "currentStepIndex": None,
        "canaryVersion": None,
    }
    if health.complete:
        fields["stableVersion"] = spec.version
    crash_point("microservice.before-status")
    rc.write_status(status, conditions, fields)


def _reconcile_guarded(
    body: Mapping[str, Any], logger: logging.Logger | logging.LoggerAdapter[Any]
) -> None:
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return
    kube = runtime().kube
    with _lock_for(meta["namespace"], meta["name"]):
        fresh = kube.get("Microservice", meta["namespace"], meta["name"])
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            return
        rc = Reconcile.start(kube, fresh, logger)
        try:
            reconcile_microservice(kube, fresh, rc)
        except Exception:
            rc.log.exception("reconcile failed; the next event retries it")
            raise


@kopf.on.event(GROUP, VERSION, "microservices")
def on_microservice_event(
    event: Mapping[str, Any], body: kopf.Body, logger: logging.Logger, **_: Any
) -> None:
    if event.get("type") == "DELETED":
        return
    _reconcile_guarded(body, logger)


@kopf.on.event("apps", "v1", "deployments", labels={LABEL_MANAGED_BY: "pilotboat"})
def on_child_deployment_event(
    event: Mapping[str, Any], body: kopf.Body, logger: logging.Logger, **_: Any
) -> None:
    for ref in body.get("metadata", {}).get("ownerReferences", []) or []:
        if ref.get("kind") == "Microservice" and ref.get("controller"):
            owner = {"metadata": {"namespace": body["metadata"]["namespace"], "name": ref["name"]}}
            _reconcile_guarded(owner, logger)
