"""Whether a MigrationApproval counts: every rule of core/approval.py as a table row."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime, timedelta

import pytest

import pilotboat.core.approval
from pilotboat.core.approval import (
    ApprovalFacts,
    ApprovalPolicy,
    MigrationFacts,
    judge_approval,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
MIGRATION = MigrationFacts(uid="uid-1", checksum="c-now", contract_author="dev")


def facts(**changes: object) -> ApprovalFacts:
    base = {"approver": "dba", "identity_verified": True, "migration_uid": "uid-1",
            "checksum": "c-now", "created_at": T0}
    return ApprovalFacts(**{**base, **changes})  # type: ignore[arg-type]


def test_docstring_examples_hold() -> None:
    result = doctest.testmod(pilotboat.core.approval)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    ("approval", "migration", "policy", "now", "valid", "reason"),
    [
        (facts(), MIGRATION, ApprovalPolicy(), T0, True, "ApprovalValid"),
        (facts(migration_uid=None), MIGRATION, ApprovalPolicy(), T0, True, "ApprovalValid"),
        (facts(identity_verified=False), MIGRATION, ApprovalPolicy(), T0, False,
         "IdentityMissing"),
        (facts(migration_uid="uid-0"), MIGRATION, ApprovalPolicy(), T0, False, "OtherMigration"),
        (facts(approver="dev"), MIGRATION, ApprovalPolicy(separate_approver=True), T0, False,
         "SelfApproval"),
        (facts(approver="dev"), MIGRATION, ApprovalPolicy(), T0, True, "ApprovalValid"),
        (facts(), MigrationFacts("uid-1", "c-now", None), ApprovalPolicy(separate_approver=True),
         T0, False, "SelfApproval"),  # an unknown author cannot be told apart from the approver
        (facts(), MIGRATION, ApprovalPolicy(expires_after=timedelta(hours=1)),
         T0 + timedelta(minutes=59), True, "ApprovalValid"),
        (facts(), MIGRATION, ApprovalPolicy(expires_after=timedelta(hours=1)),
         T0 + timedelta(minutes=61), False, "ApprovalExpired"),
        (facts(checksum="c-old"), MIGRATION, ApprovalPolicy(), T0, False, "ApprovalVoid"),
        # The first rule that fails is the one named.
        (facts(identity_verified=False, checksum="c-old"), MIGRATION, ApprovalPolicy(), T0,
         False, "IdentityMissing"),
    ],
)
def test_an_approval_counts_only_when_every_rule_holds(
    approval: ApprovalFacts, migration: MigrationFacts, policy: ApprovalPolicy, now: datetime,
    valid: bool, reason: str,
) -> None:
    verdict = judge_approval(approval, migration, policy, now=now)
    assert (verdict.valid, verdict.reason) == (valid, reason)
    assert verdict.message
