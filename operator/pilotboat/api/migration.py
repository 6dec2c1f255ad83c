"""SchemaMigration (expand, backfill, verify, contract) and MigrationApproval."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pilotboat.api.common import (
    Duration,
    LabelValue,
    ObjectName,
    SpecModel,
    StatusBase,
    StatusModel,
)
from pilotboat.api.kind import KindDescriptor, PrinterColumn

__all__ = [
    "RequiredBy",
    "ExpandPhase",
    "BackfillPhase",
    "VerifyCheck",
    "ContractApproval",
    "ContractPhase",
    "SchemaMigrationSpec",
    "SchemaMigrationPhase",
    "MigrationPhaseName",
    "AppliedPhase",
    "BackfillProgress",
    "MigrationChecksums",
    "GateStatus",
    "VersionSeen",
    "SchemaMigrationStatus",
    "SCHEMA_MIGRATION",
    "ApprovedPhase",
    "MigrationApprovalSpec",
    "ApproverIdentity",
    "MigrationApprovalStatus",
    "MIGRATION_APPROVAL",
]

SchemaMigrationPhase = Literal[
    "Pending",
    "Expanding",
    "Expanded",
    "BackfillRunning",
    "AwaitingContract",
    "Contracting",
    "Contracted",
    "Failed",
    "RolledBack",
]
MigrationPhaseName = Literal["expand", "backfill", "verify", "contract", "down"]
ApprovedPhase = Literal["expand", "backfill", "contract"]


class RequiredBy(SpecModel):
    """The service version that needs the expanded schema."""

    service: ObjectName = Field(description="Name of the Microservice.")
    version: LabelValue = Field(description="Its version that needs the expand.")


class ExpandPhase(SpecModel):
    """The additive half: SQL that old and new versions both survive."""

    sql: str = Field(
        min_length=1, description="SQL run once, in a transaction, before the rollout."
    )
    down: str | None = Field(default=None, description="SQL that undoes the expand.")


class BackfillPhase(SpecModel):
    """Data copied in batches after the expand."""

    sql: str = Field(
        min_length=1,
        description="A statement run repeatedly with :batch_size until it affects 0 rows.",
    )
    batch_size: int = Field(default=1000, ge=1, le=1_000_000, description="Rows per batch.")
    pause_between_batches: Duration = Field(default="0s", description="Wait between two batches.")


class VerifyCheck(SpecModel):
    """A check that must hold before the contract."""

    sql: str = Field(min_length=1, description="A query that returns one boolean; true = holds.")


class ContractApproval(SpecModel):
    """Who may approve the contract, and for how long an approval counts."""

    separate_approver: bool = Field(
        default=False,
        description="The user who last changed the contract SQL may not approve it "
        "(separation of duties).",
    )
    expires_after: Duration | None = Field(
        default=None,
        description="An approval older than this no longer counts (e.g. 72h); never if unset.",
    )


class ContractPhase(SpecModel):
    """The destructive half: SQL run only when no old version runs and an approval exists."""

    sql: str = Field(min_length=1, description="SQL run once, in a transaction.")
    soak: Duration = Field(
        default="0s", description="How long the new version must have run alone first."
    )
    retired_versions: list[str] | None = Field(
        default=None,
        description="Versions that must be gone first; all but requiredBy.version if unset.",
    )
    approval: ContractApproval | None = Field(
        default=None, description="Separation of duties and expiry of approvals."
    )


class SchemaMigrationSpec(SpecModel):
    """An expand/contract migration of one OwnedDatabase, tied to the release that needs it."""

    database: ObjectName = Field(description="Name of the OwnedDatabase in this namespace.")
    required_by: RequiredBy = Field(description="The service version that needs the expand.")
    expand: ExpandPhase = Field(description="The additive half, run before the rollout.")
    backfill: BackfillPhase | None = Field(default=None, description="Batched data copy.")
    verify: VerifyCheck | None = Field(default=None, description="A check before the contract.")
    contract: ContractPhase = Field(description="The destructive half, run after approval.")
    run_down_on_rollback: bool = Field(
        default=False, description="Run expand.down when the release that needs it rolls back."
    )
    lock_timeout: Duration = Field(default="5s", description="PostgreSQL lock_timeout per phase.")
    statement_timeout: Duration = Field(
        default="5m", description="PostgreSQL statement_timeout per phase."
    )


class AppliedPhase(StatusModel):
    """A phase the operator ran, recorded so it never runs twice."""

    phase: MigrationPhaseName = Field(description="expand, backfill, verify, contract or down.")
    checksum: str = Field(description="SHA-256 of the SQL that ran.")
    applied_at: str | None = Field(default=None, description="When it finished (RFC 3339).")
    applied_by: str | None = Field(default=None, description="Who or what ran it.")


class BackfillProgress(StatusModel):
    """How far the backfill got."""

    rows_processed: int = Field(default=0, ge=0, description="Rows affected so far.")
    batches: int = Field(default=0, ge=0, description="Batches run so far.")
    done: bool = Field(default=False, description="Whether a batch affected 0 rows.")


class MigrationChecksums(StatusModel):
    """SHA-256 checksums of the SQL as first seen; a later change is refused."""

    expand: str | None = Field(default=None, description="Checksum of expand.sql.")
    contract: str | None = Field(default=None, description="Checksum of contract.sql.")


class GateStatus(StatusModel):
    """One condition the contract waits for."""

    name: str = Field(description="The gate, e.g. OldVersionsGone, SoakElapsed, Verified.")
    holds: bool = Field(description="Whether it holds now.")
    reason: str = Field(default="", description="CamelCase reason.")
    message: str = Field(default="", description="Why, in a sentence.")


class VersionSeen(StatusModel):
    """When a version of the required service was last seen running (pods, not spec)."""

    version: str = Field(description="Value of the pods' app.kubernetes.io/version label.")
    last_seen: str = Field(description="When a pod of it was last seen running (RFC 3339).")
    pods: int = Field(default=0, ge=0, description="Pods of it running at that moment.")


class SchemaMigrationStatus(StatusBase):
    """What the operator observed and did about a SchemaMigration."""

    phase: SchemaMigrationPhase | None = Field(default=None, description="Where the migration is.")
    applied_phases: list[AppliedPhase] = Field(
        default_factory=list, description="Phases run, in order."
    )
    backfill: BackfillProgress | None = Field(default=None, description="Backfill progress.")
    checksums: MigrationChecksums | None = Field(default=None, description="Checksums of the SQL.")
    gates: list[GateStatus] = Field(
        default_factory=list, description="The contract's gates and whether each holds."
    )
    versions_seen: list[VersionSeen] = Field(
        default_factory=list,
        description="Versions of the required service seen running, and when last; "
        "the soak counts from the last sighting of a retired version.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["version"],
        },
    )
    message: str | None = Field(
        default=None, description="What the migration waits for, or why it failed."
    )


SCHEMA_MIGRATION = KindDescriptor(
    kind="SchemaMigration",
    plural="schemamigrations",
    singular="schemamigration",
    short_names=("smig",),
    spec_model=SchemaMigrationSpec,
    status_model=SchemaMigrationStatus,
    description="An expand/contract schema migration gated by releases, checks and approval.",
    printer_columns=(
        PrinterColumn("Database", ".spec.database", description="The OwnedDatabase."),
        PrinterColumn("Phase", ".status.phase", description="Where the migration is."),
        PrinterColumn("Required", ".spec.requiredBy.version", description="Version that needs it."),
    ),
)


class MigrationApprovalSpec(SpecModel):
    """An approval of one phase of one SchemaMigration."""

    migration: ObjectName = Field(description="Name of the SchemaMigration in this namespace.")
    phase: ApprovedPhase = Field(
        default="contract",
        description="The phase approved: contract (always needed), or expand/backfill when "
        "the SQL linter says their SQL needs approval (e.g. a backfill that deletes).",
    )
    reason: str | None = Field(default=None, max_length=4096, description="Why, for the record.")
    approver: str | None = Field(
        default=None,
        max_length=512,
        description="Who approves: the requesting user's name, which the API server checks "
        "(admission policy pilotboat-approver-identity); filled in at admission when unset.",
    )
    migration_uid: str | None = Field(
        default=None,
        alias="migrationUID",
        max_length=64,
        description="UID of the SchemaMigration approved: an approval never counts for a "
        "later object of the same name. Filled in at admission when unset.",
    )
    checksum: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 of the approved phase's SQL as the approver was shown it "
        "(pilotboat approve sends it); a stale one is refused. The SQL's at admission when "
        "unset.",
    )


class ApproverIdentity(StatusModel):
    """The user who created the approval, as the API server authenticated them."""

    username: str = Field(default="", description="User name.")
    uid: str = Field(default="", description="User UID.")
    groups: list[str] = Field(default_factory=list, description="Groups of the user.")


class MigrationApprovalStatus(StatusBase):
    """What the operator recorded about an approval."""

    approved_by: ApproverIdentity | None = Field(default=None, description="Who approved.")
    approved_at: str | None = Field(default=None, description="When (RFC 3339).")
    migration_checksum: str | None = Field(
        default=None, description="Checksum of the migration's contract SQL that was approved."
    )
    valid: bool | None = Field(
        default=None, description="Whether the approval still matches the migration."
    )


MIGRATION_APPROVAL = KindDescriptor(
    kind="MigrationApproval",
    plural="migrationapprovals",
    singular="migrationapproval",
    short_names=("mapr",),
    spec_model=MigrationApprovalSpec,
    status_model=MigrationApprovalStatus,
    description="An approval, by an RBAC-allowed user, of a SchemaMigration's contract phase.",
    printer_columns=(
        PrinterColumn("Migration", ".spec.migration", description="The SchemaMigration."),
        PrinterColumn("Phase", ".spec.phase", description="The phase approved."),
        PrinterColumn("ApprovedBy", ".status.approvedBy.username", description="Who approved."),
        PrinterColumn("Valid", ".status.valid", "boolean", description="Still matches."),
    ),
)
