"""The contract gate: a new version of a provider starts its release only if its OpenAPI
contract keeps the deployed one and what every consumer declares it uses.

**Where the deployed contract is.** When a version passes the gate, its document is kept in
a ConfigMap ``<service>-contract-<revision>`` owned by the Microservice (immutable in
practice: a revision is a pod template digest). The deployed contract is then the one of
the stable Deployment's revision, so the gate never compares against a version that did
not reach stable, and a rollback needs no bookkeeping. Older ones are pruned.

**The override.** A deliberate break is allowed by the annotation
``pilotboat.dev/allow-breaking-change: "<reason>"``. Who set it comes from admission, never
from the object: the mutating webhook ``breaking-change-override`` stamps
``pilotboat.dev/allow-breaking-change-by`` with the request's ``userInfo``, the reason, the
time, and the ``spec.version`` it allows, on every change of the reason, and refuses any
other change of the stamp. The gate counts an override only when the stamp matches the
reason and the version being released (a new version needs a new reason), and only when
the operator serves its webhooks. The stamp is copied into the contract's ConfigMap and an
Event, so the audit outlives the annotation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from pilotboat.api import MicroserviceSpec
from pilotboat.core import reasons
from pilotboat.core.conditions import DesiredCondition
from pilotboat.core.contracts import (
    ContractError,
    check_contract,
    digest,
    expectations_for,
    load_document,
)
from pilotboat.core.workload import LABEL_MANAGED_BY, LABEL_NAME, Owner
from pilotboat.handlers.context import Reconcile, now_rfc3339, runtime
from pilotboat.handlers.ports import Kube

__all__ = [
    "ANNOTATION_ALLOW_BREAKING",
    "ANNOTATION_ALLOWED_BY",
    "CONTRACT_COMPATIBLE",
    "ContractGate",
    "OverrideRefused",
    "admit_override",
    "contract_gate",
]

ANNOTATION_ALLOW_BREAKING = "pilotboat.dev/allow-breaking-change"
ANNOTATION_ALLOWED_BY = "pilotboat.dev/allow-breaking-change-by"
CONTRACT_COMPATIBLE = reasons.CONTRACT_COMPATIBLE
_LABEL_CONTRACT = "pilotboat.dev/contract-of"
_KEY = "openapi.yaml"
_log = logging.getLogger("pilotboat.contracts")


class OverrideRefused(Exception):
    """The admission request must be refused; the message says why."""


@dataclass(frozen=True)
class ContractGate:
    """The gate's verdict: why the release waits (nothing: it may go) and its condition."""

    blocking: list[str] = field(default_factory=list)
    conditions: list[DesiredCondition] = field(default_factory=list)


def admit_override(
    operation: str,
    body: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    userinfo: Mapping[str, Any],
) -> dict[str, str | None] | None:
    """Annotations to set on a Microservice being admitted (None value: remove it; None:
    nothing to change); raises :class:`OverrideRefused` to refuse."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    old_annotations = ((old or {}).get("metadata") or {}).get("annotations") or {}
    reason = annotations.get(ANNOTATION_ALLOW_BREAKING)
    if not reason:
        return {ANNOTATION_ALLOWED_BY: None} if ANNOTATION_ALLOWED_BY in annotations else None
    if operation == "CREATE" or reason != old_annotations.get(ANNOTATION_ALLOW_BREAKING):
        stamp = {
            "username": str(userinfo.get("username") or ""),
            "uid": str(userinfo.get("uid") or ""),
            "groups": [str(g) for g in userinfo.get("groups") or []],
            "reason": str(reason),
            "version": str((body.get("spec") or {}).get("version") or ""),
            "at": now_rfc3339(),
        }
        return {ANNOTATION_ALLOWED_BY: json.dumps(stamp, sort_keys=True)}
    if annotations.get(ANNOTATION_ALLOWED_BY) != old_annotations.get(ANNOTATION_ALLOWED_BY):
        raise OverrideRefused(
            f"the annotation {ANNOTATION_ALLOWED_BY} records who allowed a breaking change, as "
            f"the API server saw them; it cannot be changed. Change {ANNOTATION_ALLOW_BREAKING} "
            "(the reason) to allow again"
        )
    return None


def _override(meta: Mapping[str, Any], version: str) -> dict[str, Any] | None:
    """The stamp of a valid override of this version, if there is one."""
    annotations = meta.get("annotations") or {}
    reason = annotations.get(ANNOTATION_ALLOW_BREAKING)
    if not reason or not runtime().extras.get("webhooks", False):
        return None
    try:
        stamp = json.loads(annotations.get(ANNOTATION_ALLOWED_BY) or "")
    except ValueError:
        return None
    if not isinstance(stamp, dict) or not stamp.get("username"):
        return None
    if stamp.get("reason") != reason or stamp.get("version") != version:
        return None
    return stamp


def _document(kube: Kube, namespace: str, spec: MicroserviceSpec) -> tuple[str | None, str]:
    source = spec.api.openapi if spec.api else None
    if source is None:
        return None, ""
    if source.inline is not None:
        return source.inline, "spec.api.openapi.inline"
    ref = source.config_map_ref
    assert ref is not None
    cm = kube.get("ConfigMap", namespace, ref.name)
    text = ((cm or {}).get("data") or {}).get(ref.key)
    if text is None:
        raise ContractError(f"ConfigMap {ref.name} has no key {ref.key}")
    return str(text), f"ConfigMap {ref.name} key {ref.key}"


def _record_name(service: str, revision: str) -> str:
    return f"{service}-contract-{revision}"


def _consumers(kube: Kube, namespace: str, provider: str) -> list[Any]:
    specs = []
    for ms in kube.list("Microservice", namespace):
        try:
            specs.append((ms["metadata"]["name"], MicroserviceSpec.model_validate(ms["spec"])))
        except (ValidationError, KeyError):
            continue
    return expectations_for(provider, specs)


def contract_gate(
    kube: Kube,
    rc: Reconcile,
    owner: Owner,
    spec: MicroserviceSpec,
    meta: Mapping[str, Any],
    stable_revision: str | None,
    revision: str,
) -> ContractGate:
    """Check the contract of ``spec`` before its release starts; keep it when it passes."""
    where = "spec.api.openapi"
    try:
        text, where = _document(kube, owner.namespace, spec)
        if text is None:
            return ContractGate()
        new = load_document(text)
        old_text = None
        if stable_revision is not None:
            name = _record_name(owner.name, stable_revision)
            record = kube.get("ConfigMap", owner.namespace, name)
            old_text = ((record or {}).get("data") or {}).get(_KEY)
            where = f"the deployed contract (ConfigMap {name})"
        old = load_document(old_text) if old_text else None
    except ContractError as exc:
        message = f"{spec.version}'s contract cannot be read: {where}: {exc}"
        return ContractGate([message], [_condition("False", reasons.CONTRACT_UNREADABLE, message)])
    consumers = _consumers(kube, owner.namespace, owner.name)
    violations = check_contract(old, new, consumers)
    against = "the deployed contract" if old is not None else "no deployed contract"
    summary = f"{spec.version} ({where}) against {against} and {len(consumers)} consumer(s)"
    stamp = _override(meta, spec.version) if violations else None
    if violations and stamp is None:
        lines = [v.describe() for v in violations]
        message = f"{summary}: {len(lines)} breaking change(s): " + "; ".join(lines)
        return ContractGate(lines, [_condition("False", reasons.BREAKING_CHANGE, message)])
    _keep(kube, owner, spec, text, new, revision, stable_revision, stamp)
    if stamp is not None:
        message = (
            f"{summary}: {len(violations)} breaking change(s) allowed by {stamp['username']} "
            f"at {stamp.get('at')}: {stamp['reason']} — "
            + "; ".join(v.describe() for v in violations)
        )
        rc.event(reasons.BREAKING_CHANGE_ALLOWED, message, warning=True)
        return ContractGate([], [_condition("False", reasons.BREAKING_CHANGE_ALLOWED, message)])
    return ContractGate([], [_condition("True", reasons.COMPATIBLE, f"{summary}: compatible")])


def _condition(status: str, reason: str, message: str) -> DesiredCondition:
    return DesiredCondition(CONTRACT_COMPATIBLE, status, reason, message)  # type: ignore[arg-type]


def _keep(
    kube: Kube,
    owner: Owner,
    spec: MicroserviceSpec,
    text: str,
    doc: Mapping[str, Any],
    revision: str,
    stable_revision: str | None,
    stamp: Mapping[str, Any] | None,
) -> None:
    name = _record_name(owner.name, revision)
    current = kube.get("ConfigMap", owner.namespace, name)
    annotations = {"pilotboat.dev/version": spec.version, "pilotboat.dev/digest": digest(doc)}
    if stamp is not None:
        annotations[ANNOTATION_ALLOWED_BY] = json.dumps(dict(stamp), sort_keys=True)
    if current is None or (current.get("data") or {}).get(_KEY) != text or stamp is not None:
        kube.apply({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": name, "namespace": owner.namespace,
                "labels": {LABEL_NAME: owner.name, LABEL_MANAGED_BY: "pilotboat",
                           _LABEL_CONTRACT: owner.name},
                "annotations": annotations,
                "ownerReferences": [owner.reference()],
            },
            "data": {_KEY: text},
        })  # fmt: skip
    keep = {name, *([_record_name(owner.name, stable_revision)] if stable_revision else [])}
    try:  # pruning is housekeeping: a failure (say, no RBAC to list) must not hold a release
        for cm in kube.list("ConfigMap", owner.namespace, labels={_LABEL_CONTRACT: owner.name}):
            if cm["metadata"]["name"] not in keep:
                kube.delete("ConfigMap", owner.namespace, cm["metadata"]["name"])
    except Exception:
        _log.warning("could not prune the old contracts of %s", owner.name, exc_info=True)


