"""Condition types and CamelCase reasons: the words `kubectl describe` shows a user.

One module, so that a reason means the same thing wherever it appears.
"""

from __future__ import annotations

# Condition types.
READY = "Ready"
AVAILABLE = "Available"
PROGRESSING = "Progressing"
SPEC_VALID = "SpecValid"
PAUSED = "Paused"
ROLLED_BACK = "RolledBack"

# Reasons.
DEPLOYMENT_MISSING = "DeploymentMissing"
DEPLOYMENT_PENDING = "DeploymentPending"
CHILD_REJECTED = "ChildRejected"
CHILD_NOT_OWNED = "ChildNotOwned"
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
BACKGROUND_ANALYSIS_FAILED = "BackgroundAnalysisFailed"
BACKGROUND_ANALYSIS = "BackgroundAnalysis"
REPLICAS_READY = "ReplicasReady"
REPLICAS_NOT_READY = "ReplicasNotReady"
ROLLING_OUT = "RollingOut"
INVALID_SPEC = "InvalidSpec"
VALID = "Valid"

# Owned databases (OwnedDatabase conditions and the Microservice's claim on one).
ADMIN_SECRET_MISSING = "AdminSecretMissing"
SERVER_UNREACHABLE = "ServerUnreachable"
DATABASE_READY = "DatabaseReady"
DATABASE_OWNED_BY_ANOTHER = "DatabaseOwnedByAnother"
DATABASE_NOT_DROPPED = "DatabaseNotDropped"
DATABASE_NOT_FOUND = "DatabaseNotFound"
DATABASE_NOT_READY = "DatabaseNotReady"
DATABASE_CLAIMED = "DatabaseClaimed"
DATABASE_FAILED = "DatabaseFailed"
DELETING = "Deleting"
# The DatabaseServer an OwnedDatabase names: refusals decided before connecting anywhere.
DATABASE_SERVER_NOT_FOUND = "DatabaseServerNotFound"
NAMESPACE_NOT_ALLOWED = "NamespaceNotAllowed"
CA_SECRET_MISSING = "CaSecretMissing"
# The server asked for a password by a method other than SCRAM: none was sent.
AUTHENTICATION_REFUSED = "AuthenticationRefused"

# Schema migrations: condition types beyond the gates (whose names are core.migration.GateName).
SQL_SAFE = "SqlSafe"
# Reasons.
MIGRATION_LOCKED = "MigrationLocked"
PHASE_FAILED = "PhaseFailed"
PHASE_APPLIED = "PhaseApplied"
CHECKSUM_MISMATCH = "ChecksumMismatch"
UNSAFE_SQL = "UnsafeSql"
SQL_WARNINGS = "SqlWarnings"
SQL_CLEAN = "SqlClean"
VERIFY_WAITING = "VerifyWaiting"

# Migration approvals.
VALID_CONDITION = "Valid"
APPROVAL_VALID = "ApprovalValid"
APPROVAL_VOID = "ApprovalVoid"
IDENTITY_MISSING = "IdentityMissing"
MIGRATION_NOT_FOUND = "MigrationNotFound"
APPROVAL_EXPIRED = "ApprovalExpired"
SELF_APPROVAL = "SelfApproval"
OTHER_MIGRATION = "OtherMigration"
MIGRATIONS_READY = "MigrationsReady"
WAITING_FOR_EXPAND = "WaitingForExpand"

# Microservice releases: the reasons of Progressing, Paused, RolledBack and Ready.
STABLE = "Stable"
RELEASING = "Releasing"
NOT_PAUSED = "NotPaused"
NOT_ROLLED_BACK = "NotRolledBack"
MIGRATIONS_APPLIED = "MigrationsApplied"
