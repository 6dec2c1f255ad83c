"""Whether one MigrationApproval counts: pure, so every rule is a table row.

An approval counts when all of these hold, checked in this order (the first that fails is
the reason given):

1. its approver's identity was verified by the API server (``identity_verified``: the
   approval was created while the admission policy that makes ``spec.approver`` the
   requesting user was in force) — else ``IdentityMissing``;
2. it names the migration it is counted for (``migration_uid`` unset, or that UID) — an
   approval of a deleted SchemaMigration of the same name never counts: ``OtherMigration``;
3. with ``separate_approver``, its approver is not who last changed the contract SQL —
   ``SelfApproval``;
4. with ``expires_after``, it is younger than that — ``ApprovalExpired``;
5. it approved the contract SQL as it is now (``checksum`` equal to the current one) —
   ``ApprovalVoid`` otherwise.

>>> from datetime import datetime, timedelta, timezone
>>> t = datetime(2026, 12, 1, tzinfo=timezone.utc)
>>> judge_approval(ApprovalFacts("alice", True, "m1", "c1", t),
...                MigrationFacts("m1", "c1", "bob"), ApprovalPolicy(), now=t).reason
'ApprovalValid'
>>> judge_approval(ApprovalFacts("bob", True, "m1", "c1", t),
...                MigrationFacts("m1", "c1", "bob"), ApprovalPolicy(separate_approver=True),
...                now=t).reason
'SelfApproval'
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pilotboat.core import reasons

__all__ = ["ApprovalFacts", "ApprovalPolicy", "ApprovalVerdict", "MigrationFacts", "judge_approval"]


@dataclass(frozen=True)
class ApprovalFacts:
    approver: str
    identity_verified: bool
    migration_uid: str | None
    checksum: str
    """The contract checksum the approver was shown (or, unsent, the one at admission)."""
    created_at: datetime


@dataclass(frozen=True)
class MigrationFacts:
    uid: str
    checksum: str
    """The contract SQL's checksum now."""
    contract_author: str | None
    """Who last changed the contract SQL, as the API server saw them (None: unknown)."""


@dataclass(frozen=True)
class ApprovalPolicy:
    separate_approver: bool = False
    expires_after: timedelta | None = None


@dataclass(frozen=True)
class ApprovalVerdict:
    valid: bool
    reason: str
    message: str


def judge_approval(
    approval: ApprovalFacts, migration: MigrationFacts, policy: ApprovalPolicy, *, now: datetime
) -> ApprovalVerdict:
    who = approval.approver or "?"
    if not approval.identity_verified:
        return ApprovalVerdict(
            False,
            reasons.IDENTITY_MISSING,
            "not counted: the API server did not verify who created it (it was created while "
            "the pilotboat-approver-identity admission policy was not in force); delete it "
            "and approve again",
        )
    if approval.migration_uid and approval.migration_uid != migration.uid:
        return ApprovalVerdict(
            False,
            reasons.OTHER_MIGRATION,
            f"not counted: it approves SchemaMigration UID {approval.migration_uid}, an earlier "
            f"object of the same name (this one is {migration.uid})",
        )
    if policy.separate_approver and migration.contract_author in (None, approval.approver):
        author = migration.contract_author or "an unknown user"
        return ApprovalVerdict(
            False,
            reasons.SELF_APPROVAL,
            f"not counted: {who} approves a contract last changed by {author}, and "
            "spec.contract.approval.separateApprover asks for another person",
        )
    if policy.expires_after is not None and now - approval.created_at > policy.expires_after:
        return ApprovalVerdict(
            False,
            reasons.APPROVAL_EXPIRED,
            f"expired: {who} approved at {approval.created_at.isoformat()}, and approvals count "
            f"for {policy.expires_after} (spec.contract.approval.expiresAfter); approve again",
        )
    if approval.checksum != migration.checksum:
        return ApprovalVerdict(
            False,
            reasons.APPROVAL_VOID,
            f"void: {who} approved contract checksum {approval.checksum}, but the contract "
            f"SQL has changed since (checksum now {migration.checksum}); approve again",
        )
    return ApprovalVerdict(
        True, reasons.APPROVAL_VALID, f"{who} approved contract checksum {approval.checksum}"
    )
