"""The OwnedDatabase reconciler: a database, its login role and the owner's credentials Secret.

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
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from psycopg.conninfo import make_conninfo
from pydantic import ValidationError

from pilotboat import API_VERSION, GROUP, VERSION
from pilotboat.adapters.database import (
    DatabaseError,
    DatabaseOwnedByAnother,
    DatabaseOwner,
    DatabaseUnavailable,
)
from pilotboat.adapters.kube import Kube
from pilotboat.adapters.postgres import PostgresEngine
from pilotboat.api import OwnedDatabaseSpec
from pilotboat.core import reasons
from pilotboat.core.conditions import DesiredCondition
from pilotboat.core.database_env import SECRET_KEYS
from pilotboat.core.status_trust import trusted_status
from pilotboat.handlers.context import Reconcile, describe_validation_error, runtime
from pilotboat.handlers.faults import crash_point
from pilotboat.handlers.loop import ReconcileLoop

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
    "reconcile_owned_database",
]

FINALIZER = "pilotboat.dev/database"
LABEL_OWNER_SERVICE = "pilotboat.dev/owner-service"
_SECRET_PREFIX = "pilotboat-db-"
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
    return f"{_SECRET_PREFIX}{owned_database}"


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


def database_engine() -> PostgresEngine:
    """The process's engine (one, so its settings are shared)."""
    extras = runtime().extras
    engine = extras.get("database_engine")
    if engine is None:
        engine = extras.setdefault("database_engine", PostgresEngine())
    assert isinstance(engine, PostgresEngine)
    return engine


class _AdminSecretProblem(Exception):
    pass


def _secret_value(secret: Mapping[str, Any], key: str) -> str | None:
    raw = (secret.get("data") or {}).get(key)
    if raw is None:
        return None
    return base64.b64decode(raw).decode()


def _admin_dsn(kube: Kube, namespace: str, spec: OwnedDatabaseSpec) -> str:
    ref = spec.server.admin_secret_ref
    secret = kube.get("Secret", namespace, ref.name)
    if secret is None:
        raise _AdminSecretProblem(
            f"admin Secret {ref.name} not found in namespace {namespace} "
            f"(keys {ref.username_key}, {ref.password_key} expected)"
        )
    user = _secret_value(secret, ref.username_key)
    password = _secret_value(secret, ref.password_key)
    missing = [k for k, v in ((ref.username_key, user), (ref.password_key, password)) if not v]
    if missing:
        raise _AdminSecretProblem(
            f"admin Secret {ref.name} has no key {', '.join(missing)} "
            f"(spec.server.adminSecretRef names keys {ref.username_key}, {ref.password_key})"
        )
    return make_conninfo(
        host=spec.server.host,
        port=spec.server.port,
        dbname="postgres",
        user=user,
        password=password,
    )


def owner_dsn(kube: Kube, namespace: str, owned_database: str) -> str | None:
    """Connection string of the owner role, from the credentials Secret; None until ready."""
    secret = kube.get("Secret", namespace, credentials_secret_name(owned_database))
    if secret is None:
        return None
    values = {key: _secret_value(secret, key) for key in SECRET_KEYS}
    if not all(values[k] for k in ("host", "port", "dbname", "user", "password")):
        return None
    return make_conninfo(
        host=values["host"],
        port=values["port"],
        dbname=values["dbname"],
        user=values["user"],
        password=values["password"],
    )


def _secret_body(
    body: Mapping[str, Any],
    spec: OwnedDatabaseSpec,
    dbname: str,
    role: str,
    password: str,
) -> dict[str, Any]:
    meta = body["metadata"]
    host, port = spec.server.host, str(spec.server.port)
    uri = f"postgresql://{role}:{password}@{host}:{port}/{dbname}"
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": credentials_secret_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": {
                "app.kubernetes.io/managed-by": "pilotboat",
                LABEL_OWNER_SERVICE: spec.owner,
                "pilotboat.dev/owned-database": meta["name"],
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


def _ensure_credentials_secret(
    kube: Kube,
    rc: Reconcile,
    body: Mapping[str, Any],
    spec: OwnedDatabaseSpec,
    dbname: str,
    role: str,
) -> str:
    """The owner's password, kept in the credentials Secret (created once, never rotated)."""
    meta = body["metadata"]
    name = credentials_secret_name(meta["name"])
    existing = kube.get("Secret", meta["namespace"], name)
    password = _secret_value(existing, "password") if existing else None
    if existing is None or not password:
        password = secrets.token_urlsafe(24)
        desired = _secret_body(body, spec, dbname, role, password)
        try:
            if existing is None:
                kube.create(desired)
            else:
                kube.apply(desired)
            rc.event("CredentialsSecretCreated", f"Created Secret {name} for {spec.owner}")
        except ApiException as exc:
            if exc.status != 409:
                raise
            existing = kube.get("Secret", meta["namespace"], name)
            password = _secret_value(existing or {}, "password")
            if not password:
                raise
        crash_point("database.after-secret")
    desired = _secret_body(body, spec, dbname, role, password)
    have = {k: _secret_value(existing, k) for k in SECRET_KEYS} if existing else {}
    labels = ((existing or {}).get("metadata") or {}).get("labels") or {}
    if existing is not None and (
        have != desired["stringData"]
        or any(labels.get(k) != v for k, v in desired["metadata"]["labels"].items())
    ):
        kube.apply(desired)
    return password


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


def reconcile_owned_database(
    kube: Kube, body: Mapping[str, Any], rc: Reconcile, engine: PostgresEngine
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
    names = {"databaseName": dbname, "roleName": role}
    _set_finalizer(kube, body, spec.reclaim_policy == "Delete")
    try:
        admin_dsn = _admin_dsn(kube, meta["namespace"], spec)
    except _AdminSecretProblem as problem:
        _not_ready(rc, status, generation, reasons.ADMIN_SECRET_MISSING, str(problem), **names)
        return _RETRY_SECONDS
    password = _ensure_credentials_secret(kube, rc, body, spec, dbname, role)
    secret_name = credentials_secret_name(meta["name"])
    try:
        engine.ensure_database(admin_dsn, dbname, role, password, owner=database_owner(meta))
    except DatabaseUnavailable as exc:
        message = f"PostgreSQL at {spec.server.host}:{spec.server.port} is unreachable: {exc}"
        _not_ready(rc, status, generation, reasons.SERVER_UNREACHABLE, message, **names)
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
        f"database {dbname} and role {role} exist on {spec.server.host}:{spec.server.port}; "
        f"credentials for {spec.owner} in Secret {secret_name}"
    )
    rc.write_status(
        status,
        [DesiredCondition(reasons.READY, "True", reasons.DATABASE_READY, message)],
        {"observedGeneration": generation, "phase": "Ready", "secretName": secret_name, **names},
    )
    return None


def _finalize(
    kube: Kube,
    body: Mapping[str, Any],
    rc: Reconcile,
    spec: OwnedDatabaseSpec,
    engine: PostgresEngine,
) -> float | None:
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
        except DatabaseOwnedByAnother as exc:
            # Never ours (refused when created) or handed to another: nothing to drop.
            rc.event(reasons.DATABASE_NOT_DROPPED, f"Left database {dbname} in place: {exc}",
                     warning=True)
            crash_point("database.before-finalizer")
            _set_finalizer(kube, body, False)
            return None
        except _AdminSecretProblem as problem:
            _not_ready(
                rc,
                status,
                generation,
                reasons.ADMIN_SECRET_MISSING,
                f"cannot drop the database: {problem}",
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
            "DatabaseDropped", f"Dropped database {dbname} and role {role} (reclaimPolicy Delete)"
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
