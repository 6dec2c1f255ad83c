"""The SchemaMigration reconciler: gather observations, ask ``core.migration.decide``, apply.

One pass: read the history from the database (the truth about what ran), observe the
required service's pods, the approvals and the rollout, decide once, apply at most one
phase (or one slice of a backfill) through the engine, then write status once.

Crash safety rests on the database: a phase and its history row commit together, and the
advisory lock keeps a second runner out, so a pass killed at any line re-runs as a no-op
for what already committed. Status is rebuilt from the history on every pass, never
accumulated, so it cannot drift. "Applied" Events have a name derived from the migration
and the phase, so a pass that repeats after a crash cannot post a second one.

Status messages carry no relative times ("3s from now"): a status that changed on every
pass would wake the watch that triggers the next pass. Time-based waits (soak, backfill
throttling) schedule a re-visit with the shared reconcile loop (:mod:`pilotboat.handlers.loop`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from pilotboat import GROUP, VERSION
from pilotboat.adapters.database import (
    ChecksumMismatch,
    DatabaseError,
    DatabaseUnavailable,
    MigrationLocked,
    Timeouts,
)
from pilotboat.adapters.kube import Kube
from pilotboat.adapters.postgres import PostgresEngine
from pilotboat.api import SchemaMigrationSpec, parse_duration
from pilotboat.core import reasons
from pilotboat.core.conditions import DesiredCondition, find_condition
from pilotboat.core.migration import (
    Action,
    AppliedPhase,
    BackfillSpec,
    ContractSpec,
    ExpandSpec,
    GateName,
    GateVerdict,
    MigrationDecision,
    MigrationDefinition,
    MigrationObservations,
    MigrationPhase,
    Phase,
    ServiceVersion,
    checksum,
    decide,
    lint_migration,
)
from pilotboat.core.status_trust import trusted_status
from pilotboat.handlers import metrics
from pilotboat.handlers.approvals import approvals_for, approved_phases, sync_approval
from pilotboat.handlers.context import Reconcile, describe_validation_error, runtime
from pilotboat.handlers.databases import database_engine, owner_dsn
from pilotboat.handlers.faults import crash_point
from pilotboat.handlers.loop import ReconcileLoop

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
_RETRY = 5.0
_FAILED_RETRY = 30.0
_VERIFY_RECHECK = 10.0
_BATCHES_PER_PASS = 50
_RELATIVE = re.compile(r" \([^()]* from now\)")


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


def _parse_time(text: str) -> _dt.datetime:
    return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.UTC)


def _rfc3339(at: _dt.datetime) -> str:
    return at.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _versions_seen(
    previous: list[Mapping[str, Any]], running: Mapping[str, int], now: _dt.datetime
) -> tuple[list[dict[str, Any]], dict[str, _dt.datetime]]:
    """The ``status.versionsSeen`` to write, and the last sightings of versions now gone.

    An entry changes only when a version's pod count changes, so a steady state writes
    nothing; the sighting of a version that has gone is when it was first seen gone, which
    is never earlier than when it really went: the soak is never shortened.
    """
    old = {str(e["version"]): dict(e) for e in previous if e.get("version") is not None}
    entries: dict[str, dict[str, Any]] = {}
    for version in sorted({*old, *running}):
        count = running.get(version, 0)
        before = old.get(version)
        if before is not None and int(before.get("pods", 0)) == count:
            entries[version] = before
        else:
            entries[version] = {"version": version, "lastSeen": _rfc3339(now), "pods": count}
    gone = {v: _parse_time(e["lastSeen"]) for v, e in entries.items() if int(e["pods"]) == 0}
    return [entries[v] for v in sorted(entries)], gone


def _rolled_back(kube: Kube, namespace: str, required: ServiceVersion) -> bool:
    ms = kube.get("Microservice", namespace, required.service) or {}
    # A phase someone other than the operator wrote is no rollback (it could run `down`).
    status = trusted_status(ms.get("status"), (ms.get("metadata") or {}).get("managedFields"))
    return bool(
        status.get("phase") == "Degraded" and status.get("canaryVersion") == required.version
    )


# --- the pass ---------------------------------------------------------------------------------


def _timeouts(definition: MigrationDefinition) -> Timeouts:
    return Timeouts(lock=definition.lock_timeout, statement=definition.statement_timeout)


def _decide(
    engine: PostgresEngine,
    dsn: str,
    definition: MigrationDefinition,
    history: tuple[AppliedPhase, ...],
    observations: MigrationObservations,
    now: _dt.datetime,
) -> MigrationDecision:
    """``decide``, running the verify query only once the gates before it hold."""
    decision = decide(definition, history, observations, now)
    if decision.action is not Action.RUN_VERIFY:
        return decision
    before = (GateName.EXPAND_APPLIED, GateName.OLD_VERSIONS_GONE, GateName.SOAK_ELAPSED)
    blocking = [decision.gate(g) for g in before if not decision.gate(g).holds]
    if not blocking:
        result = engine.verify(dsn, definition.verify_sql or "", timeouts=_timeouts(definition))
        return decide(definition, history, replace(observations, verify_result=result), now)
    waiting = GateVerdict(
        GateName.VERIFY_HOLDS,
        False,
        reasons.VERIFY_WAITING,
        "the verify query runs once expand is applied, old versions are gone and the soak "
        "has elapsed",
    )
    gates = tuple(waiting if g.name is GateName.VERIFY_HOLDS else g for g in decision.gates)
    old_gone = decision.gate(GateName.OLD_VERSIONS_GONE).holds
    return replace(
        decision,
        action=Action.WAIT,
        phase=MigrationPhase.AWAITING_CONTRACT if old_gone else MigrationPhase.EXPANDED,
        reason=blocking[0].reason,
        message="; ".join(g.message for g in [*blocking, waiting]),
        gates=gates,
    )


def _apply(
    engine: PostgresEngine,
    dsn: str,
    definition: MigrationDefinition,
    decision: MigrationDecision,
) -> float | None:
    """Carry out one decided action; returns when to look again (None: on the next event)."""
    name, timeouts = definition.name, _timeouts(definition)
    if decision.action is Action.APPLY_EXPAND:
        crash_point("migration.before-expand")
        engine.apply_phase(
            dsn,
            name,
            Phase.EXPAND,
            definition.expand.sql,
            applied_by="pilotboat",
            timeouts=timeouts,
        )
        crash_point("migration.after-expand")
        return 0.0
    if decision.action is Action.RUN_BACKFILL_BATCH:
        backfill = definition.backfill
        assert backfill is not None
        paused = backfill.pause > _dt.timedelta(0)
        progress = engine.backfill(
            dsn,
            name,
            backfill.sql,
            batch_size=backfill.batch_size,
            pause=backfill.pause,
            applied_by="pilotboat",
            timeouts=timeouts,
            max_batches=1 if paused else _BATCHES_PER_PASS,
        )
        crash_point("migration.after-backfill-batch")
        return 0.0 if progress.done else backfill.pause.total_seconds()
    if decision.action is Action.APPLY_CONTRACT:
        approvers = decision.gate(GateName.APPROVED).message
        crash_point("migration.before-contract")
        engine.apply_phase(
            dsn,
            name,
            Phase.CONTRACT,
            definition.contract.sql,
            applied_by=f"pilotboat; {approvers}",
            timeouts=timeouts,
        )
        crash_point("migration.after-contract")
        return 0.0
    if decision.action is Action.APPLY_DOWN:
        engine.apply_phase(
            dsn,
            name,
            Phase.DOWN,
            definition.expand.down or "",
            applied_by="pilotboat; the rollout was rolled back",
            timeouts=timeouts,
        )
        return 0.0
    return None


def _event_once(
    kube: Kube, body: Mapping[str, Any], key: str, reason: str, message: str, warning: bool = False
) -> None:
    """An Event whose name derives from ``key``: posting it twice posts it once."""
    meta = body["metadata"]
    digest = hashlib.sha256(f"{meta['uid']}/{key}".encode()).hexdigest()[:16]
    now = _rfc3339(_dt.datetime.now(_dt.UTC))
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


def _soak_due(
    definition: MigrationDefinition,
    history: tuple[AppliedPhase, ...],
    gone: Mapping[str, _dt.datetime],
    now: _dt.datetime,
) -> float | None:
    starts = [e.applied_at for e in history if e.phase in (Phase.EXPAND, Phase.BACKFILL)]
    starts += list(gone.values())
    if not starts:
        return None
    return max((max(starts) + definition.contract.soak - now).total_seconds(), 0.0) + 0.5


def _lint_condition(definition: MigrationDefinition, applied: set[Phase]) -> DesiredCondition:
    findings = [f for f in lint_migration(definition) if f.phase not in {str(p) for p in applied}]
    refused = [f for f in findings if f.refuses]
    text = "; ".join(f"{f.phase}: {f.rule}: {f.message}: {f.statement}" for f in findings)
    if refused:
        return DesiredCondition(reasons.SQL_SAFE, "False", reasons.UNSAFE_SQL, text)
    if findings:
        return DesiredCondition(reasons.SQL_SAFE, "True", reasons.SQL_WARNINGS, text)
    return DesiredCondition(reasons.SQL_SAFE, "True", reasons.SQL_CLEAN, "no lint findings")


def _status_fields(
    definition: MigrationDefinition,
    history: tuple[AppliedPhase, ...],
    decision: MigrationDecision,
    seen: list[dict[str, Any]],
    generation: int,
    engine: PostgresEngine,
    dsn: str,
) -> dict[str, Any]:
    applied = {e.phase: e for e in history}
    fields: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": str(decision.phase),
        "message": _RELATIVE.sub("", decision.message),
        "appliedPhases": [
            {
                "phase": str(e.phase),
                "checksum": e.checksum,
                "appliedAt": _rfc3339(e.applied_at),
                "appliedBy": e.applied_by,
            }
            for e in history
        ],
        "checksums": {
            "expand": applied[Phase.EXPAND].checksum
            if Phase.EXPAND in applied
            else checksum(definition.expand.sql),
            "contract": checksum(definition.contract.sql),
        },
        "versionsSeen": seen,
    }
    if decision.gates:
        fields["gates"] = [
            {
                "name": str(g.name),
                "holds": g.holds,
                "reason": g.reason,
                "message": _RELATIVE.sub("", g.message),
            }
            for g in decision.gates
        ]
    if definition.backfill is not None:
        progress = engine.backfill_progress(dsn, definition.name)
        fields["backfill"] = {
            "rowsProcessed": progress.rows_processed,
            "batches": progress.batches,
            "done": progress.done,
        }
    return fields


def _conditions(
    definition: MigrationDefinition,
    history: tuple[AppliedPhase, ...],
    decision: MigrationDecision,
) -> list[DesiredCondition]:
    conditions = [
        DesiredCondition(
            str(g.name), "True" if g.holds else "False", g.reason, _RELATIVE.sub("", g.message)
        )
        for g in decision.gates
    ]
    conditions.append(_lint_condition(definition, {e.phase for e in history}))
    done = decision.phase in (MigrationPhase.CONTRACTED, MigrationPhase.ROLLED_BACK)
    conditions.append(
        DesiredCondition(
            reasons.READY,
            "True" if done else "False",
            decision.reason,
            _RELATIVE.sub("", decision.message),
        )
    )
    return conditions


def _report(
    kube: Kube,
    rc: Reconcile,
    body: Mapping[str, Any],
    status: Mapping[str, Any],
    history: tuple[AppliedPhase, ...],
    conditions: list[DesiredCondition],
    fields: dict[str, Any],
    refused: bool,
) -> None:
    recorded = {p.get("phase") for p in status.get("appliedPhases") or []}
    for entry in history:
        if str(entry.phase) not in recorded:
            reason = f"{str(entry.phase).capitalize()}Applied"
            message = (
                f"{entry.phase} applied (checksum {entry.checksum[:12]}) by {entry.applied_by}"
            )
            rc.log.info("%s: %s", reason, message, extra={"reason": reason})
            _event_once(kube, body, f"applied/{entry.phase}/{entry.checksum}", reason, message)
            rc.emitted.add(reason)  # a Ready condition with this reason says it once more
    old = status.get("conditions") or []
    for want in conditions:
        if want.type in (reasons.READY,) or want.status == "True":
            continue
        before = find_condition(old, want.type)
        if before is None or (before.get("status"), before.get("reason")) != (
            want.status,
            want.reason,
        ):
            rc.event(
                want.reason, f"{want.type}: {want.message}", warning=want.type == reasons.SQL_SAFE
            )
    crash_point("migration.before-status")
    rc.write_status(status, conditions, fields, warn=refused)


def _blocked(
    rc: Reconcile,
    status: Mapping[str, Any],
    generation: int,
    reason: str,
    message: str,
    phase: str,
    warn: bool = False,
) -> None:
    rc.write_status(
        status,
        [DesiredCondition(reasons.READY, "False", reason, message)],
        {"observedGeneration": generation, "phase": phase, "message": message},
        warn=warn,
    )


def reconcile_migration(
    kube: Kube,
    body: Mapping[str, Any],
    rc: Reconcile,
    engine: PostgresEngine,
    now: _dt.datetime | None = None,
) -> float | None:
    """One pass over one SchemaMigration; returns seconds until the next visit, if timed."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    generation = int(meta.get("generation", 0))
    status = trusted_status(body.get("status"), body["metadata"].get("managedFields"))
    try:
        spec = SchemaMigrationSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        _blocked(
            rc,
            status,
            generation,
            reasons.INVALID_SPEC,
            describe_validation_error(exc),
            "Failed",
            warn=True,
        )
        return None
    definition = definition_of(name, spec)
    odb = kube.get("OwnedDatabase", namespace, spec.database)
    dsn = owner_dsn(kube, namespace, spec.database)
    if odb is None or ((odb.get("status") or {}).get("phase") != "Ready") or dsn is None:
        _blocked(
            rc,
            status,
            generation,
            reasons.DATABASE_NOT_READY,
            f"OwnedDatabase {spec.database} is not ready",
            "Pending",
        )
        return _RETRY
    try:
        return _pass(kube, rc, body, status, definition, generation, engine, dsn, now)
    except ChecksumMismatch as exc:
        _blocked(rc, status, generation, reasons.CHECKSUM_MISMATCH, str(exc), "Failed", True)
        return None
    except MigrationLocked as exc:
        _blocked(
            rc,
            status,
            generation,
            reasons.MIGRATION_LOCKED,
            str(exc),
            str(status.get("phase") or "Pending"),
        )
        return _RETRY
    except DatabaseUnavailable as exc:
        _blocked(
            rc,
            status,
            generation,
            reasons.SERVER_UNREACHABLE,
            str(exc),
            str(status.get("phase") or "Pending"),
        )
        return _RETRY
    except DatabaseError as exc:
        _blocked(
            rc,
            status,
            generation,
            reasons.PHASE_FAILED,
            f"{exc} (retrying in {_FAILED_RETRY:g}s)",
            "Failed",
            True,
        )
        return _FAILED_RETRY


def _pass(
    kube: Kube,
    rc: Reconcile,
    body: Mapping[str, Any],
    status: Mapping[str, Any],
    definition: MigrationDefinition,
    generation: int,
    engine: PostgresEngine,
    dsn: str,
    now: _dt.datetime | None,
) -> float | None:
    namespace = body["metadata"]["namespace"]
    now = now or _dt.datetime.now(_dt.UTC)
    required = definition.required_by
    running = observe_running(kube, namespace, required.service)
    seen, gone = _versions_seen(list(status.get("versionsSeen") or []), running, now)
    approvals = approvals_for(kube, namespace, body)
    observations = MigrationObservations(
        running=running,
        last_seen=gone,
        approvals=approvals.get("contract", ()),
        approved_phases=approved_phases(body, approvals),
        rolled_back=_rolled_back(kube, namespace, required),
    )
    history = engine.history(dsn, definition.name)
    decision = _decide(engine, dsn, definition, history, observations, now)
    again = _apply(engine, dsn, definition, decision)
    if again is not None:
        history = engine.history(dsn, definition.name)
        decision = _decide(engine, dsn, definition, history, observations, now)
    fields = _status_fields(definition, history, decision, seen, generation, engine, dsn)
    blocked = [(str(g.name), g.reason) for g in decision.gates if not g.holds]
    metrics.migration_observed(namespace, definition.name, str(decision.phase), blocked)
    conditions = _conditions(definition, history, decision)
    _report(
        kube,
        rc,
        body,
        status,
        history,
        conditions,
        fields,
        refused=decision.action is Action.REFUSE,
    )
    if decision.action in (
        Action.APPLY_EXPAND,
        Action.APPLY_CONTRACT,
        Action.APPLY_DOWN,
        Action.RUN_BACKFILL_BATCH,
    ):
        return again if again is not None else 0.0
    if decision.action is Action.WAIT and decision.gates:
        soak = decision.gate(GateName.SOAK_ELAPSED)
        if not soak.holds and soak.reason == "Soaking":
            return _soak_due(definition, history, gone, now)
        if decision.gate(GateName.VERIFY_HOLDS).reason == "VerifyFailed":
            return _VERIFY_RECHECK
    return None


# --- for the Microservice reconciler ----------------------------------------------------------


def migrations_blocking(kube: Kube, namespace: str, service: str, version: str) -> list[str]:
    """Why a rollout of ``service`` to ``version`` must wait: one message per migration.

    Empty when every SchemaMigration that names this service version in ``requiredBy`` has
    its expand (and backfill, if it has one) applied.
    """
    messages = []
    for migration in kube.list("SchemaMigration", namespace):
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


@kopf.on.event("", "v1", "pods", labels={LABEL_NAME: kopf.PRESENT})
def on_service_pod_event(body: kopf.Body, **_: Any) -> None:
    meta = body["metadata"]
    _poke(_by_service, meta["namespace"], (meta.get("labels") or {}).get(LABEL_NAME))


@kopf.on.event("apps", "v1", "replicasets", labels={LABEL_NAME: kopf.PRESENT})
def on_service_replicaset_event(body: kopf.Body, **_: Any) -> None:
    meta = body["metadata"]
    _poke(_by_service, meta["namespace"], (meta.get("labels") or {}).get(LABEL_NAME))


@kopf.on.event(GROUP, VERSION, "microservices")
def on_required_service_event(body: kopf.Body, **_: Any) -> None:
    _poke(_by_service, body["metadata"]["namespace"], body["metadata"]["name"])


@kopf.on.event(GROUP, VERSION, "owneddatabases")
def on_database_event(body: kopf.Body, **_: Any) -> None:
    _poke(_by_database, body["metadata"]["namespace"], body["metadata"]["name"])
