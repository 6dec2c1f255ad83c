"""DatabaseServer: a PostgreSQL server the platform team owns, and who may put databases on it.

Cluster-scoped. Tenants never write a host, a port or an admin Secret: an OwnedDatabase names
a DatabaseServer (``spec.serverRef.name``), and the operator uses it only when the
OwnedDatabase's namespace is allowed (``allowedNamespaces`` or ``namespaceSelector``; neither
set allows nobody). Its admin and CA Secrets are read in the operator's own namespace.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from pilotboat.api.common import (
    LIST_SET,
    ObjectName,
    SpecModel,
    StatusBase,
    cel_rule,
    cel_validations,
)
from pilotboat.api.kind import KindDescriptor, PrinterColumn

__all__ = [
    "NAMESPACE_PATTERN_PATTERN",
    "TlsMode",
    "CaSecretRef",
    "ServerTls",
    "SecretRef",
    "LabelSelectorRequirement",
    "LabelSelector",
    "DatabaseServerSpec",
    "DatabaseServerPhase",
    "DatabaseServerStatus",
    "DATABASE_SERVER",
]

TlsMode = Literal["disable", "require", "verify-ca", "verify-full"]
DatabaseServerPhase = Literal["Ready", "Invalid", "NotReady"]

NAMESPACE_PATTERN_PATTERN = r"^[-a-z0-9*?\[\]!]{1,63}$"
"""A namespace name, or an fnmatch pattern of one (``*``, ``?``, ``[...]``)."""

NamespacePattern = Annotated[str, StringConstraints(pattern=NAMESPACE_PATTERN_PATTERN)]


class CaSecretRef(SpecModel):
    """A Secret in the operator's namespace holding the CA certificate (PEM) of the server."""

    name: ObjectName = Field(description="Secret name, in the operator's namespace.")
    key: str = Field(default="ca.crt", min_length=1, description="Key of the PEM CA bundle.")


class ServerTls(SpecModel):
    """How the operator's connections to the server are protected (libpq ``sslmode``)."""

    model_config = ConfigDict(
        json_schema_extra=cel_validations(
            cel_rule(
                "self.mode != 'verify-ca' || has(self.caSecretRef)",
                "tls.mode verify-ca needs tls.caSecretRef (the CA the server's certificate "
                "is checked against)",
            )
        )
    )

    mode: TlsMode = Field(
        default="verify-full",
        description="disable, require (encrypted, certificate unchecked), verify-ca, or "
        "verify-full (certificate and host name checked; the system CAs without caSecretRef).",
    )
    ca_secret_ref: CaSecretRef | None = Field(
        default=None, description="The CA to check the server's certificate against."
    )

    @model_validator(mode="after")
    def _verify_ca_has_a_ca(self) -> ServerTls:
        if self.mode == "verify-ca" and self.ca_secret_ref is None:
            raise ValueError(
                "tls.mode verify-ca needs tls.caSecretRef (the CA the server's certificate "
                "is checked against)"
            )
        return self


class SecretRef(SpecModel):
    """A Secret in the operator's namespace holding administrator credentials."""

    name: ObjectName = Field(description="Secret name, in the operator's namespace.")
    username_key: str = Field(
        default="username", min_length=1, description="Key of the user name in the Secret."
    )
    password_key: str = Field(
        default="password", min_length=1, description="Key of the password in the Secret."
    )


class LabelSelectorRequirement(SpecModel):
    """One requirement on a namespace's labels, as in a Kubernetes label selector."""

    key: str = Field(min_length=1, max_length=317, description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: list[str] = Field(
        default_factory=list,
        description="The values for In and NotIn; empty for Exists and DoesNotExist.",
    )


class LabelSelector(SpecModel):
    """Namespaces by their labels (a metav1 LabelSelector); every part must hold.

    An empty selector is refused: it would allow every namespace. Say so with
    ``allowedNamespaces: ["*"]`` instead."""

    model_config = ConfigDict(
        json_schema_extra=cel_validations(
            cel_rule(
                "(has(self.matchLabels) && size(self.matchLabels) > 0) || "
                "(has(self.matchExpressions) && size(self.matchExpressions) > 0)",
                "namespaceSelector must have matchLabels or matchExpressions (an empty "
                "selector would allow every namespace: write allowedNamespaces: ['*'] for that)",
            )
        )
    )

    match_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels a namespace must have, with these values."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, description="Requirements on a namespace's labels."
    )

    @model_validator(mode="after")
    def _not_empty(self) -> LabelSelector:
        if not self.match_labels and not self.match_expressions:
            raise ValueError(
                "namespaceSelector must have matchLabels or matchExpressions (an empty "
                "selector would allow every namespace: write allowedNamespaces: ['*'] for that)"
            )
        return self


class DatabaseServerSpec(SpecModel):
    """Where the server is, how the operator logs in, and which namespaces may use it."""

    host: str = Field(min_length=1, max_length=253, description="Host name or address.")
    port: int = Field(default=5432, ge=1, le=65535, description="TCP port.")
    tls: ServerTls = Field(
        default=ServerTls(), description="TLS to the server (default verify-full)."
    )
    admin_secret_ref: SecretRef = Field(
        description="Secret in the operator's namespace with a role that may create databases "
        "and roles."
    )
    allowed_namespaces: list[NamespacePattern] = Field(
        default_factory=list,
        description="Namespaces whose OwnedDatabases may use this server: names or fnmatch "
        "patterns (shop, team-*). With namespaceSelector, either admits a namespace; "
        "neither set admits none.",
        json_schema_extra=LIST_SET,
    )
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces whose labels match may use this server too."
    )


class DatabaseServerStatus(StatusBase):
    """What the operator observed about a DatabaseServer."""

    phase: DatabaseServerPhase | None = Field(
        default=None, description="Ready, Invalid or NotReady."
    )


DATABASE_SERVER = KindDescriptor(
    kind="DatabaseServer",
    plural="databaseservers",
    singular="databaseserver",
    short_names=("dbs",),
    spec_model=DatabaseServerSpec,
    status_model=DatabaseServerStatus,
    description="A PostgreSQL server the platform team owns: its address, TLS, admin Secret "
    "(in the operator's namespace) and the namespaces whose OwnedDatabases may use it.",
    printer_columns=(
        PrinterColumn("Host", ".spec.host", description="Host name or address."),
        PrinterColumn("Port", ".spec.port", type="integer", description="TCP port."),
        PrinterColumn("TLS", ".spec.tls.mode", description="libpq sslmode."),
    ),
    namespaced=False,
)
