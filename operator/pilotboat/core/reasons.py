"""Condition types and CamelCase reasons: the words `kubectl describe` shows a user.

One module, so that a reason means the same thing wherever it appears.
"""

from __future__ import annotations

# Condition types.
READY = "Ready"
AVAILABLE = "Available"
PROGRESSING = "Progressing"
SPEC_VALID = "SpecValid"

# Reasons.
DEPLOYMENT_MISSING = "DeploymentMissing"
DEPLOYMENT_PENDING = "DeploymentPending"
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
REPLICAS_READY = "ReplicasReady"
REPLICAS_NOT_READY = "ReplicasNotReady"
ROLLING_OUT = "RollingOut"
INVALID_SPEC = "InvalidSpec"
VALID = "Valid"
