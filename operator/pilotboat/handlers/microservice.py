"""The Microservice reconciler: level-triggered, idempotent, thin.

It reacts to every watch event of a Microservice and of the Deployments it owns, reads
what exists, asks the core what should happen (`pilotboat.core.rollout.decide`), applies
the difference with server-side apply, and writes `status` once. What a release must
remember lives in `status.release`, so a crash at any line is repaired by the next event:
the same inputs give the same applies, and applying an object twice changes nothing. It
never writes `spec`.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from pilotboat import GROUP, VERSION
from pilotboat.adapters.kube import Kube
from pilotboat.api import CanaryStrategy, MicroserviceSpec, RolloutPolicySpec
from pilotboat.core import reasons
from pilotboat.core.conditions import DesiredCondition
from pilotboat.core.database_env import database_env
from pilotboat.core.readiness import track_health
from pilotboat.core.rollout import (
    Decision,
    Observations,
    ReleaseState,
    decide,
    split,
    step_kind,
)
from pilotboat.core.status_trust import trusted_status
from pilotboat.core.workload import (
    ANNOTATION_REVISION,
    LABEL_MANAGED_BY,
    LABEL_VERSION,
    Owner,
    deployment_name,
    render_deployment,
    render_service,
)
from pilotboat.handlers import metrics, traffic
from pilotboat.handlers.analysis import analyse_step, effective_template
from pilotboat.handlers.children import (
    ChildBackoff,
    ChildNotOwned,
    ChildRefusal,
    child_refusal,
    ensure_controlled,
)
from pilotboat.handlers.context import Reconcile, describe_validation_error, runtime
from pilotboat.handlers.contracts import contract_gate, hold_for_contract
from pilotboat.handlers.databases import database_claim
from pilotboat.handlers.faults import crash_point
from pilotboat.handlers.flags import flag_overrides_fields, release_splits
from pilotboat.handlers.loop import ReconcileLoop
from pilotboat.handlers.migrations import migrations_blocking

__all__ = ["reconcile_microservice"]

_COMMANDS = ("promote", "promoteFull", "abort", "retry")
_backoff = ChildBackoff()
_FOREIGN_RECHECK_SECONDS = 30.0



class StrategyError(Exception):
    """The spec names a strategy that cannot be used (a missing RolloutPolicy)."""


@dataclass(frozen=True)
class _Tracks:
    stable: dict[str, Any] | None
    canary: dict[str, Any] | None

    def revision(self, which: str) -> str | None:
        obj = self.stable if which == "stable" else self.canary
        if obj is None:
            return None
        return (obj["metadata"].get("annotations") or {}).get(ANNOTATION_REVISION)

    def version(self, which: str) -> str | None:
        obj = self.stable if which == "stable" else self.canary
        return None if obj is None else (obj["metadata"].get("labels") or {}).get(LABEL_VERSION)


def _strategy(kube: Kube, namespace: str, spec: MicroserviceSpec) -> CanaryStrategy | None:
    rollout = spec.rollout
    if rollout is None:
        return None
    if rollout.canary is not None:
        return rollout.canary
    assert rollout.rollout_policy_ref is not None
    policy = kube.get("RolloutPolicy", namespace, rollout.rollout_policy_ref)
    if policy is None:
        raise StrategyError(f"RolloutPolicy {rollout.rollout_policy_ref} does not exist")
    try:
        return RolloutPolicySpec.model_validate(policy.get("spec") or {}).as_strategy()
    except ValidationError as exc:
        raise StrategyError(
            f"RolloutPolicy {rollout.rollout_policy_ref} is invalid: "
            + describe_validation_error(exc)
        ) from None


def _release_state(status: Mapping[str, Any]) -> ReleaseState:
    release = status.get("release") or {}
    handled = {k: v for k, v in (release.get("handledCommands") or {}).items() if v}
    return ReleaseState(
        revision=release.get("revision"),
        step_index=status.get("currentStepIndex"),
        step_started_at=release.get("stepStartedAt"),
        canary_weight=int(status.get("canaryWeight") or 0),
        aborted_revision=release.get("abortedRevision"),
        handled_commands=handled,
        promoting=bool(release.get("promoting")),
        rollback_reason=release.get("rollbackReason"),
        flag_overrides=release_splits(status),
        mirror_percent=int(release.get("mirrorPercent") or 0),
    )


def _apply_deployment(
    kube: Kube, rc: Reconcile, desired: dict[str, Any], current: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Apply when the revision or the replicas differ from what runs; else leave it."""
    meta = (current or {}).get("metadata", {})
    same_revision = (meta.get("annotations") or {}).get(ANNOTATION_REVISION) == desired["metadata"][
        "annotations"
    ][ANNOTATION_REVISION]
    same_replicas = (current or {}).get("spec", {}).get("replicas") == desired["spec"]["replicas"]
    if current is not None and same_revision and same_replicas:
        return dict(current)
    applied = kube.apply(desired)
    name = desired["metadata"]["name"]
    if current is None:
        rc.event("DeploymentCreated", f"Created Deployment {name}")
    elif not same_revision:
        rc.event(
            "DeploymentUpdated",
            f"Updated Deployment {name} to {desired['metadata']['labels'][LABEL_VERSION]}",
        )
    else:
        rc.log.info("scaled Deployment %s to %d", name, desired["spec"]["replicas"])
    return applied


def _scale(kube: Kube, rc: Reconcile, current: Mapping[str, Any], replicas: int) -> None:
    if current.get("spec", {}).get("replicas") != replicas:
        meta = current["metadata"]
        kube.merge_patch(
            "Deployment", meta["namespace"], meta["name"], {"spec": {"replicas": replicas}}
        )
        rc.log.info("scaled Deployment %s to %d", meta["name"], replicas)


def reconcile_microservice(
    kube: Kube, body: Mapping[str, Any], rc: Reconcile, *, now: float | None = None
) -> float | None:
    """Bring the children of one Microservice in line with its spec and release state;
    write status. Returns when to look again (seconds), if time alone can change things."""
    now = time.time() if now is None else now
    meta = body["metadata"]
    generation = int(meta.get("generation", 0))
    # Only what the operator wrote itself is release state; a forged field reads as absent.
    status = trusted_status(body.get("status"), meta.get("managedFields"))
    try:
        spec = MicroserviceSpec.model_validate(body.get("spec") or {})
        strategy = _strategy(kube, meta["namespace"], spec)
    except (ValidationError, StrategyError) as exc:
        message = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
        conditions = [
            DesiredCondition(reasons.SPEC_VALID, "False", reasons.INVALID_SPEC, message),
            DesiredCondition(reasons.READY, "False", reasons.INVALID_SPEC, message),
        ]
        rc.write_status(status, conditions, {"observedGeneration": generation}, warn=True)
        return None

    owner = Owner(meta["name"], meta["namespace"], meta["uid"])
    extra_env: list[dict[str, Any]] = []
    if spec.database is not None:
        claim = database_claim(kube, owner.namespace, owner.name, spec.database.owned_database)
        if claim.secret_name is None:
            return _hold_for_database(
                rc, status, generation, claim.allowed, claim.reason, claim.message
            )
        extra_env = database_env(claim.secret_name)
    routing = traffic.routing_of(strategy)
    stable_dep = render_deployment(
        owner, spec, track="stable", replicas=spec.replicas, extra_env=extra_env
    )
    revision = stable_dep["metadata"]["annotations"][ANNOTATION_REVISION]
    tracks = _Tracks(
        kube.get("Deployment", owner.namespace, deployment_name(owner.name, "stable")),
        kube.get("Deployment", owner.namespace, deployment_name(owner.name, "canary")),
    )
    try:
        ensure_controlled(tracks.stable, "Deployment", owner)
        ensure_controlled(tracks.canary, "Deployment", owner)
    except ChildNotOwned as foreign:
        return _child_not_owned(rc, status, generation, foreign)
    state = _release_state(status)
    stable_version = tracks.version("stable")
    gates = _release_gates(kube, rc, owner, spec, meta, status, generation, tracks, state, revision)
    if not isinstance(gates, list):
        return gates  # the release waits for a migration or a contract
    contract_conditions = gates
    canary_health = track_health(tracks.canary, spec.version)
    commands = {k: v for k, v in (status.get("commands") or {}).items() if v and k in _COMMANDS}
    steps = strategy.steps if strategy else []

    analysis_status = status.get("analysis")
    outcome = None
    next_measure: float | None = None
    in_release = (
        tracks.stable is not None
        and tracks.revision("stable") != revision
        and state.revision == revision
        and state.aborted_revision != revision
        and not state.promoting
        and state.step_index is not None
        and state.step_index < len(steps)
    )
    if in_release and strategy and step_kind(steps[state.step_index or 0]) == "analysis":
        index = state.step_index or 0
        step = steps[index].analysis
        assert step is not None
        result = analyse_step(
            template=effective_template(strategy.analysis),
            step=step,
            step_index=index,
            step_started_at=state.step_started_at,
            previous=analysis_status,
            service=owner.name,
            namespace=owner.namespace,
            canary_version=spec.version,
            stable_version=stable_version or "",
            prometheus_url=(
                strategy.analysis.prometheus.address
                if strategy.analysis
                and strategy.analysis.prometheus
                and strategy.analysis.prometheus.address
                else runtime().prometheus_url
            ),
            providers=runtime().providers,
            now=_dt.datetime.fromtimestamp(now, _dt.UTC),
        )
        outcome, analysis_status, next_measure = result.outcome, result.status, result.next_due_in
        if result.measured is not None:
            metrics.analysis_verdict(result.measured.verdict.value)
            rc.log.info(
                "measured canary %s: %s",
                spec.version,
                result.measured.message,
                extra={
                    "verdict": result.measured.verdict.value,
                    "queries": result.measured.queries,
                },
            )

    decision = decide(
        steps,
        state,
        Observations(
            desired_revision=revision,
            stable_revision=tracks.revision("stable"),
            stable_ready=track_health(tracks.stable, spec.version).complete
            if tracks.revision("stable") == revision
            else False,
            canary_revision=tracks.revision("canary"),
            canary_ready_replicas=canary_health.ready
            if tracks.revision("canary") == revision
            else 0,
            analysis=outcome,
            commands=commands,
        ),
        version=spec.version,
        stable_version=stable_version,
        replicas=spec.replicas,
        routing=routing,
        now=now,
    )
    if decision.reset_analysis:
        analysis_status = {
            "history": (analysis_status or {}).get("history", []),
            "measurements": [],
        }

    extra_status = flag_overrides_fields(kube, owner.namespace, spec, status, decision)
    children = _Children(
        owner, spec, strategy, routing, tracks, decision, revision, canary_health.ready, extra_env
    )
    written = _write_children(kube, rc, children, extra_status, status, generation)
    if not isinstance(written, dict):
        return written  # refused, or backing off after a refusal
    extra_status = written

    for event in decision.events:
        rc.event(event.reason, event.message, warning=event.warning)
    crash_point("microservice.before-status")
    _write_status(
        rc,
        status,
        spec,
        generation,
        tracks,
        decision,
        analysis_status,
        stable_version,
        revision,
        extra_status,
        contract_conditions,
    )
    return _next_look(decision, next_measure)


def _next_look(decision: Decision, next_measure: float | None) -> float | None:
    waits = [
        w
        for w in (decision.requeue_after, next_measure if decision.analyse else None)
        if w is not None
    ]
    if decision.phase == "Progressing" and not waits:
        waits.append(5.0)  # a canary becoming ready also triggers an event; this is a floor
    return min(waits) if waits else None


def _release_gates(
    kube: Kube,
    rc: Reconcile,
    owner: Owner,
    spec: MicroserviceSpec,
    meta: Mapping[str, Any],
    status: Mapping[str, Any],
    generation: int,
    tracks: _Tracks,
    state: ReleaseState,
    revision: str,
) -> list[DesiredCondition] | float:
    """The contract conditions of a release that may go, or seconds to wait for a gate.

    A release starts, or a rolled-back one is retried: either way it runs on the schema as
    it is now, so the migrations its version needs are asked again."""
    retry = (status.get("commands") or {}).get("retry")
    retrying = bool(retry) and state.aborted_revision == revision and (
        state.handled_commands.get("retry") != retry
    )
    if tracks.revision("stable") == revision or (state.revision == revision and not retrying):
        return []
    blocking = migrations_blocking(kube, owner.namespace, owner.name, spec.version)
    if blocking:
        return _hold_for_migrations(rc, status, generation, spec.version, blocking)
    gate = contract_gate(kube, rc, owner, spec, meta, tracks.revision("stable"), revision)
    if gate.blocking:
        return hold_for_contract(rc, status, generation, gate)
    return list(gate.conditions)


@dataclass(frozen=True)
class _Children:
    """What one pass writes the children (Services, route, Deployments) from."""

    owner: Owner
    spec: MicroserviceSpec
    strategy: CanaryStrategy | None
    routing: traffic.Routing
    tracks: _Tracks
    decision: Decision
    revision: str
    canary_ready: int
    extra_env: list[dict[str, Any]]


def _write_children(
    kube: Kube,
    rc: Reconcile,
    children: _Children,
    extra_status: dict[str, Any] | None,
    status: Mapping[str, Any],
    generation: int,
) -> dict[str, Any] | float:
    """The children written (the status fields they tell), or seconds until the next try
    after the API server refused one."""
    owner = children.owner
    wait = _backoff.wait(owner.uid, generation)
    if wait is not None:
        return wait
    try:
        written = _apply_children(kube, rc, children, extra_status)
    except ApiException as exc:
        refusal = child_refusal(
            exc, getattr(exc, "applied_object", None) or {}, children.spec
        )
        if refusal is None:
            raise
        return _child_rejected(rc, status, generation, owner, refusal)
    except ChildNotOwned as foreign:
        return _child_not_owned(rc, status, generation, foreign)
    _backoff.succeeded(owner.uid)
    return written


def _child_not_owned(
    rc: Reconcile, status: Mapping[str, Any], generation: int, foreign: ChildNotOwned
) -> float:
    """``Ready=False ChildNotOwned``: nothing is written; looked at again in a while, since
    the other object's changes do not wake this Microservice."""
    conditions = [DesiredCondition(reasons.READY, "False", reasons.CHILD_NOT_OWNED, str(foreign))]
    fields = {
        "observedGeneration": generation,
        "message": str(foreign),
        "phase": status.get("phase") or "Progressing",
    }
    rc.write_status(status, conditions, fields, warn=True)
    return _FOREIGN_RECHECK_SECONDS


def _apply_children(
    kube: Kube, rc: Reconcile, c: _Children, extra_status: dict[str, Any] | None
) -> dict[str, Any]:
    # Traffic moves before the pods it leaves do: a rollback or a finished promotion points
    # the route at stable first, then scales the canary down; a higher weight waits for the
    # canary's ready replicas inside `traffic.route`.
    _apply_services(kube, rc, c.owner, c.spec, c.routing)
    routed = traffic.route(
        kube,
        rc,
        c.owner,
        c.strategy,
        c.decision,
        canary_ready=c.canary_ready if c.tracks.revision("canary") == c.revision else 0,
        replicas=c.spec.replicas,
    )
    extra_status = {
        **(extra_status or {}),
        "actualWeight": _actual_weight(routed, c.tracks, c.revision, c.decision),
    }
    crash_point("microservice.after-service")
    _apply_tracks(kube, rc, c.owner, c.spec, c.tracks, c.decision, c.routing, c.extra_env)
    crash_point("microservice.after-deployment")
    return extra_status


def _child_rejected(
    rc: Reconcile, status: Mapping[str, Any], generation: int, owner: Owner,
    refusal: ChildRefusal,
) -> float:
    """``Ready=False ChildRejected`` with the API server's words; the next try backs off."""
    delay = _backoff.failed(owner.uid, generation)
    rc.log.warning(
        "%s; trying again in %.0fs", refusal.message, delay,
        extra={"reason": reasons.CHILD_REJECTED, "retry_in": delay},
    )  # fmt: skip
    conditions = [DesiredCondition(reasons.READY, "False", reasons.CHILD_REJECTED, refusal.message)]
    fields = {
        "observedGeneration": generation,
        "message": refusal.message,
        "phase": status.get("phase") or "Progressing",
    }
    rc.write_status(status, conditions, fields, warn=True)
    return delay


def _apply_tracks(
    kube: Kube,
    rc: Reconcile,
    owner: Owner,
    spec: MicroserviceSpec,
    tracks: _Tracks,
    decision: Decision,
    routing: traffic.Routing,
    extra_env: list[dict[str, Any]],
) -> None:
    weight = decision.state.canary_weight if decision.canary else 0
    replicas = split(routing, spec.replicas, weight)
    if decision.stable_template == "spec" or tracks.stable is None:
        _apply_deployment(
            kube,
            rc,
            render_deployment(
                owner, spec, track="stable", replicas=spec.replicas, extra_env=extra_env
            ),
            tracks.stable,
        )
    else:
        _scale(kube, rc, tracks.stable, replicas.stable if decision.canary else spec.replicas)
    if decision.canary:
        canary_replicas = spec.replicas if decision.state.promoting else replicas.canary
        _apply_deployment(
            kube,
            rc,
            render_deployment(
                owner, spec, track="canary", replicas=canary_replicas, extra_env=extra_env
            ),
            tracks.canary,
        )
    elif tracks.canary is not None:
        if decision.phase == "Degraded":
            _scale(kube, rc, tracks.canary, 0)
        else:
            kube.delete("Deployment", owner.namespace, deployment_name(owner.name, "canary"))
            rc.log.info("deleted the canary Deployment")


def _hold_for_database(
    rc: Reconcile,
    status: Mapping[str, Any],
    generation: int,
    allowed: bool,
    reason: str,
    message: str,
) -> float | None:
    """The owned database is refused (left unreconciled) or not ready (wait for it)."""
    conditions = [
        DesiredCondition(reasons.DATABASE_CLAIMED, "False", reason, message),
        DesiredCondition(reasons.READY, "False", reason, message),
    ]
    fields = {
        "observedGeneration": generation,
        "message": message,
        "phase": status.get("phase") or "Progressing",
    }
    rc.write_status(status, conditions, fields, warn=not allowed)
    return None if not allowed else 5.0


def _hold_for_migrations(
    rc: Reconcile,
    status: Mapping[str, Any],
    generation: int,
    version: str,
    blocking: list[str],
) -> float:
    """A migration this version needs has not expanded yet: the release waits for it."""
    message = f"{version} waits for its schema migrations: " + "; ".join(blocking)
    conditions = [
        DesiredCondition(reasons.MIGRATIONS_READY, "False", reasons.WAITING_FOR_EXPAND, message),
        DesiredCondition(reasons.PROGRESSING, "True", reasons.WAITING_FOR_EXPAND, message),
    ]
    fields = {"observedGeneration": generation, "message": message, "phase": "Progressing"}
    rc.write_status(status, conditions, fields)
    return 5.0


def _apply_services(
    kube: Kube, rc: Reconcile, owner: Owner, spec: MicroserviceSpec, routing: traffic.Routing
) -> None:
    wanted = [render_service(owner, spec)]
    if routing == "gatewayAPI":
        wanted += [
            render_service(owner, spec, name=f"{owner.name}-stable", track="stable"),
            render_service(owner, spec, name=f"{owner.name}-canary", track="canary"),
        ]
    for service in wanted:
        name = service["metadata"]["name"]
        current = kube.get("Service", owner.namespace, name)
        ensure_controlled(current, "Service", owner)
        if _service_differs(service, current):
            kube.apply(service)
            verb = "Created" if current is None else "Updated"
            rc.event(f"Service{verb}", f"{verb} Service {name}")


def _service_differs(desired: Mapping[str, Any], current: Mapping[str, Any] | None) -> bool:
    if current is None:
        return True
    have, want = current.get("spec", {}), desired["spec"]
    have_ports = [
        {k: p.get(k) for k in ("name", "port", "targetPort", "protocol")}
        for p in have.get("ports", [])
    ]
    return bool(have.get("selector") != want["selector"] or have_ports != want["ports"])


def _conditions(
    decision: Decision, ready: bool, ready_message: str, database: bool
) -> list[DesiredCondition]:
    phase = decision.phase
    reason = {
        "Healthy": "Stable",
        "Progressing": "Releasing",
        "Paused": "Paused",
        "Degraded": "RolledBack",
    }[phase]
    extra = []
    if database:
        extra.append(
            DesiredCondition(
                reasons.DATABASE_CLAIMED,
                "True",
                "DatabaseReady",
                "the owned database's credentials are injected",
            )
        )
    return [
        *extra,
        DesiredCondition(
            reasons.MIGRATIONS_READY, "True", "MigrationsApplied", "no migration holds this version"
        ),
        DesiredCondition(reasons.SPEC_VALID, "True", reasons.VALID, "the spec is valid"),
        DesiredCondition(
            reasons.AVAILABLE,
            "True" if ready else "False",
            reasons.REPLICAS_READY if ready else reasons.REPLICAS_NOT_READY,
            ready_message,
        ),
        DesiredCondition(
            reasons.PROGRESSING,
            "True" if phase in ("Progressing", "Paused") else "False",
            reason,
            decision.message,
        ),
        DesiredCondition(
            reasons.PAUSED,
            "True" if phase == "Paused" else "False",
            "Paused" if phase == "Paused" else "NotPaused",
            decision.pause_reason or "not paused",
        ),
        DesiredCondition(
            reasons.ROLLED_BACK,
            "True" if phase == "Degraded" else "False",
            "RolledBack" if phase == "Degraded" else "NotRolledBack",
            decision.message if phase == "Degraded" else "no rollback",
        ),
        DesiredCondition(
            reasons.READY,
            "True" if phase == "Healthy" and ready else "False",
            reason if phase != "Healthy" or ready else reasons.REPLICAS_NOT_READY,
            decision.message if phase != "Healthy" or ready else ready_message,
        ),
    ]


def _actual_weight(
    routed: int | None, tracks: _Tracks, revision: str, decision: Decision
) -> int:
    """The percent of traffic the canary receives now: the route's weight when a route
    carries the traffic, else the canary's share of the ready pods serving the Service."""
    if routed is not None:
        return routed
    if not decision.canary or tracks.canary is None or tracks.revision("canary") != revision:
        return 0
    canary, stable = _ready_replicas(tracks.canary), _ready_replicas(tracks.stable)
    return round(100 * canary / (canary + stable)) if canary + stable else 0


def _ready_replicas(track: Mapping[str, Any] | None) -> int:
    """The ready pods a track's Deployment reports (0 for no Deployment)."""
    return int(((track or {}).get("status") or {}).get("readyReplicas", 0) or 0)


def _write_status(
    rc: Reconcile,
    status: Mapping[str, Any],
    spec: MicroserviceSpec,
    generation: int,
    tracks: _Tracks,
    decision: Decision,
    analysis_status: Mapping[str, Any] | None,
    stable_version: str | None,
    revision: str,
    extra_fields: Mapping[str, Any] | None = None,
    extra_conditions: list[DesiredCondition] | None = None,
) -> None:
    stable_health = track_health(tracks.stable, stable_version or spec.version)
    canary_ready = _ready_replicas(tracks.canary)
    state = decision.state
    releasing = decision.phase != "Healthy" and state.revision is not None
    if decision.phase == "Healthy":
        stable_version = spec.version
    elif tracks.revision("stable") == revision or decision.stable_template == "spec":
        stable_version = status.get("stableVersion")  # the stable track is still rolling
    failed = sum(
        1
        for m in (analysis_status or {}).get("measurements", []) or []
        if m.get("verdict") == "Failed"
    )
    fields: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": decision.phase,
        "message": decision.message,
        "stableVersion": stable_version,
        "canaryVersion": spec.version if releasing else None,
        "currentStepIndex": state.step_index if releasing else None,
        "canaryWeight": state.canary_weight if decision.canary else 0,
        "replicas": spec.replicas,
        "readyReplicas": stable_health.ready + canary_ready,
        "pauseReason": decision.pause_reason,
        "failedChecks": failed,
        "analysis": dict(analysis_status) if analysis_status else None,
        "release": {
            "revision": state.revision,
            "stepStartedAt": state.step_started_at,
            "abortedRevision": state.aborted_revision,
            "promoting": state.promoting,
            "rollbackReason": state.rollback_reason,
            "mirrorPercent": state.mirror_percent,
            "handledCommands": dict(state.handled_commands) or None,
        },
    }
    fields.update(extra_fields or {})
    ready_message = stable_health.message
    conditions = _conditions(
        decision, stable_health.complete, ready_message, spec.database is not None
    )
    rc.write_status(status, [*(extra_conditions or []), *conditions], fields)
    meta = rc.body["metadata"]
    metrics.release_observed(
        meta["namespace"],
        meta["name"],
        decision.phase,
        fields["canaryWeight"],
        int(fields.get("actualWeight") or 0),
    )


_loop = ReconcileLoop("Microservice", reconcile_microservice, retry_after=5.0, workers=4)
_reconcile_guarded = _loop.run


@kopf.on.event(GROUP, VERSION, "microservices")
def on_microservice_event(
    event: kopf.RawEvent, body: kopf.Body, logger: kopf.Logger, **_: Any
) -> None:
    if event.get("type") == "DELETED" or body["metadata"].get("deletionTimestamp"):
        metrics.release_observed(body["metadata"]["namespace"], body["metadata"]["name"], None, 0)
        return
    _reconcile_guarded(body["metadata"]["namespace"], body["metadata"]["name"], logger)


@kopf.on.event("apps", "v1", "deployments", labels={LABEL_MANAGED_BY: "pilotboat"})
def on_child_deployment_event(
    event: kopf.RawEvent, body: kopf.Body, logger: kopf.Logger, **_: Any
) -> None:
    for ref in body.get("metadata", {}).get("ownerReferences", []) or []:
        if ref.get("kind") == "Microservice" and ref.get("controller"):
            _reconcile_guarded(body["metadata"]["namespace"], ref["name"], logger)


@kopf.on.event(GROUP, VERSION, "owneddatabases")
def on_owned_database_for_its_claimants(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    """The owner, and any service that names this database, may now see it differently."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    owner = (body.get("spec") or {}).get("owner")
    claimants = {
        ms["metadata"]["name"]
        for ms in runtime().kube.list("Microservice", namespace)
        if ((ms.get("spec") or {}).get("database") or {}).get("ownedDatabase") == name
    }
    for service in sorted(claimants | ({owner} if owner else set())):
        _reconcile_guarded(namespace, service, logger)


@kopf.on.event(GROUP, VERSION, "schemamigrations")
def on_schema_migration_for_its_service(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    service = ((body.get("spec") or {}).get("requiredBy") or {}).get("service")
    if service:
        _reconcile_guarded(body["metadata"]["namespace"], service, logger)
