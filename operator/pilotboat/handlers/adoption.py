"""Adopting an existing Deployment (`spec.workloadRef`) and handing it back.

Observe: the referenced ("original") Deployment is read on every pass of its Microservice;
its pod template becomes the Microservice's `spec.template` (`adopted_spec`), so a change
to it is a release like any template change. Apply: after the Microservice's own children,
the original is scaled down as the Microservice's pods become ready (the plan is
:func:`pilotboat.core.adoption.plan_adoption`); only `spec.replicas` and two annotations of
the original are written, with the field manager `pilotboat`, never its template.

Hand back: before the first scale-down the Microservice's stable Deployment gets the
finalizer `pilotboat.dev/hand-back` and the annotation `pilotboat.dev/adopted`. When that
Deployment is deleted (the Microservice deleted, its children collected; or the Deployment
deleted by hand) its pods keep serving while the original is scaled back to the replicas
it had (`pilotboat.dev/adopted-replicas`); once that many of the original's pods are ready
the finalizer comes off. The operator needs no permission on Microservices for this
(it may not patch them: a user's spec is Git's).
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from pilotboat.api import MicroserviceSpec
from pilotboat.api.microservice import PodTemplate
from pilotboat.core import reasons
from pilotboat.core.adoption import adoption_problem, hand_back, plan_adoption
from pilotboat.core.workload import Owner, deployment_name
from pilotboat.handlers.context import Reconcile, describe_validation_error
from pilotboat.handlers.loop import ReconcileLoop
from pilotboat.handlers.ports import Kube

__all__ = [
    "ANNOTATION_ADOPTED",
    "FINALIZER",
    "AdoptionRefused",
    "adopted_spec",
    "scale_adopted",
    "deleting_stable",
]

FINALIZER = "pilotboat.dev/hand-back"
ANNOTATION_ADOPTED = "pilotboat.dev/adopted"
HAND_BACK_TIMEOUT_SECONDS = 600.0
HAND_BACK_RECHECK_SECONDS = 2.0


class AdoptionRefused(Exception):
    """The Deployment `spec.workloadRef` names cannot be adopted; the message names the field."""


def adopted_spec(
    kube: Kube, owner: Owner, spec: MicroserviceSpec
) -> tuple[MicroserviceSpec, dict[str, Any] | None]:
    """`spec` with the original's pod template as its `template`, and the original; `spec`
    and None without a workloadRef. Raises AdoptionRefused."""
    ref = spec.workload_ref
    if ref is None:
        return spec, None
    original = kube.get("Deployment", owner.namespace, ref.name)
    problem = adoption_problem(original, name=ref.name, namespace=owner.namespace,
                               service=owner.name)
    if problem is None and ref.name in (deployment_name(owner.name, "stable"),
                                        deployment_name(owner.name, "canary")):
        problem = (f"spec.workloadRef.name: Deployment {ref.name} has the name of the "
                   f"Microservice's own Deployment; give the Microservice another name")
    if problem is not None:
        raise AdoptionRefused(problem)
    assert original is not None
    template = (original.get("spec") or {}).get("template") or {}
    meta = template.get("metadata") or {}
    wire = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    wire.pop("workloadRef", None)
    wire["template"] = {
        "metadata": {k: meta[k] for k in ("labels", "annotations") if meta.get(k)},
        "spec": template.get("spec") or {},
    }
    try:
        effective = MicroserviceSpec.model_validate(wire)
    except ValidationError as exc:
        raise AdoptionRefused(
            f"spec.workloadRef.name: the template of Deployment {ref.name} cannot be run: "
            + describe_validation_error(exc)
        ) from None
    assert isinstance(effective.template, PodTemplate)
    return effective.model_copy(update={"workload_ref": ref}), original


def _ready(deployment: Mapping[str, Any] | None) -> int:
    return int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)


def scale_adopted(
    kube: Kube,
    rc: Reconcile,
    owner: Owner,
    spec: MicroserviceSpec,
    original: Mapping[str, Any],
    stable: Mapping[str, Any] | None,
    canary: Mapping[str, Any] | None,
) -> None:
    """Record the adoption on the original, make sure the stable Deployment can hand it
    back, then scale the original down to what the Microservice's ready pods allow."""
    ref = spec.workload_ref
    assert ref is not None
    if ((stable or {}).get("metadata") or {}).get("deletionTimestamp"):
        return  # the stable Deployment is handing the original back: hands off
    ready = _ready(stable) + _ready(canary)
    step = plan_adoption(original, service=owner.name, ready=ready, wanted=spec.replicas,
                         scale_down=ref.scale_down)
    patch = dict(step.patch or {})
    meta = (stable or {}).get("metadata") or {}
    guarded = FINALIZER in (meta.get("finalizers") or []) and (
        (meta.get("annotations") or {}).get(ANNOTATION_ADOPTED) == ref.name)
    if not guarded:
        # The hand-back first: no pod of the original goes before it is in place.
        patch.pop("spec", None)
        step = plan_adoption(original, service=owner.name, ready=0, wanted=spec.replicas,
                             scale_down="never")
    if stable is not None and not guarded:
        try:
            kube.merge_patch("Deployment", owner.namespace, str(meta["name"]), {"metadata": {
                "finalizers": [*(f for f in meta.get("finalizers") or [] if f != FINALIZER),
                               FINALIZER],
                "annotations": {ANNOTATION_ADOPTED: ref.name},
                "resourceVersion": meta.get("resourceVersion"),
            }})
        except ApiException as exc:
            if exc.status != 409:
                raise
            rc.log.info("stable Deployment %s changed meanwhile; next pass", meta["name"])
            return
        rc.log.info("stable Deployment %s will hand %s back", meta["name"], ref.name)
    if not patch:
        return
    try:
        kube.merge_patch("Deployment", owner.namespace, ref.name, patch)
    except ApiException as exc:
        if exc.status != 409:
            raise
        rc.log.info("Deployment %s changed meanwhile (or another adopted it); next pass",
                    ref.name)
        return
    if "spec" in patch and step.message:
        rc.event(reasons.ADOPTED_SCALED_DOWN, step.message)
    elif "metadata" in patch:
        rc.event(reasons.ADOPTED, f"Adopted Deployment {ref.name}: its pod template is this "
                            "Microservice's; it is scaled down as this one's pods become ready")


# --- hand back --------------------------------------------------------------------------


def _hand_back_pass(kube: Kube, body: Mapping[str, Any], rc: Reconcile) -> float | None:
    """One pass over a stable Deployment being deleted that still holds the hand-back."""
    meta = body["metadata"]
    if not meta.get("deletionTimestamp") or FINALIZER not in (meta.get("finalizers") or []):
        return None
    namespace = str(meta["namespace"])
    name = (meta.get("annotations") or {}).get(ANNOTATION_ADOPTED)
    original = kube.get("Deployment", namespace, name) if name else None
    service = next((r.get("name") for r in meta.get("ownerReferences") or []
                    if r.get("kind") == "Microservice"), None) or str(meta["name"])
    if original is not None and original["metadata"].get("deletionTimestamp"):
        original = None  # going too (the namespace is deleted): nothing to hand back
    back = hand_back(original, service=service)
    if back.patch is not None and original is not None:
        kube.merge_patch("Deployment", namespace, str(name), dict(back.patch))
    if not back.done:
        started = _epoch(str(meta["deletionTimestamp"]))
        if time.time() - started < HAND_BACK_TIMEOUT_SECONDS:
            rc.log.info("handing back: %s", back.message)
            return HAND_BACK_RECHECK_SECONDS
        rc.event(reasons.HAND_BACK_TIMED_OUT, f"Deployment {name} did not become ready in "
                 f"{HAND_BACK_TIMEOUT_SECONDS:.0f}s ({back.message}); letting go",
                 warning=True)
    else:
        rc.event(reasons.HANDED_BACK, back.message)
    kube.merge_patch("Deployment", namespace, str(meta["name"]), {"metadata": {
        "finalizers": [f for f in meta.get("finalizers") or [] if f != FINALIZER],
        "resourceVersion": meta.get("resourceVersion"),
    }})
    return None


def _epoch(value: str) -> float:
    """Seconds since the epoch of an RFC 3339 timestamp as the API server writes it."""
    return _dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


_hand_back_loop = ReconcileLoop("Deployment", _hand_back_pass, retry_after=5.0, workers=1,
                                skip_deleting=False)


def deleting_stable(body: Mapping[str, Any]) -> bool:
    """Visit a Deployment of the operator's that is being deleted and holds the hand-back;
    whether it was one."""
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp") and FINALIZER in (meta.get("finalizers") or []):
        _hand_back_loop.enqueue(str(meta["namespace"]), str(meta["name"]))
        return True
    return False
