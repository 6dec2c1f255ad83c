"""The SchemaMigration reconciler: observe, ask ``core.migration_plan.plan_migration``, apply.

One pass: observe once (the SchemaMigration, its definition, the database's history — the
truth about what ran —, the required service's pods, the approvals, the rollout, and the
verify query's answer when the core says it is due), get one plan, run at most one phase (or
one slice of a backfill) through the engine, post the plan's Events, then write status once.
Every decision is the core's (:mod:`pilotboat.core.migration_plan`).

Crash safety rests on the database: a phase and its history row commit together, and the
advisory lock keeps a second runner out, so a pass killed at any line re-runs as a no-op
for what already committed. Status is rebuilt from the history on every pass, never
accumulated, so it cannot drift. "Applied" Events have a name derived from the migration
and the phase, so a pass that repeats after a crash cannot post a second one. Time-based
waits (soak, backfill throttling) schedule a re-visit with the shared reconcile loop
(:mod:`pilotboat.handlers.loop`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from pilotboat import GROUP, VERSION
from pilotboat.adapters.database import (
    ChecksumMismatch,
    DatabaseEngine,
    DatabaseError,
    DatabaseUnavailable,
    MigrationLocked,
    Timeouts,
)
from pilotboat.api import SchemaMigrationSpec, parse_duration
from pilotboat.api.migration import BackfillProgress as BackfillStatus
from pilotboat.api.migration import SchemaMigrationStatus
from pilotboat.core.migration import (
    BackfillSpec,
    ContractSpec,
    ExpandSpec,
    MigrationDefinition,
    Phase,
    ServiceVersion,
    lint_migration,
)
from pilotboat.core.migration_plan import (
    FAILED_RETRY_SECONDS,
    DatabaseFailure,
    MigrationEvent,
    MigrationObservation,
    PhaseRun,
    plan_migration,
    release_rolled_back,
    verify_due,
)
from pilotboat.core.status_trust import trusted_status
from pilotboat.handlers import metrics
from pilotboat.handlers.approvals import approvals_for, approved_phases, sync_approval
from pilotboat.handlers.context import (
    Reconcile,
    describe_validation_error,
    now_rfc3339,
    runtime,
)
from pilotboat.handlers.databases import database_engine, owner_dsn
from pilotboat.handlers.faults import crash_point
from pilotboat.handlers.loop import ReconcileLoop
from pilotboat.handlers.ports import Kube

__all__ = [
    "definition_of",
    "lint_warnings",
    "migrations_blocking",
    "observe_running",
    "reconcile_migration",
    "reconcile_soon",
]

LABEL_NAME = "app.kubernetes.io/name"
LABEL_VERSION = "app.kubernetes.io/version"
_FAILED_RETRY = FAILED_RETRY_SECONDS


def definition_of(name: str, spec: SchemaMigrationSpec) -> MigrationDefinition:
    """The core's view of a SchemaMigration spec."""
    td = _dt.timedelta
    return MigrationDefinition(
        name=name,
        required_by=ServiceVersion(spec.required_by.service, spec.required_by.version),
        expand=ExpandSpec(spec.expand.sql, spec.expand.down),
        contract=ContractSpec(
            spec.contract.sql,
            soak=td(seconds=parse_duration(spec.contract.soak)),
            retired_versions=(
                tuple(spec.contract.retired_versions)
                if spec.contract.retired_versions is not None
                else None
            ),
        ),
        backfill=(
            BackfillSpec(
                spec.backfill.sql,
                spec.backfill.batch_size,
                td(seconds=parse_duration(spec.backfill.pause_between_batches)),
            )
            if spec.backfill
            else None
        ),
        verify_sql=spec.verify.sql if spec.verify else None,
        run_down_on_rollback=spec.run_down_on_rollback,
        lock_timeout=td(seconds=parse_duration(spec.lock_timeout)),
        statement_timeout=td(seconds=parse_duration(spec.statement_timeout)),
    )


_LINTED_FIELDS = {
    "expand": "spec.expand.sql",
    "down": "spec.expand.down",
    "backfill": "spec.backfill.sql",
    "verify": "spec.verify.sql",
    "contract": "spec.contract.sql",
}


def lint_warnings(name: str, spec: Mapping[str, Any] | None) -> list[str]:
    """The linter's findings on a SchemaMigration as admission warnings (``kubectl apply``
    prints them), each naming its field: the author hears at once what the reconciler will
    refuse or warn about. Nothing for a spec the schema refuses anyway."""
    try:
        definition = definition_of(name, SchemaMigrationSpec.model_validate(spec or {}))
    except (ValidationError, ValueError):
        return []
    out = []
    for f in lint_migration(definition):
        field = _LINTED_FIELDS.get(f.phase, f"spec.{f.phase}")
        verdict = "refused" if f.refuses else "warning"
        statement = " ".join(f.statement.split())
        text = f"{field}: {f.rule} ({verdict}): {f.message}: {statement}"
        out.append(text if len(text) <= 250 else text[:249] + "…")
    return out


# --- observations ----------------------------------------------------------------------------


def observe_running(kube: Kube, namespace: str, service: str) -> dict[str, int]:
    """Pods per version of ``service`` that exist and are not terminating.

    A ReplicaSet that still counts pods of a version (its controller has not caught up
    with a deletion, or is about to create them) counts too: the larger number wins.
    """
    pods: dict[str, int] = {}
    for pod in kube.list("Pod", namespace, labels={LABEL_NAME: service}):
        meta = pod["metadata"]
        phase = (pod.get("status") or {}).get("phase")
        if meta.get("deletionTimestamp") or phase in ("Succeeded", "Failed"):
            continue
        version = (meta.get("labels") or {}).get(LABEL_VERSION, "")
        pods[version] = pods.get(version, 0) + 1
    sets: dict[str, int] = {}
    for rs in kube.list("ReplicaSet", namespace, labels={LABEL_NAME: service}):
        version = (rs["metadata"].get("labels") or {}).get(LABEL_VERSION, "")
        count = int((rs.get("status") or {}).get("replicas") or 0)
        sets[version] = sets.get(version, 0) + count
    return {v: max(pods.get(v, 0), sets.get(v, 0)) for v in {*pods, *sets}}


def _rolled_back(kube: Kube, namespace: str, required: ServiceVersion) -> bool:
    ms = kube.get("Microservice", namespace, required.service) or {}
    # A phase someone other than the operator wrote is no rollback (it could run `down`).
    status = trusted_status(ms.get("status"), (ms.get("metadata") or {}).get("managedFields"))
    return release_rolled_back(status, required)


# --- the pass ---------------------------------------------------------------------------------

_CRASH_AT = {
    Phase.EXPAND: ("migration.before-expand", "migration.after-expand"),
    Phase.BACKFILL: ("migration.before-backfill-batch", "migration.after-backfill-batch"),
    Phase.CONTRACT: ("migration.before-contract", "migration.after-contract"),
    Phase.DOWN: ("migration.before-down", "migration.after-down"),
}
_FAILURES = (
    (ChecksumMismatch, DatabaseFailure.CHECKSUM_MISMATCH),
    (MigrationLocked, DatabaseFailure.LOCKED),
    (DatabaseUnavailable, DatabaseFailure.UNREACHABLE),
    (DatabaseError, DatabaseFailure.FAILED),
)


def reconcile_migration(
    kube: Kube,
    body: Mapping[str, Any],
    rc: Reconcile,
    engine: DatabaseEngine,
    now: _dt.datetime | None = None,
) -> float | None:
    """One pass over one SchemaMigration: observe, plan, run at most one phase, report.

    Returns seconds until the next visit, if time alone can change things."""
    observed, dsn = _observe_object(kube, body, now or _dt.datetime.now(_dt.UTC))
    try:
        observed = _observe_database(kube, body, engine, observed, dsn)
        plan = plan_migration(observed)
        _run(engine, dsn, plan.run)
    except DatabaseError as exc:
        plan = plan_migration(_failed(observed, exc))
    metrics.migration_observed(
        _namespace(body), observed.name, plan.status.phase or "Pending", plan.blocked
    )
    for event in plan.events:
        _post(kube, rc, body, event)
    crash_point("migration.before-status")
    _write_status(kube, rc, body, plan.status)
    return plan.next_look


# --- observe ------------------------------------------------------------------------------------


def _namespace(body: Mapping[str, Any]) -> str:
    return str(body["metadata"]["namespace"])


def _status_model(status: Mapping[str, Any]) -> SchemaMigrationStatus:
    """`status` as its model; a field the model cannot read is left out (read as absent)."""
    try:
        return SchemaMigrationStatus.model_validate(status)
    except ValidationError as exc:
        unreadable = {err["loc"][0] for err in exc.errors() if err["loc"]}
        readable = {k: v for k, v in status.items() if k not in unreadable}
        return SchemaMigrationStatus.model_validate(readable)


def _observe_object(
    kube: Kube, body: Mapping[str, Any], now: _dt.datetime
) -> tuple[MigrationObservation, str | None]:
    """The SchemaMigration as the API server has it, and its database's owner DSN (None:
    the OwnedDatabase is not ready)."""
    meta = body["metadata"]
    # Only what the operator wrote itself is migration state; a forged field reads as absent.
    status = _status_model(trusted_status(body.get("status"), meta.get("managedFields")))
    observed = MigrationObservation(meta["name"], int(meta.get("generation", 0)), status, now)
    try:
        spec = SchemaMigrationSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        return replace(observed, spec_problem=describe_validation_error(exc)), None
    odb = kube.get("OwnedDatabase", meta["namespace"], spec.database) or {}
    dsn = owner_dsn(kube, meta["namespace"], spec.database)
    ready = (odb.get("status") or {}).get("phase") == "Ready" and dsn is not None
    definition = definition_of(meta["name"], spec)
    return replace(
        observed, definition=definition, database=spec.database, database_ready=ready
    ), dsn


def _observe_database(
    kube: Kube,
    body: Mapping[str, Any],
    engine: DatabaseEngine,
    observed: MigrationObservation,
    dsn: str | None,
) -> MigrationObservation:
    """The rest of the observation: the history (the truth about what ran), the required
    service's pods, the approvals, the rollout, and the verify query's answer when it is
    due. Nothing when there is no database to ask."""
    definition = observed.definition
    if definition is None or dsn is None or not observed.database_ready:
        return observed
    namespace = _namespace(body)
    required = definition.required_by
    approvals = approvals_for(kube, namespace, body)
    observed = replace(
        observed,
        history=engine.history(dsn, definition.name),
        running=observe_running(kube, namespace, required.service),
        approvals=approvals.get("contract", ()),
        approved_phases=approved_phases(body, approvals),
        rolled_back=_rolled_back(kube, namespace, required),
        backfill=_backfill_progress(engine, dsn, definition),
    )
    # The core says when the verify query is due (the gates before it hold); only then.
    due = verify_due(observed)
    timeouts = Timeouts(lock=definition.lock_timeout, statement=definition.statement_timeout)
    verified = engine.verify(dsn, definition.verify_sql or "", timeouts=timeouts) if due else None
    return replace(observed, verify_result=verified)


def _backfill_progress(
    engine: DatabaseEngine, dsn: str, definition: MigrationDefinition
) -> BackfillStatus | None:
    if definition.backfill is None:
        return None
    progress = engine.backfill_progress(dsn, definition.name)
    return BackfillStatus(
        rows_processed=progress.rows_processed, batches=progress.batches, done=progress.done
    )


def _failed(observed: MigrationObservation, exc: DatabaseError) -> MigrationObservation:
    failure = next(kind for cls, kind in _FAILURES if isinstance(exc, cls))
    return replace(observed, failure=failure, failure_message=str(exc))


# --- apply --------------------------------------------------------------------------------------


def _run(engine: DatabaseEngine, dsn: str | None, run: PhaseRun | None) -> None:
    """Run the planned phase, if any. The engine commits it with its history row under the
    migration's advisory lock and skips a phase the history holds: it never runs twice."""
    if run is None or dsn is None:
        return
    before, after = _CRASH_AT[run.phase]
    timeouts = Timeouts(lock=run.lock_timeout, statement=run.statement_timeout)
    crash_point(before)
    if run.phase is Phase.BACKFILL:
        engine.backfill(dsn, run.migration, run.sql, batch_size=run.batch_size,
                        pause=run.pause, applied_by=run.applied_by, timeouts=timeouts,
                        max_batches=run.max_batches)  # fmt: skip
    else:
        engine.apply_phase(dsn, run.migration, run.phase, run.sql,
                           applied_by=run.applied_by, timeouts=timeouts)  # fmt: skip
    crash_point(after)


# --- report -------------------------------------------------------------------------------------


def _post(kube: Kube, rc: Reconcile, body: Mapping[str, Any], event: MigrationEvent) -> None:
    """An Event of the plan: one with a key is named after it, so it is posted once."""
    if event.once_key is None:
        rc.event(event.reason, event.message, warning=event.warning)
        return
    rc.log.info("%s: %s", event.reason, event.message, extra={"reason": event.reason})
    rc.emitted.add(event.reason)
    _event_once(kube, body, event.once_key, event.reason, event.message, event.warning)


def _event_once(
    kube: Kube, body: Mapping[str, Any], key: str, reason: str, message: str, warning: bool = False
) -> None:
    """An Event whose name derives from ``key``: posting it twice posts it once."""
    meta = body["metadata"]
    digest = hashlib.sha256(f"{meta['uid']}/{key}".encode()).hexdigest()[:16]
    now = now_rfc3339()
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{digest}", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": body["apiVersion"],
            "kind": body["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "reason": reason,
        "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "source": {"component": "pilotboat"},
        "reportingComponent": "pilotboat",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        kube.create(event)
    except ApiException as exc:
        if exc.status != 409:
            raise


_STATUS_FIELDS = tuple(f.alias or n for n, f in SchemaMigrationStatus.model_fields.items())


def _wire(value: Any) -> Any:
    """`value` as the API server keeps it: no null fields; an empty list or map is none."""
    if isinstance(value, Mapping):
        value = {k: _wire(v) for k, v in value.items() if v is not None}
    elif isinstance(value, list):
        value = [_wire(v) for v in value]
    return value if value not in ({}, []) else None


def _write_status(
    kube: Kube, rc: Reconcile, body: Mapping[str, Any], status: SchemaMigrationStatus
) -> None:
    """Patch the status fields that differ from what is there, once (a field now absent is
    written as null, so the merge patch removes it)."""
    desired = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    current = dict(body.get("status") or {})
    patch = {k: desired.get(k) for k in _STATUS_FIELDS
             if _wire(desired.get(k)) != _wire(current.get(k))}  # fmt: skip
    if not patch:
        return
    meta = body["metadata"]
    kube.merge_patch(
        str(body["kind"]), meta["namespace"], meta["name"], {"status": patch}, subresource="status"
    )
    rc.log.info("status written", extra={"status": patch})


# --- for the Microservice reconciler ----------------------------------------------------------


def migrations_blocking(
    kube: Kube,
    namespace: str,
    service: str,
    version: str,
    listed: Future[list[dict[str, Any]]] | None = None,
) -> list[str]:
    """Why a rollout of ``service`` to ``version`` must wait: one message per migration.

    Empty when every SchemaMigration that names this service version in ``requiredBy`` has
    its expand (and backfill, if it has one) applied. ``listed``: the namespace's
    SchemaMigrations, asked for earlier in the same pass (else they are listed now).
    """
    messages = []
    migrations = listed.result() if listed is not None else kube.list("SchemaMigration", namespace)
    for migration in migrations:
        spec = migration.get("spec") or {}
        required = spec.get("requiredBy") or {}
        if required.get("service") != service or required.get("version") != version:
            continue
        status = migration.get("status") or {}
        applied = {p.get("phase") for p in status.get("appliedPhases") or []}
        if "down" in applied:
            messages.append(
                f"SchemaMigration {migration['metadata']['name']}: its expand was taken back "
                f"(down ran after a rollback); {version} needs a new SchemaMigration that "
                "expands again"
            )
            continue
        needed = ["expand", *(["backfill"] if spec.get("backfill") else [])]
        missing = [p for p in needed if p not in applied]
        if missing:
            detail = status.get("message")
            messages.append(
                f"SchemaMigration {migration['metadata']['name']}: {' and '.join(missing)} "
                f"not applied yet (phase {status.get('phase') or 'Pending'}"
                + (f": {detail}" if detail else "")
                + ")"
            )
    return messages


# --- Kopf wiring -------------------------------------------------------------------------------

_locks_guard = threading.Lock()
# (namespace, service) and (namespace, database) → names of the migrations that refer to them.
_by_service: dict[tuple[str, str], set[str]] = {}
_by_database: dict[tuple[str, str], set[str]] = {}


def _index(namespace: str, name: str, spec: Mapping[str, Any] | None) -> None:
    with _locks_guard:
        for key, names in list(_by_service.items()):
            if key[0] == namespace:
                names.discard(name)
        for key, names in list(_by_database.items()):
            if key[0] == namespace:
                names.discard(name)
        if spec is None:
            return
        service = (spec.get("requiredBy") or {}).get("service")
        if service:
            _by_service.setdefault((namespace, str(service)), set()).add(name)
        if spec.get("database"):
            _by_database.setdefault((namespace, str(spec["database"])), set()).add(name)


_loop = ReconcileLoop(
    "SchemaMigration",
    lambda kube, body, rc: reconcile_migration(kube, body, rc, database_engine()),
    retry_after=_FAILED_RETRY,
    workers=4,
    gone=metrics.migration_forgotten,
)
_reconcile_named = _loop.run


def reconcile_soon(namespace: str, name: str, after: float = 0.2) -> None:
    """Visit a migration shortly (events arriving together collapse into one visit)."""
    _loop.schedule(namespace, name, after)


@kopf.on.event(GROUP, VERSION, "migrationapprovals")
def on_approval_event(
    event: kopf.RawEvent,
    body: kopf.Body,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    meta = body["metadata"]
    migration_name = (body.get("spec") or {}).get("migration")
    if event.get("type") != "DELETED":
        kube = runtime().kube
        fresh = kube.get("MigrationApproval", meta["namespace"], meta["name"])
        if fresh is not None:
            migration = kube.get("SchemaMigration", meta["namespace"], str(migration_name))
            sync_approval(kube, fresh, migration, Reconcile.start(kube, fresh, logger))
    if migration_name:
        reconcile_soon(meta["namespace"], str(migration_name))


@kopf.on.event(GROUP, VERSION, "schemamigrations")
def on_migration_event(
    event: kopf.RawEvent,
    body: kopf.Body,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    meta = body["metadata"]
    if event.get("type") == "DELETED":
        _index(meta["namespace"], meta["name"], None)
        metrics.migration_forgotten(meta["namespace"], meta["name"])
        _loop.enqueue(meta["namespace"], meta["name"])  # and again behind a pass still running
        return
    _index(meta["namespace"], meta["name"], body.get("spec"))
    _reconcile_named(meta["namespace"], meta["name"], logger)


def _poke(index: dict[tuple[str, str], set[str]], namespace: str, key: str | None) -> None:
    if not key:
        return
    with _locks_guard:
        names = list(index.get((namespace, key), ()))
    for name in names:
        reconcile_soon(namespace, name)


def _waited_on(namespace: Any, service: Any) -> bool:
    """Whether a SchemaMigration names ``service`` in ``requiredBy``."""
    with _locks_guard:
        return bool(service) and bool(_by_service.get((str(namespace), str(service))))


def _labelled_service_waited_on(body: kopf.Body, **_: Any) -> bool:
    """Kopf's filter for pods and ReplicaSets: a migration waits on the service in their
    ``LABEL_NAME``. Asked on Kopf's event loop, so the events of a service no migration
    waits on cost no handler call and no log line."""
    meta = body["metadata"]
    return _waited_on(meta["namespace"], (meta.get("labels") or {}).get(LABEL_NAME))


def _microservice_waited_on(body: kopf.Body, **_: Any) -> bool:
    return _waited_on(body["metadata"]["namespace"], body["metadata"]["name"])


# These handlers only look up an index and queue keys (no API call, nothing that blocks), so
# they are coroutines: Kopf runs them on its event loop instead of handing each event to a
# thread.


@kopf.on.event(
    "", "v1", "pods", labels={LABEL_NAME: kopf.PRESENT}, when=_labelled_service_waited_on
)
async def on_service_pod_event(body: kopf.Body, **_: Any) -> None:
    meta = body["metadata"]
    _poke(_by_service, meta["namespace"], (meta.get("labels") or {}).get(LABEL_NAME))


@kopf.on.event(
    "apps", "v1", "replicasets", labels={LABEL_NAME: kopf.PRESENT},
    when=_labelled_service_waited_on,
)
async def on_service_replicaset_event(body: kopf.Body, **_: Any) -> None:
    meta = body["metadata"]
    _poke(_by_service, meta["namespace"], (meta.get("labels") or {}).get(LABEL_NAME))


@kopf.on.event(GROUP, VERSION, "microservices", when=_microservice_waited_on)
async def on_required_service_event(body: kopf.Body, **_: Any) -> None:
    _poke(_by_service, body["metadata"]["namespace"], body["metadata"]["name"])


@kopf.on.event(GROUP, VERSION, "owneddatabases")
def on_database_event(body: kopf.Body, **_: Any) -> None:
    _poke(_by_database, body["metadata"]["namespace"], body["metadata"]["name"])
