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

import datetime as _dt
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pilotboat.api.common import parse_duration
from pilotboat.core import reasons
from pilotboat.core.approval import ApprovalFacts, ApprovalPolicy, MigrationFacts, judge_approval
from pilotboat.core.conditions import DesiredCondition
from pilotboat.core.migration import Approval, checksum
from pilotboat.handlers.context import Reconcile, now_rfc3339
from pilotboat.handlers.ports import Kube

__all__ = [
    "ANNOTATION_APPROVER",
    "ANNOTATION_CONTRACT_AUTHOR",
    "ApprovalRefused",
    "admit_approval",
    "approvals_for",
    "approved_phases",
    "contract_author",
    "contract_author_patch",
    "identity_enforced_since",
    "sync_approval",
]

ANNOTATION_APPROVER = "pilotboat.dev/approver"


class ApprovalRefused(Exception):
    """The admission request must be refused; the message says why."""


def _phase_checksum(migration: Mapping[str, Any] | None, phase: str = "contract") -> str | None:
    """The checksum of ``phase``'s SQL in the migration as it is now (None: no such SQL)."""
    sql = (((migration or {}).get("spec") or {}).get(phase) or {}).get("sql")
    return checksum(sql) if isinstance(sql, str) else None


def _phase_of(approval: Mapping[str, Any]) -> str:
    return str((approval.get("spec") or {}).get("phase") or "contract")


def admit_approval(
    kube: Kube,
    operation: str,
    body: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    userinfo: Mapping[str, Any],
) -> dict[str, Any] | None:
    """The patch for an approval being admitted (None: none); raises to refuse.

    On CREATE: ``spec.approver``, ``spec.migrationUID`` and ``spec.checksum`` are filled in
    where the client left them out (the requesting user; the migration's UID and the
    approved phase's SQL checksum now), and refused where the client gave them and they are
    wrong: an approver other than the requesting user, a re-created migration, SQL that
    changed since the approver was shown it, or (with ``separateApprover``, for the
    contract) the contract's own author. The annotation records the user's UID and groups
    and the time.
    """
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
    username = str(userinfo.get("username") or "")
    phase = _phase_of(body)
    current = _phase_checksum(migration, phase)
    if current is None:
        raise ApprovalRefused(
            f"SchemaMigration {migration_name} has no {phase} phase; there is nothing to approve"
        )
    uid = str(migration["metadata"].get("uid") or "")
    _refuse_wrong(spec, username, uid, current, migration, phase)
    stamp = {
        "username": username,
        "uid": str(userinfo.get("uid") or ""),
        "groups": [str(g) for g in userinfo.get("groups") or []],
        "checksum": spec.get("checksum") or current,
        "approvedAt": now_rfc3339(),
    }
    return {
        "metadata": {"annotations": {ANNOTATION_APPROVER: json.dumps(stamp, sort_keys=True)}},
        "spec": {
            "approver": username,
            "migrationUID": spec.get("migrationUID") or uid,
            "checksum": spec.get("checksum") or current,
        },
    }


def _refuse_wrong(
    spec: Mapping[str, Any],
    username: str,
    uid: str,
    current: str,
    migration: Mapping[str, Any],
    phase: str,
) -> None:
    name = migration["metadata"]["name"]
    if spec.get("approver") and spec["approver"] != username:
        raise ApprovalRefused(
            f"spec.approver is {spec['approver']}, but the API server authenticated this "
            f"request as {username}; leave spec.approver out or give your own name"
        )
    if spec.get("migrationUID") and spec["migrationUID"] != uid:
        raise ApprovalRefused(
            f"spec.migrationUID {spec['migrationUID']} is not SchemaMigration {name}'s "
            f"(UID {uid}): it was deleted and re-created since; look at it again"
        )
    if spec.get("checksum") and spec["checksum"] != current:
        raise ApprovalRefused(
            f"spec.checksum {spec['checksum']} is stale: SchemaMigration {name}'s {phase} SQL "
            f"has changed since you were shown it (checksum now {current}); read it again "
            "(pilotboat approve shows it) and approve that"
        )
    policy = _policy(migration, phase)
    author = contract_author(migration)
    if policy.separate_approver and author == username:
        raise ApprovalRefused(
            f"{username} last changed SchemaMigration {name}'s contract SQL and may not "
            "approve it: spec.contract.approval.separateApprover asks for another person"
        )


ANNOTATION_CONTRACT_AUTHOR = "pilotboat.dev/contract-author"
IDENTITY_POLICY = "pilotboat-approver-identity"


def contract_author_patch(
    operation: str,
    body: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    userinfo: Mapping[str, Any],
) -> dict[str, str] | None:
    """The annotation naming the requesting user, when it creates a SchemaMigration or
    changes its contract SQL; None otherwise (the recorded author stays)."""
    sql = ((body.get("spec") or {}).get("contract") or {}).get("sql")
    old_sql = (((old or {}).get("spec") or {}).get("contract") or {}).get("sql")
    if operation == "UPDATE" and sql == old_sql:
        return None
    if operation not in ("CREATE", "UPDATE") or not userinfo.get("username"):
        return None
    return {ANNOTATION_CONTRACT_AUTHOR: str(userinfo["username"])}


def contract_author(migration: Mapping[str, Any]) -> str | None:
    """Who last changed the migration's contract SQL (the admission policy
    pilotboat-contract-author makes the annotation name the requesting user)."""
    annotations = (migration.get("metadata") or {}).get("annotations") or {}
    author = annotations.get(ANNOTATION_CONTRACT_AUTHOR)
    return str(author) if author else None


def _policy(migration: Mapping[str, Any] | None, phase: str = "contract") -> ApprovalPolicy:
    approval = (((migration or {}).get("spec") or {}).get("contract") or {}).get("approval")
    if phase != "contract" or not isinstance(approval, Mapping):
        return ApprovalPolicy()
    expires = approval.get("expiresAfter")
    return ApprovalPolicy(
        separate_approver=bool(approval.get("separateApprover")),
        expires_after=timedelta(seconds=parse_duration(str(expires))) if expires else None,
    )


def _well_formed(spec: Mapping[str, Any]) -> bool:
    migration = spec.get("migration")
    return (
        isinstance(migration, str)
        and bool(migration)
        and spec.get("phase", "contract") in ("expand", "backfill", "contract")
        and set(spec) <= {"migration", "phase", "reason", "approver", "migrationUID", "checksum"}
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


def _time(text: str | None) -> _dt.datetime | None:
    if not text:
        return None
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def identity_enforced_since(kube: Kube, policy: str = IDENTITY_POLICY) -> _dt.datetime | None:
    """Since when the API server has enforced ``spec.approver`` (the admission policy and its
    binding, as they last changed); None when either is missing. ``policy`` names another
    identity policy installed the same way (pilotboat-command-identity)."""
    since: _dt.datetime | None = None
    for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
        obj = kube.get(kind, None, policy)
        if obj is None:
            return None
        if kind.endswith("Binding") and "Deny" not in (obj.get("spec") or {}).get(
            "validationActions", []
        ):
            return None
        meta = obj["metadata"]
        times = [meta.get("creationTimestamp")] + [
            m.get("time") for m in meta.get("managedFields") or []
        ]
        for moment in filter(None, map(_time, times)):
            since = moment if since is None or moment > since else since
    return since


def sync_approval(
    kube: Kube,
    approval: Mapping[str, Any],
    migration: Mapping[str, Any] | None,
    rc: Reconcile | None = None,
    *,
    enforced_since: _dt.datetime | None | bool = False,
) -> Approval | None:
    """Write the approval's status from what it says and the migration as it is now.

    Returns the core :class:`Approval` the contract gate counts (valid, or void because the
    SQL changed), or None when it does not count for another reason (in its status).
    ``enforced_since`` is :func:`identity_enforced_since`, looked up when not given.
    """
    rc = rc or Reconcile.start(kube, approval)
    meta = approval["metadata"]
    spec = approval.get("spec") or {}
    status: dict[str, Any] = dict(approval.get("status") or {})
    since = identity_enforced_since(kube) if enforced_since is False else enforced_since
    created = _time(meta.get("creationTimestamp")) or _dt.datetime.now(_dt.UTC)
    assert since is None or isinstance(since, _dt.datetime)
    approver = str(spec.get("approver") or "")
    stamp = _stamp(approval) or {}
    phase = _phase_of(approval)
    checksum_seen = str(
        spec.get("checksum") or stamp.get("checksum") or stamp.get("contractChecksum") or ""
    )
    fields: dict[str, Any] = {"observedGeneration": int(meta.get("generation", 0))}
    if approver:
        same = stamp.get("username") == approver
        fields["approvedBy"] = {
            "username": approver,
            "uid": str(stamp.get("uid", "")) if same else "",
            "groups": list(stamp.get("groups") or []) if same else [],
        }
        fields["approvedAt"] = meta.get("creationTimestamp")
        fields["migrationChecksum"] = checksum_seen
    if migration is None:
        condition = DesiredCondition(
            reasons.VALID_CONDITION, "False", reasons.MIGRATION_NOT_FOUND,
            f"SchemaMigration {spec.get('migration')} does not exist",
        )  # fmt: skip
        rc.write_status(status, [condition], {**fields, "valid": False})
        return None
    verdict = judge_approval(
        ApprovalFacts(
            approver=approver,
            identity_verified=bool(approver) and since is not None and created > since,
            migration_uid=spec.get("migrationUID"),
            checksum=checksum_seen,
            created_at=created,
        ),
        MigrationFacts(
            uid=str(migration["metadata"].get("uid") or ""),
            checksum=_phase_checksum(migration, phase) or "",
            contract_author=contract_author(migration),
        ),
        _policy(migration, phase),
        now=_dt.datetime.now(_dt.UTC),
    )
    condition = DesiredCondition(
        reasons.VALID_CONDITION, "True" if verdict.valid else "False", verdict.reason,
        verdict.message,
    )  # fmt: skip
    rc.write_status(status, [condition], {**fields, "valid": verdict.valid})
    if verdict.valid or verdict.reason == reasons.APPROVAL_VOID:
        return Approval(approver=approver, checksum=checksum_seen)
    return None


def approvals_for(
    kube: Kube, namespace: str, migration: Mapping[str, Any]
) -> dict[str, tuple[Approval, ...]]:
    """The approvals of ``migration``, by phase (void ones too), their status brought
    current."""
    name = migration["metadata"]["name"]
    found: dict[str, list[Approval]] = {}
    since = identity_enforced_since(kube)
    for approval in kube.list("MigrationApproval", namespace):
        if (approval.get("spec") or {}).get("migration") != name:
            continue
        if approval["metadata"].get("deletionTimestamp"):
            continue
        result = sync_approval(kube, approval, migration, enforced_since=since)
        if result is not None:
            found.setdefault(_phase_of(approval), []).append(result)
    return {phase: tuple(approvals) for phase, approvals in found.items()}


def approved_phases(
    migration: Mapping[str, Any], approvals: Mapping[str, tuple[Approval, ...]]
) -> frozenset[str]:
    """The phases with a valid approval of their SQL as it is now."""
    return frozenset(
        phase
        for phase, given in approvals.items()
        if any(a.checksum == _phase_checksum(migration, phase) for a in given)
    )
