"""OwnedDatabase: one database on a PostgreSQL server, owned by exactly one Microservice."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from pilotboat.api.common import ObjectName, SpecModel, StatusBase
from pilotboat.api.kind import KindDescriptor, PrinterColumn

__all__ = [
    "DATABASE_NAME_PATTERN",
    "ServerRef",
    "ReclaimPolicy",
    "OwnedDatabaseSpec",
    "OwnedDatabasePhase",
    "OwnedDatabaseStatus",
    "OWNED_DATABASE",
]

DATABASE_NAME_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"

ReclaimPolicy = Literal["Retain", "Delete"]
OwnedDatabasePhase = Literal["Pending", "Ready", "Refused", "Deleting"]


class ServerRef(SpecModel):
    """The DatabaseServer (cluster-scoped, the platform team's) the database lives on."""

    name: ObjectName = Field(description="Name of the DatabaseServer.")


class OwnedDatabaseSpec(SpecModel):
    """A database, its single owner, and what happens to it when this object is deleted."""

    owner: ObjectName = Field(
        description="Name of the Microservice that owns the database; only it gets credentials."
    )
    server_ref: ServerRef = Field(
        description="The DatabaseServer to create the database on; it must allow this "
        "namespace."
    )
    database_name: Annotated[str, StringConstraints(pattern=DATABASE_NAME_PATTERN)] | None = Field(
        default=None,
        description="Name of the database on the server; derived from namespace and name if unset.",
    )
    reclaim_policy: ReclaimPolicy = Field(
        default="Retain",
        description="Retain keeps the database when this object is deleted; Delete drops it.",
    )
    runtime_schema_changes: bool = Field(
        default=False,
        description="Let the service's runtime role create tables in schema public (CREATE "
        "on the schema; for services that create their own tables at start). It still cannot "
        "alter the tables migrations created nor touch the migration history.",
    )


class OwnedDatabaseStatus(StatusBase):
    """What the operator observed about an OwnedDatabase."""

    phase: OwnedDatabasePhase | None = Field(
        default=None, description="Pending, Ready, Refused or Deleting."
    )
    database_name: str | None = Field(default=None, description="Name of the database created.")
    role_name: str | None = Field(
        default=None,
        description="Name of the runtime login role, the one the service uses (the owner role "
        "that runs migrations is its name without the _rw suffix).",
    )
    secret_name: str | None = Field(
        default=None, description="Secret with the owner's connection credentials."
    )


OWNED_DATABASE = KindDescriptor(
    kind="OwnedDatabase",
    plural="owneddatabases",
    singular="owneddatabase",
    short_names=("odb",),
    spec_model=OwnedDatabaseSpec,
    status_model=OwnedDatabaseStatus,
    description="A PostgreSQL database owned by one Microservice, with its role and credentials.",
    printer_columns=(
        PrinterColumn("Owner", ".spec.owner", description="The owning Microservice."),
        PrinterColumn("Database", ".status.databaseName", description="Database on the server."),
        PrinterColumn("Phase", ".status.phase", description="Pending, Ready, Refused, Deleting."),
    ),
)
