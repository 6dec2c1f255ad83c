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

# Microservice releases: the Events of a release's steps and its children.
ROLLOUT_STARTED = "RolloutStarted"
WEIGHT_SET = "WeightSet"
ANALYSIS_SKIPPED = "AnalysisSkipped"
ANALYSIS_PASSED = "AnalysisPassed"
ANALYSIS_PAUSED = "AnalysisPaused"
PAUSE_SKIPPED = "PauseSkipped"
STEP_SKIPPED = "StepSkipped"
MIRROR_SET = "MirrorSet"
FLAG_SET = "FlagSet"
PROMOTING = "Promoting"
PROMOTED = "Promoted"
ABORTED = "Aborted"
CONTRACT_BROKEN = "ContractBroken"
DEPLOYMENT_CREATED = "DeploymentCreated"
DEPLOYMENT_UPDATED = "DeploymentUpdated"
SERVICE_CREATED = "ServiceCreated"
SERVICE_UPDATED = "ServiceUpdated"
# Traffic routers.
HTTP_ROUTE_MISSING = "HTTPRouteMissing"
TRAFFIC_SHIFTED = "TrafficShifted"

# Adoption of an existing Deployment (workloadRef) and its hand-back.
ADOPTED = "Adopted"
ADOPTED_SCALED_DOWN = "AdoptedScaledDown"
HANDED_BACK = "HandedBack"
HAND_BACK_TIMED_OUT = "HandBackTimedOut"

# API contracts: the ContractCompatible condition of a Microservice.
CONTRACT_COMPATIBLE = "ContractCompatible"
COMPATIBLE = "Compatible"
CONTRACT_UNREADABLE = "ContractUnreadable"
BREAKING_CHANGE = "BreakingChange"
BREAKING_CHANGE_ALLOWED = "BreakingChangeAllowed"

# Feature flags: a FeatureFlag's conditions and the flagd ConfigMap of a Microservice.
INVALID_FLAG = "InvalidFlag"
RENDERED = "Rendered"
FLAGS_CONFIG_CREATED = "FlagsConfigCreated"
FLAGS_CONFIG_UPDATED = "FlagsConfigUpdated"
FLAG_PROBLEM = "FlagProblem"

# Owned databases: Events.
CREDENTIALS_SECRET_CREATED = "CredentialsSecretCreated"
DATABASE_DROPPED = "DatabaseDropped"

# Schema migrations: the reasons of Ready (the decision) ...
EXPAND_PENDING = "ExpandPending"
BACKFILL_PENDING = "BackfillPending"
VERIFY_PENDING = "VerifyPending"
GATES_HOLD = "GatesHold"
CONTRACTED = "Contracted"
DOWN_APPLIED = "DownApplied"
DOWN_MISSING = "DownMissing"
ROLLOUT_ROLLED_BACK = "RolloutRolledBack"
# ... and of each gate's condition.
EXPAND_APPLIED = "ExpandApplied"
EXPAND_NOT_APPLIED = "ExpandNotApplied"
BACKFILL_NOT_FINISHED = "BackfillNotFinished"
OLD_VERSIONS_GONE = "OldVersionsGone"
OLD_VERSIONS_RUNNING = "OldVersionsRunning"
REQUIRED_VERSION_NOT_RUNNING = "RequiredVersionNotRunning"
SOAK_NOT_STARTED = "SoakNotStarted"
SOAKING = "Soaking"
SOAK_ELAPSED = "SoakElapsed"
NO_VERIFY_QUERY = "NoVerifyQuery"
VERIFY_NOT_RUN = "VerifyNotRun"
VERIFY_FAILED = "VerifyFailed"
VERIFY_HOLDS = "VerifyHolds"
APPROVED = "Approved"
NOT_APPROVED = "NotApproved"


def phase_applied(phase: str) -> str:
    """The Event reason for a migration phase newly recorded as applied.

    >>> phase_applied("expand"), phase_applied("down")
    ('ExpandApplied', 'DownApplied')
    """
    return f"{phase.capitalize()}Applied"
