"""OwnedDatabase: one database on a PostgreSQL server, owned by exactly one Microservice."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from pilotboat.api.common import ObjectName, SpecModel, StatusBase
from pilotboat.api.kind import KindDescriptor, PrinterColumn

__all__ = [
    "DATABASE_NAME_PATTERN",
    "SecretRef",
    "DatabaseServer",
    "ReclaimPolicy",
    "OwnedDatabaseSpec",
    "OwnedDatabasePhase",
    "OwnedDatabaseStatus",
    "OWNED_DATABASE",
]

DATABASE_NAME_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"

ReclaimPolicy = Literal["Retain", "Delete"]
OwnedDatabasePhase = Literal["Pending", "Ready", "Refused", "Deleting"]


class SecretRef(SpecModel):
    """A Secret in the operator's reach holding administrator credentials."""

    name: ObjectName = Field(description="Secret name.")
    username_key: str = Field(
        default="username", min_length=1, description="Key of the user name in the Secret."
    )
    password_key: str = Field(
        default="password", min_length=1, description="Key of the password in the Secret."
    )


class DatabaseServer(SpecModel):
    """The PostgreSQL server the database lives on, and how the operator logs in as admin."""

    host: str = Field(min_length=1, max_length=253, description="Host name or address.")
    port: int = Field(default=5432, ge=1, le=65535, description="TCP port.")
    admin_secret_ref: SecretRef = Field(
        description="Secret with a role that may create databases and roles."
    )


class OwnedDatabaseSpec(SpecModel):
    """A database, its single owner, and what happens to it when this object is deleted."""

    owner: ObjectName = Field(
        description="Name of the Microservice that owns the database; only it gets credentials."
    )
    server: DatabaseServer = Field(description="The PostgreSQL server.")
    database_name: Annotated[str, StringConstraints(pattern=DATABASE_NAME_PATTERN)] | None = Field(
        default=None,
        description="Name of the database on the server; derived from namespace and name if unset.",
    )
    reclaim_policy: ReclaimPolicy = Field(
        default="Retain",
        description="Retain keeps the database when this object is deleted; Delete drops it.",
    )


class OwnedDatabaseStatus(StatusBase):
    """What the operator observed about an OwnedDatabase."""

    phase: OwnedDatabasePhase | None = Field(
        default=None, description="Pending, Ready, Refused or Deleting."
    )
    database_name: str | None = Field(default=None, description="Name of the database created.")
    role_name: str | None = Field(default=None, description="Name of the owner's login role.")
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
