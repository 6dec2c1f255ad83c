"""MigrationApprovals: who approved which contract, as the API server authenticated them.

Identity comes from admission, never from the object's own fields. The mutating webhook
(:mod:`pilotboat.handlers.webhooks`) calls :func:`admit_approval` on every CREATE and UPDATE:

* on CREATE it writes the annotation ``pilotboat.dev/approver`` from the request's
  ``userInfo`` (user name, uid, groups) and the checksum of the migration's contract SQL *at
  that moment*, replacing anything the client put there;
* on UPDATE it refuses any change to that annotation or to the spec: an approval is
  immutable; delete it and create another.

The webhook's ``failurePolicy`` is ``Fail``, so no approval reaches etcd without the stamp
written by the webhook. The operator copies the stamp into ``status`` (``approvedBy``,
``approvedAt``, ``migrationChecksum``) and keeps ``status.valid`` current: an approval of a
contract whose SQL has changed since is void. An operator started with ``--no-webhooks``
cannot tell a stamp from a forgery, so it counts no approval (condition ``Valid`` False,
reason ``IdentityMissing``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from pilotboat import GROUP, VERSION
from pilotboat.adapters.kube import Kube
from pilotboat.core import reasons
from pilotboat.core.conditions import DesiredCondition
from pilotboat.core.migration import Approval, checksum
from pilotboat.handlers.context import Reconcile, now_rfc3339, runtime

__all__ = [
    "ANNOTATION_APPROVER",
    "ApprovalRefused",
    "admit_approval",
    "approvals_for",
    "sync_approval",
]

ANNOTATION_APPROVER = "pilotboat.dev/approver"


class ApprovalRefused(Exception):
    """The admission request must be refused; the message says why."""


def _contract_checksum(migration: Mapping[str, Any] | None) -> str | None:
    sql = (((migration or {}).get("spec") or {}).get("contract") or {}).get("sql")
    return checksum(sql) if isinstance(sql, str) else None


def admit_approval(
    kube: Kube,
    operation: str,
    body: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    userinfo: Mapping[str, Any],
) -> dict[str, str] | None:
    """Annotations to set on an approval being admitted (None: none); raises to refuse."""
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    if operation == "UPDATE":
        old_meta = (old or {}).get("metadata") or {}
        if (old_meta.get("annotations") or {}).get(ANNOTATION_APPROVER) != annotations.get(
            ANNOTATION_APPROVER
        ):
            raise ApprovalRefused(
                f"the annotation {ANNOTATION_APPROVER} records who approved, as the API server "
                "saw them; it cannot be changed"
            )
        if (old or {}).get("spec") != body.get("spec"):
            raise ApprovalRefused(
                "a MigrationApproval cannot change; delete it and create a new one"
            )
        return None
    if operation != "CREATE":
        return None
    spec = body.get("spec")
    if not isinstance(spec, Mapping) or not _well_formed(spec):
        # Mutating admission runs before schema validation: leave a malformed approval to
        # the schema, which refuses it naming the field.
        return None
    migration_name = spec.get("migration")
    migration = kube.get("SchemaMigration", meta.get("namespace"), str(migration_name))
    if migration is None:
        raise ApprovalRefused(
            f"SchemaMigration {migration_name} does not exist in namespace "
            f"{meta.get('namespace')}; there is nothing to approve"
        )
    stamp = {
        "username": str(userinfo.get("username") or ""),
        "uid": str(userinfo.get("uid") or ""),
        "groups": [str(g) for g in userinfo.get("groups") or []],
        "contractChecksum": _contract_checksum(migration),
        "approvedAt": now_rfc3339(),
    }
    return {ANNOTATION_APPROVER: json.dumps(stamp, sort_keys=True)}


def _well_formed(spec: Mapping[str, Any]) -> bool:
    migration = spec.get("migration")
    return (
        isinstance(migration, str)
        and bool(migration)
        and spec.get("phase", "contract") == "contract"
        and set(spec) <= {"migration", "phase", "reason"}
    )


def _stamp(approval: Mapping[str, Any]) -> dict[str, Any] | None:
    raw = ((approval.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_APPROVER)
    if not raw:
        return None
    try:
        stamp = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(stamp, dict) or not stamp.get("username"):
        return None
    return stamp


def _trusted() -> bool:
    return bool(runtime().extras.get("webhooks", False))


def sync_approval(
    kube: Kube,
    approval: Mapping[str, Any],
    migration: Mapping[str, Any] | None,
    rc: Reconcile | None = None,
) -> Approval | None:
    """Write the approval's status from its stamp and the migration as it is now.

    Returns the core :class:`Approval` it stands for (valid or void), or None when it has no
    trustworthy stamp.
    """
    rc = rc or Reconcile.start(kube, approval)
    meta = approval["metadata"]
    status: dict[str, Any] = dict(approval.get("status") or {})
    stamp = _stamp(approval) if _trusted() else None
    current = _contract_checksum(migration)
    fields: dict[str, Any] = {"observedGeneration": int(meta.get("generation", 0))}
    result: Approval | None = None
    if stamp is None:
        why = (
            "this operator runs without admission webhooks and cannot verify who created it"
            if not _trusted()
            else f"it has no {ANNOTATION_APPROVER} stamp from the admission webhook "
            "(was it created while the webhook was not serving?); delete it and approve again"
        )
        condition = DesiredCondition(
            reasons.VALID_CONDITION, "False", reasons.IDENTITY_MISSING, f"not counted: {why}"
        )
        fields["valid"] = False
    else:
        approved = stamp.get("contractChecksum") or current
        fields["approvedBy"] = {
            "username": stamp["username"],
            "uid": stamp.get("uid", ""),
            "groups": list(stamp.get("groups") or []),
        }
        fields["approvedAt"] = stamp.get("approvedAt")
        fields["migrationChecksum"] = approved
        result = Approval(approver=str(stamp["username"]), checksum=str(approved))
        if migration is None:
            condition = DesiredCondition(
                reasons.VALID_CONDITION,
                "False",
                reasons.MIGRATION_NOT_FOUND,
                f"SchemaMigration {approval['spec'].get('migration')} does not exist",
            )
            fields["valid"] = False
        elif approved != current:
            condition = DesiredCondition(
                reasons.VALID_CONDITION,
                "False",
                reasons.APPROVAL_VOID,
                f"void: {stamp['username']} approved contract checksum {approved}, but the "
                f"contract SQL has changed since (checksum now {current}); approve again",
            )
            fields["valid"] = False
        else:
            condition = DesiredCondition(
                reasons.VALID_CONDITION,
                "True",
                reasons.APPROVAL_VALID,
                f"{stamp['username']} approved contract checksum {approved}",
            )
            fields["valid"] = True
    rc.write_status(status, [condition], fields)
    return result


def approvals_for(kube: Kube, namespace: str, migration: Mapping[str, Any]) -> tuple[Approval, ...]:
    """The approvals of ``migration``'s contract (void ones too), their status brought current."""
    name = migration["metadata"]["name"]
    found = []
    for approval in kube.list("MigrationApproval", namespace):
        spec = approval.get("spec") or {}
        if spec.get("migration") != name or spec.get("phase", "contract") != "contract":
            continue
        if approval["metadata"].get("deletionTimestamp"):
            continue
        result = sync_approval(kube, approval, migration)
        if result is not None:
            found.append(result)
    return tuple(found)


@kopf.on.event(GROUP, VERSION, "migrationapprovals")
def on_approval_event(
    event: kopf.RawEvent,
    body: kopf.Body,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    from pilotboat.handlers.migrations import reconcile_soon

    meta = body["metadata"]
    migration_name = (body.get("spec") or {}).get("migration")
    if event.get("type") != "DELETED":
        kube = runtime().kube
        fresh = kube.get("MigrationApproval", meta["namespace"], meta["name"])
        if fresh is not None:
            migration = kube.get("SchemaMigration", meta["namespace"], str(migration_name))
            sync_approval(kube, fresh, migration, Reconcile.start(kube, fresh, logger))
    if migration_name:
        reconcile_soon(meta["namespace"], str(migration_name))
