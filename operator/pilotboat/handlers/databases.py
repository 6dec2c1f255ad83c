"""The OwnedDatabase reconciler: a database, its three login roles and their Secrets.

The owner role (owns the database, runs migrations) has its password only in a Secret in the
operator's namespace; the service gets the runtime role (DML, no DDL) in its credentials
Secret, and a read-only role's login sits beside it (:mod:`pilotboat.adapters.postgres`).

Order matters for crash safety. The password is generated once and stored in the credentials
Secret *before* the role is created with it, so a crash between the two leaves a Secret whose
password the next pass gives the role; a Secret that exists is never regenerated. The
finalizer (only with ``reclaimPolicy: Delete``) is added before the database is created, so a
database the operator created is never left behind by a deletion it did not see.

Nothing here logs or reports a password: it lives in the Secret and in the role's SCRAM
verifier, nowhere else.

:func:`database_claim` is what the Microservice reconciler and the admission webhook ask
before a service may use a database: only the owner named in the OwnedDatabase may.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from pilotboat import API_VERSION, GROUP, VERSION
from pilotboat.adapters.database import (
    DatabaseEngine,
    DatabaseError,
    DatabaseOwnedByAnother,
    DatabaseOwner,
    DatabaseUnavailable,
)
from pilotboat.api import DatabaseServerSpec, OwnedDatabaseSpec, ServerTls
from pilotboat.core import reasons
from pilotboat.core.conditions import DesiredCondition
from pilotboat.core.database_server import REQUIRED_AUTH, namespace_allowed
from pilotboat.core.status_trust import trusted_status
from pilotboat.handlers.context import Reconcile, describe_validation_error, runtime
from pilotboat.handlers.faults import crash_point
from pilotboat.handlers.loop import ReconcileLoop
from pilotboat.handlers.ports import Kube

__all__ = [
    "FINALIZER",
    "LABEL_OWNER_SERVICE",
    "DatabaseClaim",
    "credentials_secret_name",
    "database_claim",
    "database_engine",
    "database_names",
    "database_owner",
    "owner_dsn",
    "owner_secret_name",
    "readonly_secret_name",
    "reconcile_owned_database",
]

FINALIZER = "pilotboat.dev/database"
LABEL_OWNER_SERVICE = "pilotboat.dev/owner-service"
_SECRET_PREFIX = "pilotboat-db-"
_READONLY_SECRET_PREFIX = "pilotboat-readonly-db-"
_OWNER_SECRET_PREFIX = "pilotboat-owner-"
LABEL_OWNED_DATABASE = "pilotboat.dev/owned-database"
LABEL_OWNED_DATABASE_NAMESPACE = "pilotboat.dev/owned-database-namespace"
_RETRY_SECONDS = 10.0
_IDENT_MAX = 63
_HASH_LEN = 10


@dataclass(frozen=True)
class DatabaseClaim:
    """Whether a service may use an OwnedDatabase, and the Secret to read when it may.

    ``allowed`` false means the claim is refused (another service owns the database, or it
    does not exist); ``allowed`` true with ``secret_name`` None means the claim is right but
    the credentials are not there yet (``reason`` DatabaseNotReady): wait for them.
    """

    allowed: bool
    secret_name: str | None
    reason: str
    message: str


def credentials_secret_name(owned_database: str) -> str:
    """The tenant Secret with the runtime role's credentials (what the service uses)."""
    return f"{_SECRET_PREFIX}{owned_database}"


def readonly_secret_name(owned_database: str) -> str:
    """The tenant Secret with the read-only role's credentials.

    Its prefix differs from :func:`credentials_secret_name`'s before the OwnedDatabase's
    name begins, so no OwnedDatabase's read-only Secret is another's credentials Secret.
    """
    return f"{_READONLY_SECRET_PREFIX}{owned_database}"


def owner_secret_name(namespace: str, owned_database: str) -> str:
    """The Secret, in the operator's namespace, holding the owner role's password: named
    by a hash of namespace/name, so two OwnedDatabases never share one.

    >>> owner_secret_name("shop", "orders-db")
    'pilotboat-owner-24ad43c52a215a6f'
    """
    digest = hashlib.sha256(f"{namespace}/{owned_database}".encode()).hexdigest()[:16]
    return f"{_OWNER_SECRET_PREFIX}{digest}"


def database_claim(
    kube: Kube, namespace: str, service_name: str, database_ref: str
) -> DatabaseClaim:
    """Whether ``service_name`` may use OwnedDatabase ``database_ref`` in ``namespace``."""
    odb = kube.get("OwnedDatabase", namespace, database_ref)
    if odb is None:
        return DatabaseClaim(
            False,
            None,
            reasons.DATABASE_NOT_FOUND,
            f"OwnedDatabase {database_ref} does not exist in namespace {namespace}",
        )
    owner = (odb.get("spec") or {}).get("owner")
    if owner != service_name:
        return DatabaseClaim(
            False,
            None,
            reasons.DATABASE_OWNED_BY_ANOTHER,
            f"OwnedDatabase {database_ref} is owned by Microservice {owner}; "
            f"{service_name} may not use it (each database has one owner service: "
            f"call {owner}'s API instead, or give {service_name} a database of its own)",
        )
    status = trusted_status(odb.get("status"), odb["metadata"].get("managedFields"))
    if status.get("phase") != "Ready":
        return DatabaseClaim(
            True,
            None,
            reasons.DATABASE_NOT_READY,
            f"OwnedDatabase {database_ref} is not ready yet "
            f"(phase {status.get('phase') or 'Pending'})",
        )
    secret = credentials_secret_name(database_ref)  # by name: never a Secret status names
    return DatabaseClaim(
        True,
        secret,
        reasons.DATABASE_CLAIMED,
        f"{service_name} owns OwnedDatabase {database_ref}; credentials in Secret {secret}",
    )


def _identifier(readable: str, key: str) -> str:
    """A PostgreSQL identifier for the object ``key`` names: ``readable`` lower-cased to
    ``[a-z0-9_]`` (cut to fit 63 bytes), then ``_`` and a hash of ``key``.

    The hash makes names unique by construction: ``shop/order-db``, ``shop-order/db`` and
    ``shop/order.db`` read alike but hash apart (``/`` cannot occur in a namespace).

    >>> _identifier("pb_shop_order-db", "shop/order-db")
    'pb_shop_order_db_2eb24b4a4c'
    >>> _identifier("pb_shop-order_db", "shop-order/db")
    'pb_shop_order_db_b67bf688fb'
    """
    clean = re.sub(r"[^a-z0-9_]", "_", readable.lower())
    if not re.match(r"[a-z_]", clean):
        clean = f"_{clean}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:_HASH_LEN]
    return f"{clean[: _IDENT_MAX - _HASH_LEN - 1]}_{digest}"


def database_names(namespace: str, name: str, spec: OwnedDatabaseSpec) -> tuple[str, str]:
    """(database, role) on the server, unique per ``namespace/name``.

    The role always derives from namespace and name; the database too unless
    ``spec.databaseName`` names it, and then the owner recorded on the server decides.
    """
    key = f"{namespace}/{name}"
    dbname = spec.database_name or _identifier(f"{namespace}_{name}", key)
    role = _identifier(f"pb_{namespace}_{name}", key)
    return dbname, role


def database_owner(meta: Mapping[str, Any]) -> DatabaseOwner:
    """Whom the server records as owner of this OwnedDatabase's role and database."""
    return DatabaseOwner(uid=str(meta["uid"]), name=f"{meta['namespace']}/{meta['name']}")


def database_engine() -> DatabaseEngine:
    """The process's engine (one, so its settings are shared). psycopg is loaded here, by
    the first OwnedDatabase or SchemaMigration pass, not when the handlers are imported."""
    extras = runtime().extras
    engine = extras.get("database_engine")
    if engine is None:
        from pilotboat.adapters.postgres import PostgresEngine

        fresh: DatabaseEngine = PostgresEngine()
        engine = extras.setdefault("database_engine", fresh)
    return cast(DatabaseEngine, engine)


class _ServerRefused(Exception):
    """The OwnedDatabase may not (or cannot yet) use the DatabaseServer it names; decided
    before connecting anywhere. ``reason`` is the condition's reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _secret_value(secret: Mapping[str, Any], key: str) -> str | None:
    raw = (secret.get("data") or {}).get(key)
    if raw is None:
        return None
    return base64.b64decode(raw).decode()


def _server_spec(kube: Kube, namespace: str, spec: OwnedDatabaseSpec) -> DatabaseServerSpec:
    """The DatabaseServer ``spec.serverRef`` names, if it admits ``namespace``."""
    name = spec.server_ref.name
    body = kube.get("DatabaseServer", None, name)
    if body is None:
        raise _ServerRefused(
            reasons.DATABASE_SERVER_NOT_FOUND,
            f"DatabaseServer {name} (spec.serverRef.name) does not exist",
        )
    try:
        server = DatabaseServerSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        raise _ServerRefused(
            reasons.INVALID_SPEC,
            f"DatabaseServer {name} is invalid: {describe_validation_error(exc)}",
        ) from None
    labels = None
    if server.namespace_selector is not None:
        ns = kube.get("Namespace", None, namespace) or {}
        labels = (ns.get("metadata") or {}).get("labels") or {}
    if not namespace_allowed(server, namespace, labels):
        raise _ServerRefused(
            reasons.NAMESPACE_NOT_ALLOWED,
            f"DatabaseServer {name} does not allow namespace {namespace}: neither its "
            "spec.allowedNamespaces nor its spec.namespaceSelector admits it",
        )
    return server


_ca_dir: Path | None = None
_ca_lock = threading.Lock()


def _ca_file(pem: bytes) -> str:
    """A path to ``pem`` in a directory only the operator's user reads (0700, files 0600),
    one file per content hash, written once and reused."""
    global _ca_dir
    with _ca_lock:
        if _ca_dir is None or not _ca_dir.is_dir():
            _ca_dir = Path(tempfile.mkdtemp(prefix="pilotboat-ca-"))
        path = _ca_dir / f"{hashlib.sha256(pem).hexdigest()}.crt"
        if not path.exists():
            fd, partial = tempfile.mkstemp(dir=_ca_dir, suffix=".partial")  # mode 0600
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
            os.replace(partial, path)
        return str(path)


def _sslrootcert(kube: Kube, server_name: str, tls: ServerTls) -> str | None:
    if tls.mode not in ("verify-ca", "verify-full"):
        return None
    ref = tls.ca_secret_ref
    if ref is None:
        return "system"  # verify-full against the system's trusted CAs
    operator_namespace = runtime().operator_namespace
    secret = kube.get("Secret", operator_namespace, ref.name)
    raw = ((secret or {}).get("data") or {}).get(ref.key)
    if not raw:
        raise _ServerRefused(
            reasons.CA_SECRET_MISSING,
            f"CA Secret {ref.name} (key {ref.key}) of DatabaseServer {server_name} not found "
            f"in namespace {operator_namespace}",
        )
    return _ca_file(base64.b64decode(raw))


def _admin_dsn(kube: Kube, namespace: str, spec: OwnedDatabaseSpec) -> str:
    """The admin connection to the DatabaseServer ``spec.serverRef`` names, with its Secrets
    read in the operator's namespace (never the tenant's); :class:`_ServerRefused` when the
    server is missing or invalid, does not admit ``namespace``, or its Secrets are missing.

    The connection carries the server's ``sslmode`` (and CA), and always
    ``require_auth=scram-sha-256``: libpq refuses a server that asks for a cleartext or MD5
    password before sending it anything."""
    server = _server_spec(kube, namespace, spec)
    name = spec.server_ref.name
    ref = server.admin_secret_ref
    operator_namespace = runtime().operator_namespace
    secret = kube.get("Secret", operator_namespace, ref.name)
    if secret is None:
        raise _ServerRefused(
            reasons.ADMIN_SECRET_MISSING,
            f"admin Secret {ref.name} of DatabaseServer {name} not found in namespace "
            f"{operator_namespace} (keys {ref.username_key}, {ref.password_key} expected)",
        )
    user = _secret_value(secret, ref.username_key)
    password = _secret_value(secret, ref.password_key)
    missing = [k for k, v in ((ref.username_key, user), (ref.password_key, password)) if not v]
    if missing:
        raise _ServerRefused(
            reasons.ADMIN_SECRET_MISSING,
            f"admin Secret {ref.name} of DatabaseServer {name} (namespace {operator_namespace}) "
            f"has no key {', '.join(missing)} (its spec.adminSecretRef names keys "
            f"{ref.username_key}, {ref.password_key})",
        )
    params: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "dbname": "postgres",
        "user": user,
        "password": password,
        "sslmode": server.tls.mode,
        "require_auth": REQUIRED_AUTH,
    }
    rootcert = _sslrootcert(kube, name, server.tls)
    if rootcert is not None:
        params["sslrootcert"] = rootcert
    from psycopg.conninfo import make_conninfo

    return make_conninfo(**params)


def owner_dsn(kube: Kube, namespace: str, owned_database: str) -> str | None:
    """Connection string of the owner role (migrations run as it): the admin connection's
    server parameters (host, port, sslmode, …) with the owner's user, password and
    database, the password from the owner Secret in the operator's namespace; None until
    the OwnedDatabase, its admin credentials and the owner Secret are all there."""
    odb = kube.get("OwnedDatabase", namespace, owned_database)
    if odb is None:
        return None
    try:
        spec = OwnedDatabaseSpec.model_validate(odb.get("spec") or {})
        admin_dsn = _admin_dsn(kube, namespace, spec)
    except (ValidationError, _ServerRefused):
        return None
    secret = kube.get("Secret", runtime().operator_namespace,
                      owner_secret_name(namespace, owned_database))
    if secret is None:
        return None
    values = {key: _secret_value(secret, key) for key in ("dbname", "user", "password")}
    dbname, user, password = values["dbname"], values["user"], values["password"]
    if not (dbname and user and password):
        return None
    from pilotboat.adapters.postgres import role_dsn

    return role_dsn(admin_dsn, user=user, password=password, dbname=dbname)


@dataclass(frozen=True)
class _Passwords:
    owner: str
    runtime: str
    readonly: str


def _server_address(admin_dsn: str) -> tuple[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(admin_dsn)
    return str(params.get("host") or "localhost"), str(params.get("port") or "5432")


def _secret_body(
    body: Mapping[str, Any],
    spec: OwnedDatabaseSpec,
    dbname: str,
    role: str,
    password: str,
    *,
    admin_dsn: str,
    name: str | None = None,
) -> dict[str, Any]:
    """A tenant Secret (the runtime role's by default, or the read-only role's under
    ``name``): host and port as the operator reaches the server, the role's login."""
    meta = body["metadata"]
    host, port = _server_address(admin_dsn)
    uri = f"postgresql://{role}:{password}@{host}:{port}/{dbname}"
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name or credentials_secret_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": {
                "app.kubernetes.io/managed-by": "pilotboat",
                LABEL_OWNER_SERVICE: spec.owner,
                LABEL_OWNED_DATABASE: meta["name"],
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "OwnedDatabase",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "stringData": {
            "host": host,
            "port": port,
            "dbname": dbname,
            "user": role,
            "password": password,
            "uri": uri,
        },
    }


def _owner_secret_body(
    body: Mapping[str, Any], dbname: str, role: str, password: str
) -> dict[str, Any]:
    """The owner's Secret, in the operator's namespace (no owner reference: those cannot
    cross namespaces; the finalizer deletes it with ``reclaimPolicy: Delete``)."""
    meta = body["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": owner_secret_name(meta["namespace"], meta["name"]),
            "namespace": runtime().operator_namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "pilotboat",
                LABEL_OWNED_DATABASE: meta["name"],
                LABEL_OWNED_DATABASE_NAMESPACE: meta["namespace"],
            },
            "annotations": {
                "pilotboat.dev/owned-database": f"{meta['namespace']}/{meta['name']}",
                "pilotboat.dev/owned-database-uid": str(meta["uid"]),
            },
        },
        "stringData": {"dbname": dbname, "user": role, "password": password},
    }


def _ensure_secret(
    kube: Kube,
    rc: Reconcile,
    namespace: str,
    name: str,
    user: str,
    build: Callable[[str], dict[str, Any]],
    purpose: str,
) -> str:
    """The password of ``user`` kept in Secret ``name``: generated and stored once, before
    the role gets it; a Secret naming another user (an older operator's tenant Secret held
    the owner's login) gets a fresh password for ``user``."""
    existing = kube.get("Secret", namespace, name)
    password = _secret_value(existing, "password") if existing else None
    if existing is not None and _secret_value(existing, "user") != user:
        password = None
    if existing is None or not password:
        password = secrets.token_urlsafe(24)
        desired = build(password)
        try:
            if existing is None:
                kube.create(desired)
            else:
                kube.apply(desired)
            rc.event(reasons.CREDENTIALS_SECRET_CREATED, f"Created Secret {name} for {purpose}")
        except ApiException as exc:
            if exc.status != 409:
                raise
            existing = kube.get("Secret", namespace, name)
            password = _secret_value(existing or {}, "password")
            if not password or _secret_value(existing or {}, "user") != user:
                raise
        crash_point("database.after-secret")
    desired = build(password)
    keys = tuple(desired["stringData"])
    have = {k: _secret_value(existing, k) for k in keys} if existing else {}
    labels = ((existing or {}).get("metadata") or {}).get("labels") or {}
    if existing is not None and (
        have != desired["stringData"]
        or any(labels.get(k) != v for k, v in desired["metadata"]["labels"].items())
    ):
        kube.apply(desired)
    return password


def _ensure_credentials_secret(
    kube: Kube,
    rc: Reconcile,
    body: Mapping[str, Any],
    spec: OwnedDatabaseSpec,
    dbname: str,
    role: str,
    admin_dsn: str,
) -> _Passwords:
    """The three roles' passwords, each kept in its Secret (created once, never rotated):
    the owner's in the operator's namespace only, the runtime role's in the tenant's
    credentials Secret (the keys services read), the read-only role's beside it."""
    from pilotboat.adapters.postgres import role_names

    meta = body["metadata"]
    names = role_names(role)
    owner = _ensure_secret(
        kube, rc, runtime().operator_namespace,
        owner_secret_name(meta["namespace"], meta["name"]), names.owner,
        lambda pw: _owner_secret_body(body, dbname, names.owner, pw),
        f"the owner role of {meta['namespace']}/{meta['name']} (migrations)",
    )  # fmt: skip
    runtime_pw = _ensure_secret(
        kube, rc, meta["namespace"], credentials_secret_name(meta["name"]), names.runtime,
        lambda pw: _secret_body(body, spec, dbname, names.runtime, pw, admin_dsn=admin_dsn),
        spec.owner,
    )  # fmt: skip
    readonly_name = readonly_secret_name(meta["name"])
    readonly = _ensure_secret(
        kube, rc, meta["namespace"], readonly_name, names.readonly,
        lambda pw: _secret_body(body, spec, dbname, names.readonly, pw, admin_dsn=admin_dsn,
                                name=readonly_name),
        f"read-only access to {meta['name']}",
    )  # fmt: skip
    return _Passwords(owner, runtime_pw, readonly)


def _set_finalizer(kube: Kube, body: Mapping[str, Any], present: bool) -> None:
    meta = body["metadata"]
    finalizers = list(meta.get("finalizers") or [])
    if (FINALIZER in finalizers) == present:
        return
    wanted = [*finalizers, FINALIZER] if present else [f for f in finalizers if f != FINALIZER]
    kube.merge_patch(
        "OwnedDatabase",
        meta["namespace"],
        meta["name"],
        {"metadata": {"finalizers": wanted, "resourceVersion": meta["resourceVersion"]}},
    )


def _not_ready(
    rc: Reconcile,
    status: Mapping[str, Any],
    generation: int,
    reason: str,
    message: str,
    phase: str = "Pending",
    **fields: Any,
) -> None:
    rc.write_status(
        status,
        [DesiredCondition(reasons.READY, "False", reason, message)],
        {"observedGeneration": generation, "phase": phase, **fields},
        warn=True,
    )


# Refusals that waiting for a Secret does not fix: a deletion leaves the database in place.
_FINAL_REFUSALS = frozenset(
    {reasons.DATABASE_SERVER_NOT_FOUND, reasons.NAMESPACE_NOT_ALLOWED, reasons.INVALID_SPEC}
)


def _unavailable(
    spec: OwnedDatabaseSpec, admin_dsn: str, exc: DatabaseUnavailable
) -> tuple[str, str]:
    """The reason and message of a failed connection; a server that asked for a password by
    another method than SCRAM (libpq's ``require_auth`` refused it: no password was sent)
    is named as such."""
    where = f"DatabaseServer {spec.server_ref.name} ({':'.join(_server_address(admin_dsn))})"
    text = str(exc)
    if "authentication method requirement" in text:
        method = next(
            (name for needle, name in _AUTH_METHODS if needle in text), "a method other than SCRAM"
        )
        return reasons.AUTHENTICATION_REFUSED, (
            f"{where} asked for {method}; the operator answers only {REQUIRED_AUTH} and sent "
            f"no password: {text}"
        )
    return reasons.SERVER_UNREACHABLE, f"{where} is unreachable: {text}"


# What libpq says a server asked for, and how a person calls it.
_AUTH_METHODS = (
    ("cleartext password", "a cleartext password"),
    ("hashed password", "an MD5 password"),
    ("GSSAPI", "GSSAPI"),
    ("SSPI", "SSPI"),
    ("no authentication", "no authentication"),
)


def reconcile_owned_database(
    kube: Kube, body: Mapping[str, Any], rc: Reconcile, engine: DatabaseEngine
) -> float | None:
    """Converge one OwnedDatabase; returns seconds until it should be looked at again."""
    meta = body["metadata"]
    generation = int(meta.get("generation", 0))
    status = trusted_status(body.get("status"), meta.get("managedFields"))
    try:
        spec = OwnedDatabaseSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        _not_ready(rc, status, generation, reasons.INVALID_SPEC, describe_validation_error(exc))
        return None
    if meta.get("deletionTimestamp"):
        return _finalize(kube, body, rc, spec, engine)

    dbname, role = database_names(meta["namespace"], meta["name"], spec)
    from pilotboat.adapters.postgres import role_names

    names = {"databaseName": dbname, "roleName": role_names(role).runtime}
    try:
        admin_dsn = _admin_dsn(kube, meta["namespace"], spec)
    except _ServerRefused as refused:
        # Nothing connected anywhere. Looked at again: the platform team may fix it.
        _not_ready(rc, status, generation, refused.reason, str(refused), phase="Refused",
                   **names)  # fmt: skip
        return _RETRY_SECONDS
    _set_finalizer(kube, body, spec.reclaim_policy == "Delete")
    passwords = _ensure_credentials_secret(kube, rc, body, spec, dbname, role, admin_dsn)
    secret_name = credentials_secret_name(meta["name"])
    try:
        engine.ensure_database(
            admin_dsn, dbname, role, passwords.owner, owner=database_owner(meta),
            runtime_password=passwords.runtime, readonly_password=passwords.readonly,
            runtime_schema_changes=spec.runtime_schema_changes,
        )  # fmt: skip
    except DatabaseUnavailable as exc:
        reason, message = _unavailable(spec, admin_dsn, exc)
        _not_ready(rc, status, generation, reason, message, **names)
        return _RETRY_SECONDS
    except DatabaseOwnedByAnother as exc:
        _not_ready(
            rc,
            status,
            generation,
            reasons.DATABASE_OWNED_BY_ANOTHER,
            str(exc),
            phase="Refused",
            **names,
        )
        return None
    except DatabaseError as exc:
        _not_ready(rc, status, generation, reasons.DATABASE_FAILED, str(exc), **names)
        return _RETRY_SECONDS
    crash_point("database.after-ensure")
    message = (
        f"database {dbname} and role {role} exist on DatabaseServer {spec.server_ref.name} "
        f"({':'.join(_server_address(admin_dsn))}); "
        f"credentials for {spec.owner} in Secret {secret_name} (runtime role "
        f"{names['roleName']}; the owner role's password only in the operator's namespace)"
    )
    rc.write_status(
        status,
        [DesiredCondition(reasons.READY, "True", reasons.DATABASE_READY, message)],
        {"observedGeneration": generation, "phase": "Ready", "secretName": secret_name, **names},
    )
    return None


def _forget_owner_secret(kube: Kube, meta: Mapping[str, Any]) -> None:
    """The owner's Secret, once its role is dropped: deleted where the operator may delete
    Secrets; else (the chart grants no delete on Secrets) emptied, so no password is left."""
    name = owner_secret_name(meta["namespace"], meta["name"])
    try:
        kube.delete("Secret", runtime().operator_namespace, name)
    except ApiException as exc:
        if exc.status != 403:
            raise
        kube.merge_patch("Secret", runtime().operator_namespace, name, {"data": None})


def _finalize(
    kube: Kube,
    body: Mapping[str, Any],
    rc: Reconcile,
    spec: OwnedDatabaseSpec,
    engine: DatabaseEngine,
) -> float | None:
    from pilotboat.adapters.postgres import role_names

    meta = body["metadata"]
    if FINALIZER not in (meta.get("finalizers") or []):
        return None
    status = trusted_status(body.get("status"), meta.get("managedFields"))
    generation = int(meta.get("generation", 0))
    if spec.reclaim_policy == "Delete":
        dbname, role = database_names(meta["namespace"], meta["name"], spec)
        try:
            admin_dsn = _admin_dsn(kube, meta["namespace"], spec)
            engine.drop_database(admin_dsn, dbname, role, owner=database_owner(meta))
            _forget_owner_secret(kube, meta)
        except DatabaseOwnedByAnother as exc:
            # Never ours (refused when created) or handed to another: nothing to drop.
            rc.event(reasons.DATABASE_NOT_DROPPED, f"Left database {dbname} in place: {exc}",
                     warning=True)
            _forget_owner_secret(kube, meta)
            crash_point("database.before-finalizer")
            _set_finalizer(kube, body, False)
            return None
        except _ServerRefused as refused:
            if refused.reason in _FINAL_REFUSALS:
                # The server is gone or no longer admits this namespace: the operator may
                # not act for it there, so the database stays and the deletion goes on.
                rc.event(reasons.DATABASE_NOT_DROPPED,
                         f"Left database {dbname} in place: {refused}", warning=True)
                crash_point("database.before-finalizer")
                _set_finalizer(kube, body, False)
                return None
            _not_ready(
                rc,
                status,
                generation,
                refused.reason,
                f"cannot drop the database: {refused}",
                phase="Deleting",
            )
            return _RETRY_SECONDS
        except DatabaseError as exc:
            _not_ready(
                rc,
                status,
                generation,
                reasons.DATABASE_FAILED,
                f"cannot drop the database: {exc}",
                phase="Deleting",
            )
            return _RETRY_SECONDS
        rc.event(
            reasons.DATABASE_DROPPED,
            f"Dropped database {dbname} and roles {', '.join(role_names(role).all())} "
            "(reclaimPolicy Delete)",
        )
    crash_point("database.before-finalizer")
    _set_finalizer(kube, body, False)
    return None


# --- Kopf wiring -----------------------------------------------------------------------------

# Deletion is part of this kind's work (the finalizer), so deleting objects are reconciled.
_loop = ReconcileLoop(
    "OwnedDatabase",
    lambda kube, body, rc: reconcile_owned_database(kube, body, rc, database_engine()),
    retry_after=_RETRY_SECONDS,
    workers=2,
    skip_deleting=False,
)
_reconcile_named = _loop.run


@kopf.on.event(GROUP, VERSION, "owneddatabases")
def on_owned_database_event(
    event: kopf.RawEvent,
    body: kopf.Body,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    if event.get("type") == "DELETED":
        return
    _reconcile_named(body["metadata"]["namespace"], body["metadata"]["name"], logger)
