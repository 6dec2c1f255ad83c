"""Every kind Pilotboat serves, in the order they are documented."""

from __future__ import annotations

from pilotboat.api.database import OWNED_DATABASE
from pilotboat.api.database_server import DATABASE_SERVER
from pilotboat.api.flag import FEATURE_FLAG
from pilotboat.api.kind import KindDescriptor
from pilotboat.api.microservice import MICROSERVICE
from pilotboat.api.migration import MIGRATION_APPROVAL, SCHEMA_MIGRATION
from pilotboat.api.rollout import ROLLOUT_POLICY

__all__ = ["KINDS", "kind_named"]

KINDS: tuple[KindDescriptor, ...] = (
    MICROSERVICE,
    ROLLOUT_POLICY,
    OWNED_DATABASE,
    DATABASE_SERVER,
    SCHEMA_MIGRATION,
    MIGRATION_APPROVAL,
    FEATURE_FLAG,
)


def kind_named(name: str) -> KindDescriptor:
    """The descriptor whose kind, plural, singular or a short name is ``name`` (any case).

    Raises :class:`KeyError` when no kind answers to it.
    """
    wanted = name.lower()
    for kind in KINDS:
        if wanted in {kind.kind.lower(), kind.plural, kind.singular, *kind.short_names}:
            return kind
    raise KeyError(name)
