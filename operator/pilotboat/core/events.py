"""What a release pass tells people: a Kubernetes Event on the Microservice, as a value.

Its own module so that the release's state machine (:mod:`pilotboat.core.rollout`) and the
traffic routers it asks (:mod:`pilotboat.core.routing`) both tell Events without either
importing the other's decisions. The reasons are constants of :mod:`pilotboat.core.reasons`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ReleaseEvent"]


@dataclass(frozen=True)
class ReleaseEvent:
    """One Event: a CamelCase `reason`, a `message` for people, Warning or Normal."""

    reason: str
    message: str
    warning: bool = False
