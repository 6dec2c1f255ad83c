"""One pass over a Microservice as a value: what was observed in, what to do out.

`plan_release(observation) -> ReleasePlan` is the whole decision of a pass. The handler
gathers one :class:`ReleaseObservation` (the spec and trusted status as models, the children
as the API server has them, the database claim, the release gates, the analysis, the time),
asks for the plan, and applies it: the children's writes in order (traffic first; on a first
deploy, the Deployment first), the Events, the status once, and when to look again. Nothing
here reads a clock or the network.

A plan either *holds* (`ReleasePlan.hold` names why: the spec is invalid, the database is not
ready, a child is another's, a gate is closed, the API server refused a child) and writes
status only, or it walks the release (`pilotboat.core.rollout.decide`) and says which
children to write.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pilotboat.api import CanaryStep, CanaryStrategy, MicroserviceSpec
from pilotboat.api.microservice import MicroserviceStatus
from pilotboat.core import reasons
from pilotboat.core.background import background_measured_at
from pilotboat.core.conditions import DesiredCondition, find_condition, flipped, set_conditions
from pilotboat.core.database_env import database_env
from pilotboat.core.flags import overrides_from_status, overrides_to_status, settle_overrides
from pilotboat.core.readiness import track_health, updated_ready
from pilotboat.core.rollout import (
    AnalysisOutcome,
    Decision,
    Observations,
    ReleaseEvent,
    ReleaseState,
    decide,
    step_kind,
)
from pilotboat.core.routing import Routing, TrafficRouter, TrafficTarget, router_of
from pilotboat.core.workload import (
    ANNOTATION_REVISION,
    LABEL_NAME,
    LABEL_VERSION,
    Owner,
    deployment_name,
    render_deployment,
    revision_of,
)

__all__ = [
    "COMMANDS",
    "ChildRejection",
    "ChildWrite",
    "DatabaseAccess",
    "MeasuredAnalysis",
    "ObservedChildren",
    "ReleaseGates",
    "ReleaseObservation",
    "ReleasePlan",
    "analysis_step",
    "background_step",
    "command_sender",
    "controlled_by",
    "desired_revision",
    "gates_due",
    "not_owned_message",
    "plan_release",
    "pod_selector",
    "release_state",
    "router_of",
    "routing_of",
    "sent_by",
    "status_as_written",
    "track_revision",
    "track_version",
    "wanted_services",
]

COMMANDS = ("promote", "promoteFull", "abort", "retry")
NOT_OWNED_RECHECK_SECONDS = 30.0
"""A foreign object's changes do not wake its Microservice: look again after this long."""
DATABASE_RECHECK_SECONDS = 5.0
MIGRATIONS_RECHECK_SECONDS = 5.0
CONTRACT_RECHECK_SECONDS = 10.0
"""A contract in a ConfigMap, or a consumer, may change without an event here."""
PROGRESSING_FLOOR_SECONDS = 5.0
"""A canary becoming ready also wakes the Microservice; this is a floor."""


@dataclass(frozen=True)
class DatabaseAccess:
    """The service's claim on its OwnedDatabase: its credentials Secret once it may use it."""

    allowed: bool
    secret_name: str | None
    reason: str
    message: str


@dataclass(frozen=True)
class ObservedChildren:
    """The children as the API server has them now (None: absent)."""

    stable: Mapping[str, Any] | None = None
    canary: Mapping[str, Any] | None = None
    services: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)
    """Each Service the spec needs, by name."""
    route: Mapping[str, Any] | None = None
    """The HTTPRoute the strategy routes by, if it routes by a gateway."""


@dataclass(frozen=True)
class ReleaseGates:
    """What holds a release before it starts: migrations to expand, the API contract."""

    migrations: tuple[str, ...] = ()
    """One message per migration the version waits for."""
    contract_blocking: tuple[str, ...] = ()
    contract: tuple[DesiredCondition, ...] = ()
    """The contract gate's conditions (when it ran)."""


@dataclass(frozen=True)
class MeasuredAnalysis:
    """The analysis of the current step after this pass's measurement (if one was due)."""

    outcome: AnalysisOutcome
    status: Mapping[str, Any]
    """`status.analysis` as it stands after the measurement."""
    next_due_in: float


@dataclass(frozen=True)
class ChildRejection:
    """The API server refused a child of this generation; the next try waits."""

    message: str
    retry_in: float


@dataclass(frozen=True)
class ReleaseObservation:
    """Everything one pass knows about a Microservice."""

    owner: Owner
    generation: int
    status: MicroserviceStatus
    """The status fields the operator wrote itself (a forged field reads as absent)."""
    now: float
    spec: MicroserviceSpec | None = None
    strategy: CanaryStrategy | None = None
    spec_problem: str | None = None
    """Why the spec (or the RolloutPolicy it names) cannot be used."""
    database: DatabaseAccess | None = None
    children: ObservedChildren = field(default_factory=ObservedChildren)
    flag_bases: Mapping[str, str | None] = field(default_factory=dict)
    """The current `flag_basis` of each FeatureFlag a release split (None: missing)."""
    gates: ReleaseGates = field(default_factory=ReleaseGates)
    analysis: MeasuredAnalysis | None = None
    background: MeasuredAnalysis | None = None
    """The background analysis (`strategy.backgroundAnalysis`) after this pass's measurement."""
    rejection: ChildRejection | None = None
    verified_commands: frozenset[str] = frozenset()
    """The commands whose `<command>By` the API server vouches for: the admission policy
    pilotboat-command-identity was in force when they were sent. Any other sender's name is
    reported as unverified."""
    adopted: Mapping[str, Any] | None = None
    """The Deployment `spec.workloadRef` names, as read this pass (its template is already
    `spec.template`; the handler scales it down, :mod:`pilotboat.core.adoption`)."""


@dataclass(frozen=True)
class ChildWrite:
    """One write to a child: server-side apply of a whole object, a merge patch, a delete."""

    verb: Literal["apply", "patch", "delete"]
    kind: str
    name: str
    body: Mapping[str, Any] = field(default_factory=dict)
    event: ReleaseEvent | None = None
    note: str | None = None
    """A log line, for writes no Event tells."""


@dataclass(frozen=True)
class ReleasePlan:
    """What one pass does, in order: the children's `writes`, then `events`, then `status`."""

    status: MicroserviceStatus
    traffic: tuple[ChildWrite, ...] = ()
    """Services and the route: traffic moves before the pods it leaves do."""
    workloads: tuple[ChildWrite, ...] = ()
    pods_first: bool = False
    """The workloads go before the traffic: no pods exist yet for traffic to leave, and the
    new ones start while the Service is written."""
    events: tuple[ReleaseEvent, ...] = ()
    next_look: float | None = None
    """Seconds until time alone can change the plan (None: only a change will)."""
    hold: str | None = None
    """Why nothing but status is written (a condition reason); None: the release walks."""

    @property
    def writes(self) -> tuple[ChildWrite, ...]:
        """The children's writes in the order they are made."""
        if self.pods_first:
            return self.workloads + self.traffic
        return self.traffic + self.workloads


# --- observations read before the plan ------------------------------------------------


def controlled_by(obj: Mapping[str, Any], owner: Owner) -> bool:
    """Whether ``owner`` is ``obj``'s controller (an owner reference with its UID)."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == owner.uid and r.get("controller") for r in refs)


def not_owned_message(kind: str, name: str, owner: Owner) -> str:
    return (
        f"{kind} {name} exists and is not controlled by Microservice {owner.name}; "
        f"Pilotboat does not adopt, change or delete it. Rename or delete it, or give "
        f"the Microservice another name"
    )


def routing_of(strategy: CanaryStrategy | None) -> Routing:
    """The name of the router the strategy chooses (:func:`router_of`)."""
    return router_of(strategy).routing


def wanted_services(
    owner: Owner, spec: MicroserviceSpec, router: TrafficRouter
) -> list[dict[str, Any]]:
    """The Services `router` needs: one over both tracks, and one per track for a gateway."""
    return router.services(owner, spec)


def _extra_env(obs: ReleaseObservation) -> list[dict[str, Any]]:
    secret = obs.database.secret_name if obs.database else None
    return database_env(secret) if secret else []


def desired_revision(obs: ReleaseObservation) -> str:
    """The revision the spec asks for (the database credentials are part of the template)."""
    assert obs.spec is not None
    return revision_of(obs.owner.name, obs.spec, _extra_env(obs))


def track_revision(deployment: Mapping[str, Any] | None) -> str | None:
    if deployment is None:
        return None
    return (deployment["metadata"].get("annotations") or {}).get(ANNOTATION_REVISION)


def track_version(deployment: Mapping[str, Any] | None) -> str | None:
    if deployment is None:
        return None
    return (deployment["metadata"].get("labels") or {}).get(LABEL_VERSION)


def _ready_replicas(deployment: Mapping[str, Any] | None) -> int:
    """The ready pods a track's Deployment reports (0 for no Deployment)."""
    return int(((deployment or {}).get("status") or {}).get("readyReplicas", 0) or 0)


def _pods(deployment: Mapping[str, Any] | None) -> int:
    """The pods a track's Deployment reports, ready or not (0 for no Deployment)."""
    return int(((deployment or {}).get("status") or {}).get("replicas", 0) or 0)


def pod_selector(service: str) -> str:
    """The label selector of a Microservice's pods, both tracks: its Service's selector, as
    the scale subresource hands it to an autoscaler."""
    return f"{LABEL_NAME}={service}"


def release_state(status: MicroserviceStatus) -> ReleaseState:
    """What `status` remembers about the release in progress."""
    release = status.release
    handled = _tokens(release.handled_commands if release else None)
    splits = {
        o.flag: dict(o.variants)
        for o in overrides_from_status(_dump(status).get("flagOverrides"))
        if o.scope == "release"
    }
    return ReleaseState(
        revision=release.revision if release else None,
        step_index=status.current_step_index,
        step_started_at=release.step_started_at if release else None,
        canary_weight=status.canary_weight,
        aborted_revision=release.aborted_revision if release else None,
        handled_commands=handled,
        promoting=bool(release and release.promoting),
        rollback_reason=release.rollback_reason if release else None,
        rollback_cause=release.rollback_cause if release else None,
        flag_overrides=splits,
        mirror_percent=release.mirror_percent if release else 0,
    )


def _tokens(commands: Any) -> dict[str, str]:
    if commands is None:
        return {}
    dumped = commands.model_dump(by_alias=True, exclude_none=True)
    return {k: str(v) for k, v in dumped.items() if v and k in COMMANDS}


def _ready_to_release(obs: ReleaseObservation) -> bool:
    database_ok = obs.spec is not None and (
        obs.spec.database is None or (obs.database is not None and obs.database.secret_name)
    )
    return bool(database_ok) and obs.spec_problem is None and _foreign_child(obs) is None


def gates_due(obs: ReleaseObservation) -> bool:
    """Whether the release gates must be asked: a release starts, or a rolled-back one is
    retried. Either way it runs on the schema as it is now."""
    if not _ready_to_release(obs):
        return False
    revision = desired_revision(obs)
    state = release_state(obs.status)
    retry = _tokens(obs.status.commands).get("retry")
    retrying = (
        bool(retry)
        and state.aborted_revision == revision
        and (state.handled_commands.get("retry") != retry)
    )
    if track_revision(obs.children.stable) == revision:
        return False
    return state.revision != revision or retrying


def _steps(obs: ReleaseObservation) -> Sequence[CanaryStep]:
    return obs.strategy.steps if obs.strategy else []


def step_label(index: int | None, steps: Sequence[object]) -> str | None:
    """The step running now, counted from 1 as people count (`2/4`; `4/4` while a release
    that has passed its last step is promoted); the number alone when the steps are unknown."""
    if index is None:
        return None
    return f"{min(index + 1, len(steps))}/{len(steps)}" if steps else str(index + 1)


def _step_in_release(obs: ReleaseObservation) -> int | None:
    """The index of the step the release in progress is at (None: no release walks its
    steps: none runs, it was rolled back, or it is being promoted)."""
    if not _ready_to_release(obs) or obs.children.stable is None:
        return None
    revision, state, steps = desired_revision(obs), release_state(obs.status), _steps(obs)
    in_release = (
        track_revision(obs.children.stable) != revision
        and state.revision == revision
        and state.aborted_revision != revision
        and not state.promoting
        and state.step_index is not None
        and state.step_index < len(steps)
    )
    return state.step_index if in_release else None


def analysis_step(obs: ReleaseObservation) -> int | None:
    """The index of the analysis step the release in progress runs, if it runs one."""
    index = _step_in_release(obs)
    if index is None or step_kind(_steps(obs)[index]) != "analysis":
        return None
    return index


def background_step(obs: ReleaseObservation) -> int | None:
    """The index of the step the release in progress is at, when background analysis
    (`strategy.backgroundAnalysis`) measures there (:mod:`pilotboat.core.background`)."""
    background = obs.strategy.background_analysis if obs.strategy else None
    index = _step_in_release(obs)
    if background is None or not background_measured_at(
        _steps(obs), index, background.starting_step
    ):
        return None
    return index


# --- the plan ---------------------------------------------------------------------------


def plan_release(obs: ReleaseObservation) -> ReleasePlan:
    """The whole of one pass: the first hold that applies, else the release's next step.

    Holds, in order: an unusable spec; a database not (yet) this service's; a child
    another object holds the name of; migrations the version waits for; a breaking API
    contract; a child the API server refused, until its back-off is over.
    """
    if obs.spec_problem is not None:
        return _hold(obs, reasons.INVALID_SPEC, obs.spec_problem, None, warn=True,
                     conditions=[DesiredCondition(reasons.SPEC_VALID, "False",
                                                  reasons.INVALID_SPEC, obs.spec_problem)],
                     phase=None)  # fmt: skip
    assert obs.spec is not None
    database = obs.database
    if database is not None and database.secret_name is None:
        return _hold(obs, database.reason, database.message,
                     None if not database.allowed else DATABASE_RECHECK_SECONDS,
                     warn=not database.allowed,
                     conditions=[DesiredCondition(reasons.DATABASE_CLAIMED, "False",
                                                  database.reason, database.message)])  # fmt: skip
    foreign = _foreign_child(obs)
    if foreign is not None:
        return _hold(obs, reasons.CHILD_NOT_OWNED, foreign, NOT_OWNED_RECHECK_SECONDS, warn=True)
    gates = obs.gates
    if gates.migrations:
        message = f"{obs.spec.version} waits for its schema migrations: " + "; ".join(
            gates.migrations
        )
        return _hold(obs, reasons.WAITING_FOR_EXPAND, message, MIGRATIONS_RECHECK_SECONDS,
                     conditions=[DesiredCondition(reasons.MIGRATIONS_READY, "False",
                                                  reasons.WAITING_FOR_EXPAND, message)],
                     phase="Progressing", ready=False)  # fmt: skip
    if gates.contract_blocking:
        return _hold_for_contract(obs)
    if obs.rejection is not None:
        rejection = obs.rejection
        return _hold(obs, reasons.CHILD_REJECTED, rejection.message, rejection.retry_in, warn=True)
    return _walk_release(obs)


def _foreign_child(obs: ReleaseObservation) -> str | None:
    children = obs.children
    named = [("Deployment", children.stable), ("Deployment", children.canary)]
    named += [("Service", s) for s in children.services.values()]
    for kind, obj in named:
        if obj is not None and not controlled_by(obj, obs.owner):
            return not_owned_message(kind, str(obj["metadata"]["name"]), obs.owner)
    return None


def _hold(
    obs: ReleaseObservation,
    reason: str,
    message: str,
    next_look: float | None,
    *,
    warn: bool = False,
    conditions: Sequence[DesiredCondition] = (),
    phase: str | None = "",
    ready: bool = True,
    events: tuple[ReleaseEvent, ...] = (),
) -> ReleasePlan:
    """Status only: `Ready=False <reason>` (or, for a gate, `Progressing=True <reason>`)
    beside `conditions`. The phase is `phase`, or what it was (Progressing if none) when
    `phase` is empty; with `phase` None, phase and message are left as they are."""
    if ready:
        summary = DesiredCondition(reasons.READY, "False", reason, message)
    else:
        summary = DesiredCondition(reasons.PROGRESSING, "True", reason, message)
    desired = [*conditions, summary]
    fields: dict[str, Any] = {"observedGeneration": obs.generation}
    if phase is not None:
        fields["message"] = message
        fields["phase"] = phase or obs.status.phase or "Progressing"
    status = _status(obs, desired, fields)
    flips = _condition_events(obs.status, desired, warn=warn, emitted=events)
    return ReleasePlan(status, events=events + flips, next_look=next_look, hold=reason)


def _hold_for_contract(obs: ReleaseObservation) -> ReleasePlan:
    """The new contract breaks the deployed one or a consumer: the release waits, with the
    violations in the condition and one Event each time they change."""
    (condition,) = obs.gates.contract
    before = find_condition(_dump(obs.status).get("conditions"), condition.type) or {}
    events: tuple[ReleaseEvent, ...] = ()
    if before.get("message") != condition.message:
        events = (ReleaseEvent(reasons.CONTRACT_BROKEN, condition.message, warning=True),)
    return _hold(obs, condition.reason, condition.message, CONTRACT_RECHECK_SECONDS,
                 conditions=[condition], phase="Progressing", ready=False,
                 events=events)  # fmt: skip


def _walk_release(obs: ReleaseObservation) -> ReleasePlan:
    spec = obs.spec
    assert spec is not None
    router = router_of(obs.strategy)
    revision = desired_revision(obs)
    stable, canary = obs.children.stable, obs.children.canary
    canary_ready = updated_ready(canary) if track_revision(canary) == revision else 0
    decision = decide(
        _steps(obs),
        release_state(obs.status),
        Observations(
            desired_revision=revision,
            stable_revision=track_revision(stable),
            stable_ready=_runs_spec(stable, revision, spec),
            canary_revision=track_revision(canary),
            canary_ready_replicas=canary_ready,
            analysis=obs.analysis.outcome if obs.analysis else None,
            background=obs.background.outcome if obs.background else None,
            commands=_tokens(obs.status.commands),
        ),
        version=spec.version,
        stable_version=track_version(stable),
        replicas=spec.replicas,
        router=router,
        now=obs.now,
        progress_deadline=spec.progress_deadline_seconds,
    )
    services = _service_writes(obs, router)
    route, routed, route_events = _route_write(obs, router, decision, canary_ready)
    workloads = _deployment_writes(obs, decision, router, canary_ready)
    status, desired = _release_status(obs, decision, revision, _actual_weight(
        routed, obs, revision, decision))  # fmt: skip
    events = route_events + _signed_events(obs, decision) + _background_events(obs, decision)
    flips = _condition_events(obs.status, desired, warn=False, emitted=events)
    return ReleasePlan(
        status,
        traffic=services + route,
        workloads=workloads,
        pods_first=stable is None and canary is None,
        events=events + flips,
        next_look=_next_look(decision, obs.analysis, obs.background),
    )


def status_as_written(plan: ReleasePlan, after: ReleaseObservation) -> ReleasePlan:
    """A first deploy's ``plan`` with the status its writes leave: ``after`` is the pass's
    observation with the children as the writes returned them. The pass the new Deployment's
    watch events start then finds that status already written instead of writing a second
    one (a Microservice status write is the API server's costliest request in a create
    burst). Only when ``after`` plans no further write and no hold: else its status would
    tell of writes not made, and ``plan``'s stands. Any other plan is returned as it is."""
    if not plan.pods_first or plan.hold is not None:
        return plan
    settled = plan_release(after)
    if settled.writes or settled.hold is not None:
        return plan
    return replace(plan, status=settled.status)


def _runs_spec(stable: Mapping[str, Any] | None, revision: str, spec: MicroserviceSpec) -> bool:
    """Whether the stable track runs all the spec asks for: its revision, on as many ready
    replicas as the spec has. A Deployment just scaled has not: until its controller catches
    up it still reports complete on the replicas it had."""
    desired = (stable or {}).get("spec", {}).get("replicas")
    return (
        track_revision(stable) == revision
        and desired == spec.replicas
        and track_health(stable, spec.version).complete
    )


def _next_look(
    decision: Decision, analysis: MeasuredAnalysis | None, background: MeasuredAnalysis | None
) -> float | None:
    measure = analysis.next_due_in if analysis and decision.analyse else None
    waits = [w for w in (decision.requeue_after, measure) if w is not None]
    if background is not None and _walking(decision):
        waits.append(background.next_due_in)
    if decision.phase == "Progressing" and measure is None:
        waits.append(PROGRESSING_FLOOR_SECONDS)
    return min(waits) if waits else None


def _walking(decision: Decision) -> bool:
    """Whether the release still walks its steps after `decision` (not rolled back, not
    promoting, not over): background analysis goes on measuring."""
    return decision.canary and not decision.state.promoting and decision.phase != "Degraded"


def _background_events(obs: ReleaseObservation, decision: Decision) -> tuple[ReleaseEvent, ...]:
    """An Event when a background measurement's verdict differs from the one before it (the
    first included); none when the measurement rolls the release back (that Event says it)."""
    if obs.background is None or decision.reason == reasons.BACKGROUND_ANALYSIS_FAILED:
        return ()
    before = list(_dump(obs.status).get("backgroundAnalysis", {}).get("measurements") or [])
    after = list(obs.background.status.get("measurements") or [])
    if not after or (before and before[-1] == after[-1]):
        return ()
    last = after[-1]
    if before and before[-1].get("verdict") == last.get("verdict"):
        return ()
    steps = len(_steps(obs))
    message = (
        f"{obs.spec.version if obs.spec else ''} at step {int(last['step']) + 1}/{steps}: "
        f"{last['verdict']}: {last.get('summary', '')}"
    )
    warning = last.get("verdict") != "Successful"
    return (ReleaseEvent(reasons.BACKGROUND_ANALYSIS, message, warning=warning),)


# --- children ---------------------------------------------------------------------------


def _service_writes(obs: ReleaseObservation, router: TrafficRouter) -> tuple[ChildWrite, ...]:
    assert obs.spec is not None
    writes = []
    for service in router.services(obs.owner, obs.spec):
        name = service["metadata"]["name"]
        current = obs.children.services.get(name)
        if _service_differs(service, current):
            verb = "Created" if current is None else "Updated"
            reason = reasons.SERVICE_CREATED if current is None else reasons.SERVICE_UPDATED
            event = ReleaseEvent(reason, f"{verb} Service {name}")
            writes.append(ChildWrite("apply", "Service", name, service, event=event))
    return tuple(writes)


def _service_differs(desired: Mapping[str, Any], current: Mapping[str, Any] | None) -> bool:
    if current is None:
        return True
    have, want = current.get("spec", {}), desired["spec"]
    have_ports = [
        {k: p.get(k) for k in ("name", "port", "targetPort", "protocol")}
        for p in have.get("ports", [])
    ]
    return bool(have.get("selector") != want["selector"] or have_ports != want["ports"])


def _route_write(
    obs: ReleaseObservation, router: TrafficRouter, decision: Decision, canary_ready: int
) -> tuple[tuple[ChildWrite, ...], int | None, tuple[ReleaseEvent, ...]]:
    """The router's write for the decision (:meth:`TrafficRouter.shift`). Returns the write,
    the canary's weight on the route (None: no route carries the traffic) and the Events."""
    spec, ref = obs.spec, router.route_ref
    assert spec is not None
    if ref is None:
        return (), None, ()
    state = decision.state
    weight = state.canary_weight if decision.canary else 0
    if state.promoting and decision.phase == "Progressing":
        weight = 100
    mirror = state.mirror_percent if decision.canary and not state.promoting else 0
    shift = router.shift(
        obs.owner,
        obs.children.route,
        TrafficTarget(weight, mirror, canary_ready=canary_ready, replicas=spec.replicas),
    )
    if shift.patch is None:
        return (), shift.routed, shift.events
    kind, name = ref
    write = ChildWrite("patch", kind, name, shift.patch, event=shift.event)
    return (write,), shift.routed, shift.events


def _deployment_writes(
    obs: ReleaseObservation, decision: Decision, router: TrafficRouter, canary_ready: int
) -> tuple[ChildWrite, ...]:
    """The Deployments for the decision. While a canary runs, the stable track scales down
    only as canary pods become ready (`split` with `canary_ready`)."""
    spec, owner = obs.spec, obs.owner
    assert spec is not None
    stable, canary = obs.children.stable, obs.children.canary
    extra_env = _extra_env(obs)
    state = decision.state
    weight = state.canary_weight if decision.canary else 0
    replicas = router.split(spec.replicas, weight, canary_ready=canary_ready)
    writes: list[ChildWrite | None] = []
    if decision.stable_template == "spec" or stable is None:
        desired = render_deployment(
            owner, spec, track="stable", replicas=spec.replicas, extra_env=extra_env
        )
        writes.append(_deployment_write(desired, stable))
    else:
        # A promoted release's stable track takes the spec whole, replicas included, before
        # the canary goes: a stable scaled to its canary-time share would never be ready.
        full = not decision.canary or state.promoting
        writes.append(_scale(stable, spec.replicas if full else replicas.stable))
    if decision.canary:
        count = spec.replicas if state.promoting else replicas.canary
        desired = render_deployment(
            owner, spec, track="canary", replicas=count, extra_env=extra_env
        )
        writes.append(_deployment_write(desired, canary))
    elif canary is not None and decision.phase == "Degraded":
        writes.append(_scale(canary, 0))
    elif canary is not None:
        name = deployment_name(owner.name, "canary")
        writes.append(
            ChildWrite("delete", "Deployment", name, note="deleted the canary Deployment")
        )
    return tuple(w for w in writes if w is not None)


def _deployment_write(
    desired: dict[str, Any], current: Mapping[str, Any] | None
) -> ChildWrite | None:
    """Apply when the revision or the replicas differ from what runs; else leave it."""
    name = desired["metadata"]["name"]
    same_revision = (
        track_revision(current) == desired["metadata"]["annotations"][ANNOTATION_REVISION]
    )
    same_replicas = (current or {}).get("spec", {}).get("replicas") == desired["spec"]["replicas"]
    if current is not None and same_revision and same_replicas:
        return None
    if current is None:
        event = ReleaseEvent(reasons.DEPLOYMENT_CREATED, f"Created Deployment {name}")
    elif not same_revision:
        version = desired["metadata"]["labels"][LABEL_VERSION]
        event = ReleaseEvent(reasons.DEPLOYMENT_UPDATED, f"Updated Deployment {name} to {version}")
    else:
        replicas = desired["spec"]["replicas"]
        return ChildWrite("apply", "Deployment", name, desired,
                          note=f"scaled Deployment {name} to {replicas}")  # fmt: skip
    return ChildWrite("apply", "Deployment", name, desired, event=event)


def _scale(current: Mapping[str, Any], replicas: int) -> ChildWrite | None:
    if current.get("spec", {}).get("replicas") == replicas:
        return None
    name = current["metadata"]["name"]
    return ChildWrite("patch", "Deployment", name, {"spec": {"replicas": replicas}},
                      note=f"scaled Deployment {name} to {replicas}")  # fmt: skip


def _actual_weight(
    routed: int | None, obs: ReleaseObservation, revision: str, decision: Decision
) -> int:
    """The percent of traffic the canary receives now: the route's weight when a route
    carries the traffic, else the canary's share of the ready pods serving the Service."""
    if routed is not None:
        return routed
    canary = obs.children.canary
    if not decision.canary or canary is None or track_revision(canary) != revision:
        return 0
    ready_canary, ready_stable = _ready_replicas(canary), _ready_replicas(obs.children.stable)
    total = ready_canary + ready_stable
    return round(100 * ready_canary / total) if total else 0


# --- status -----------------------------------------------------------------------------

_PHASE_REASON = {
    "Healthy": reasons.STABLE,
    "Progressing": reasons.RELEASING,
    "Paused": reasons.PAUSED,
    "Degraded": reasons.ROLLED_BACK,
}


def _release_status(
    obs: ReleaseObservation, decision: Decision, revision: str, actual_weight: int
) -> tuple[MicroserviceStatus, list[DesiredCondition]]:
    spec = obs.spec
    assert spec is not None
    stable = obs.children.stable
    stable_version = track_version(stable)
    stable_health = track_health(stable, stable_version or spec.version)
    state = decision.state
    releasing = decision.phase != "Healthy" and state.revision is not None
    if decision.phase == "Healthy":
        stable_version = spec.version
    elif track_revision(stable) == revision or decision.stable_template == "spec":
        stable_version = obs.status.stable_version  # the stable track is still rolling
    analysis = _analysis_status(obs, decision)
    background = _background_status(obs, decision)
    records = [*((analysis or {}).get("measurements") or []),
               *((background or {}).get("measurements") or [])]  # fmt: skip
    failed = sum(1 for m in records if m.get("verdict") == "Failed")
    previous_flags = overrides_from_status(_dump(obs.status).get("flagOverrides"))
    flags = settle_overrides(
        previous_flags,
        state.flag_overrides,
        version=spec.version,
        promoted=decision.promoted,
        bases=obs.flag_bases,
    )
    fields: dict[str, Any] = {
        "observedGeneration": obs.generation,
        "phase": decision.phase,
        "message": decision.message,
        "stableVersion": stable_version,
        "canaryVersion": spec.version if releasing else None,
        "currentStepIndex": state.step_index if releasing else None,
        "canaryWeight": state.canary_weight if decision.canary else 0,
        "actualWeight": actual_weight,
        "replicas": _pods(stable) + _pods(obs.children.canary),
        "selector": pod_selector(obs.owner.name),
        "readyReplicas": stable_health.ready + _ready_replicas(obs.children.canary),
        "step": step_label(state.step_index if releasing else None, _steps(obs)),
        "ready": f"{stable_health.ready + _ready_replicas(obs.children.canary)}/{spec.replicas}",
        "pauseReason": decision.pause_reason,
        "failedChecks": failed,
        "analysis": analysis,
        "backgroundAnalysis": background,
        "release": {
            "revision": state.revision,
            "stepStartedAt": state.step_started_at,
            "abortedRevision": state.aborted_revision,
            "promoting": state.promoting,
            "rollbackReason": state.rollback_reason,
            "rollbackCause": state.rollback_cause,
            "mirrorPercent": state.mirror_percent,
            "handledCommands": dict(state.handled_commands) or None,
        },
        "flagOverrides": overrides_to_status(flags),
    }
    if decision.command is not None:
        by, verified = command_sender(obs, decision.command)
        fields["lastCommand"] = {"name": decision.command, "by": by, "verified": verified,
                                 "at": _rfc3339(obs.now)}  # fmt: skip
    desired = [
        *obs.gates.contract,
        *_release_conditions(
            decision, stable_health.complete, stable_health.message, spec.database is not None
        ),
    ]
    return _status(obs, desired, fields), desired


def command_sender(obs: ReleaseObservation, command: str) -> tuple[str | None, bool]:
    """Who sent `command` (its `status.commands.<command>By`), and whether the API server
    vouches for it."""
    commands = obs.status.commands
    dumped = commands.model_dump(by_alias=True, exclude_none=True) if commands else {}
    by = str(dumped.get(f"{command}By") or "") or None
    return by, by is not None and command in obs.verified_commands


def sent_by(by: str | None, verified: bool) -> str:
    """`sent by alice`, `sent by alice (unverified)`; an unnamed sender is never verified.

    >>> sent_by("alice", True), sent_by("alice", False), sent_by(None, True)
    ('sent by alice', 'sent by alice (unverified)', 'sent by an unnamed user (unverified)')
    """
    if by is None:
        return "sent by an unnamed user (unverified)"
    return f"sent by {by}" + ("" if verified else " (unverified)")


def _signed_events(obs: ReleaseObservation, decision: Decision) -> tuple[ReleaseEvent, ...]:
    """The decision's Events; those of a command it carries out say who sent it."""
    if decision.command is None:
        return decision.events
    who = sent_by(*command_sender(obs, decision.command))
    return tuple(replace(e, message=f"{e.message}; {decision.command} {who}")
                 for e in decision.events)  # fmt: skip


def _background_status(obs: ReleaseObservation, decision: Decision) -> dict[str, Any] | None:
    """`status.backgroundAnalysis`: as measured this pass, else as it was; a release that
    starts (or is retried) starts it over."""
    if any(e.reason == reasons.ROLLOUT_STARTED for e in decision.events):
        return None
    if obs.background is not None:
        return dict(obs.background.status)
    previous: dict[str, Any] | None = _dump(obs.status).get("backgroundAnalysis")
    return previous


def _analysis_status(obs: ReleaseObservation, decision: Decision) -> dict[str, Any] | None:
    """`status.analysis`: as measured this pass, else as it was; a new step starts it over
    (the history stays)."""
    if obs.analysis is not None:
        analysis: dict[str, Any] | None = dict(obs.analysis.status)
    else:
        analysis = _dump(obs.status).get("analysis")
    if decision.reset_analysis:
        analysis = {"history": (analysis or {}).get("history", []), "measurements": []}
    return analysis or None


def _release_conditions(
    decision: Decision, ready: bool, ready_message: str, database: bool
) -> list[DesiredCondition]:
    phase = decision.phase
    reason = decision.reason or _PHASE_REASON[phase]
    claimed = [
        DesiredCondition(reasons.DATABASE_CLAIMED, "True", reasons.DATABASE_READY,
                         "the owned database's credentials are injected")
    ] if database else []  # fmt: skip
    paused, degraded = phase == "Paused", phase == "Degraded"
    summary_ok = phase != "Healthy" or ready
    return [
        *claimed,
        DesiredCondition(reasons.MIGRATIONS_READY, "True", reasons.MIGRATIONS_APPLIED,
                         "no migration holds this version"),
        DesiredCondition(reasons.SPEC_VALID, "True", reasons.VALID, "the spec is valid"),
        DesiredCondition(
            reasons.AVAILABLE,
            "True" if ready else "False",
            reasons.REPLICAS_READY if ready else reasons.REPLICAS_NOT_READY,
            ready_message,
        ),
        DesiredCondition(reasons.PROGRESSING,
                         "True" if phase in ("Progressing", "Paused") else "False",
                         reason, decision.message),
        DesiredCondition(reasons.PAUSED, "True" if paused else "False",
                         reasons.PAUSED if paused else reasons.NOT_PAUSED,
                         decision.pause_reason or "not paused"),
        DesiredCondition(reasons.ROLLED_BACK, "True" if degraded else "False",
                         reason if degraded else reasons.NOT_ROLLED_BACK,
                         decision.message if degraded else "no rollback"),
        DesiredCondition(reasons.READY,
                         "True" if phase == "Healthy" and ready else "False",
                         reason if summary_ok else reasons.REPLICAS_NOT_READY,
                         decision.message if summary_ok else ready_message),
    ]  # fmt: skip


def _dump(status: MicroserviceStatus) -> dict[str, Any]:
    dumped: dict[str, Any] = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    return dumped


def _rfc3339(now: float) -> str:
    return _dt.datetime.fromtimestamp(now, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(
    obs: ReleaseObservation, desired: Sequence[DesiredCondition], fields: Mapping[str, Any]
) -> MicroserviceStatus:
    """The observed status with `fields` (by their wire names) set and `desired` merged into
    its conditions (a transition time moves only when a condition's status flips)."""
    before = _dump(obs.status)
    conditions = set_conditions(
        before.get("conditions"), desired, generation=obs.generation, now=_rfc3339(obs.now)
    )
    return MicroserviceStatus.model_validate({**before, **fields, "conditions": conditions})


def _condition_events(
    status: MicroserviceStatus,
    desired: Sequence[DesiredCondition],
    *,
    warn: bool,
    emitted: Sequence[ReleaseEvent],
) -> tuple[ReleaseEvent, ...]:
    """An Event when `Ready` (or, with `warn`, any condition) changes status or reason,
    unless an Event of that reason is already part of the pass."""
    changes = flipped(_dump(status).get("conditions"), desired, warn=warn,
                      seen_reasons=(e.reason for e in emitted))  # fmt: skip
    return tuple(ReleaseEvent(c.reason, c.message, warning=w) for c, w in changes)
