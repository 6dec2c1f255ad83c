"""The Microservice reconciler: observe, plan, apply; level-triggered and idempotent.

It reacts to every watch event of a Microservice and of the Deployments it owns. One pass
gathers one observation (the spec, the trusted status, the children, the database claim,
the release gates, the analysis), asks the core for the plan
(`pilotboat.core.release.plan_release`), and applies it: the children with server-side
apply (traffic first), the Events, `status` once. What a release must remember lives in
`status.release`, so a crash at any line is repaired by the next event: the same inputs
give the same plan, and applying an object twice changes nothing. It never writes `spec`.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from pilotboat import GROUP, VERSION
from pilotboat.api import CanaryStrategy, FeatureFlagSpec, MicroserviceSpec, RolloutPolicySpec
from pilotboat.api.flag import feature_flag_problems
from pilotboat.api.microservice import MicroserviceStatus
from pilotboat.core import reasons
from pilotboat.core.adoption import ANNOTATION_ADOPTED_BY
from pilotboat.core.flags import flag_basis, overrides_from_status
from pilotboat.core.release import (
    ChildRejection,
    ChildWrite,
    DatabaseAccess,
    MeasuredAnalysis,
    ObservedChildren,
    ReleaseGates,
    ReleaseObservation,
    ReleasePlan,
    analysis_step,
    background_step,
    desired_revision,
    gates_due,
    plan_release,
    release_state,
    router_of,
    status_as_written,
    track_revision,
    track_version,
)
from pilotboat.core.status_trust import USER_STATUS_FIELDS, trusted_status
from pilotboat.core.workload import LABEL_MANAGED_BY, Owner, deployment_name, pod_revision
from pilotboat.handlers import metrics, prefetch
from pilotboat.handlers.adoption import (
    AdoptionRefused,
    adopted_spec,
    deleting_stable,
    scale_adopted,
)
from pilotboat.handlers.analysis import (
    StepAnalysis,
    analyse_background,
    analyse_step,
    effective_template,
)
from pilotboat.handlers.cache import children as cache
from pilotboat.handlers.cache import owners
from pilotboat.handlers.children import (
    ChildBackoff,
    child_refusal,
    create_only,
)
from pilotboat.handlers.commands import verified_commands
from pilotboat.handlers.context import Reconcile, describe_validation_error, runtime
from pilotboat.handlers.contracts import contract_gate
from pilotboat.handlers.databases import database_claim
from pilotboat.handlers.faults import crash_point
from pilotboat.handlers.loop import LookAgain, ReconcileLoop
from pilotboat.handlers.migrations import migrations_blocking
from pilotboat.handlers.ports import Kube

__all__ = ["reconcile_microservice"]

WORKERS = 8
"""Passes over Microservices at a time."""

_aside = ThreadPoolExecutor(max_workers=2 * WORKERS, thread_name_prefix="pass-aside")
"""Where a first pass sends what it need not wait for in turn: its SchemaMigration list
(when admission did not ask for it) and its Services (beside its Deployment); at most two
per worker at once."""

_backoff = ChildBackoff()


def reconcile_microservice(
    kube: Kube, body: Mapping[str, Any], rc: Reconcile, *, now: float | None = None
) -> float | None:
    """Bring the children of one Microservice in line with its spec and release state;
    write status. Returns when to look again (seconds), if time alone can change things."""
    migrations = _list_migrations_early(kube, body)
    observed = _observe(kube, body, time.time() if now is None else now)
    observed = replace(
        observed,
        gates=_release_gates(kube, rc, body, observed, migrations),
        analysis=_measure_analysis(rc, observed),
        background=_measure_background(rc, observed),
    )
    plan = plan_release(observed)
    plan = _as_written(kube, body, observed, _write_children(kube, rc, observed, plan))
    if plan.hold is None and observed.adopted is not None and observed.spec is not None:
        scale_adopted(kube, rc, observed.owner, observed.spec, observed.adopted,
                      observed.children.stable, observed.children.canary)
    for event in plan.events:
        rc.event(event.reason, event.message, warning=event.warning)
    crash_point("microservice.before-status", rc.flush)
    _write_status(kube, rc, plan.status)
    return plan.next_look


# --- observe ----------------------------------------------------------------------------


class StrategyError(Exception):
    """The spec names a strategy that cannot be used (a missing RolloutPolicy)."""


def _observe(kube: Kube, body: Mapping[str, Any], now: float) -> ReleaseObservation:
    """What the API server has now: the Microservice, its strategy, database and children."""
    meta = body["metadata"]
    owner = Owner(meta["name"], meta["namespace"], meta["uid"])
    generation = int(meta.get("generation", 0))
    # Only what the operator wrote itself is release state; a forged field reads as absent.
    status = _status_model(trusted_status(body.get("status"), meta.get("managedFields")))
    try:
        spec = MicroserviceSpec.model_validate(body.get("spec") or {})
        spec, adopted = adopted_spec(kube, owner, spec)
        strategy = _strategy(kube, owner.namespace, spec)
    except ValidationError as exc:
        problem = describe_validation_error(exc)
        return ReleaseObservation(owner, generation, status, now, spec_problem=problem)
    except (StrategyError, AdoptionRefused) as exc:
        return ReleaseObservation(owner, generation, status, now, spec_problem=str(exc))
    return ReleaseObservation(
        owner,
        generation,
        status,
        now,
        spec=spec,
        strategy=strategy,
        database=_database(kube, owner, spec),
        children=_children(kube, owner, spec, strategy, first=_first_pass(body)),
        flag_bases=_flag_bases(kube, owner.namespace, status, strategy),
        rejection=_backoff.pending(owner.uid, generation),
        verified_commands=verified_commands(kube, body),
        adopted=adopted,
    )


def _status_model(status: Mapping[str, Any]) -> MicroserviceStatus:
    """`status` as its model; a field the model cannot read is left out (read as absent)."""
    try:
        return MicroserviceStatus.model_validate(status)
    except ValidationError as exc:
        unreadable = {err["loc"][0] for err in exc.errors() if err["loc"]}
        readable = {k: v for k, v in status.items() if k not in unreadable}
        return MicroserviceStatus.model_validate(readable)


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


def _database(kube: Kube, owner: Owner, spec: MicroserviceSpec) -> DatabaseAccess | None:
    if spec.database is None:
        return None
    claim = database_claim(kube, owner.namespace, owner.name, spec.database.owned_database)
    return DatabaseAccess(claim.allowed, claim.secret_name, claim.reason, claim.message)


def _first_pass(body: Mapping[str, Any]) -> bool:
    """Whether this is a Microservice's first pass (no status written yet): its children,
    unless the cache holds them, are read as absent without asking (their writes only
    create, see :func:`_write_child`)."""
    return not (body.get("status") or {}).get("observedGeneration")


def _children(
    kube: Kube,
    owner: Owner,
    spec: MicroserviceSpec,
    strategy: CanaryStrategy | None,
    *,
    first: bool = False,
) -> ObservedChildren:
    router = router_of(strategy)
    names = [s["metadata"]["name"] for s in router.services(owner, spec)]
    route = router.route_ref
    ns = owner.namespace
    stable = ("Deployment", ns, deployment_name(owner.name, "stable"))
    canary = ("Deployment", ns, deployment_name(owner.name, "canary"))
    services = [("Service", ns, name) for name in names]
    found = cache.get_many(kube, [stable, canary, *services], assume_absent=first)
    return ObservedChildren(
        stable=found[stable],
        canary=found[canary],
        services={key[2]: found[key] for key in services},
        route=kube.get(route[0], ns, route[1]) if route else None,
    )


def _flag_bases(
    kube: Kube, namespace: str, status: MicroserviceStatus, strategy: CanaryStrategy | None
) -> dict[str, str | None]:
    """The basis of every flag a split names: those in status and those the steps set."""
    dumped = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    names = {o.flag for o in overrides_from_status(dumped.get("flagOverrides"))}
    names |= {s.set_flag.flag for s in (strategy.steps if strategy else []) if s.set_flag}
    return {name: _flag_basis(kube, namespace, name) for name in sorted(names)}


def _flag_basis(kube: Kube, namespace: str, name: str) -> str | None:
    flag = kube.get("FeatureFlag", namespace, name)
    if flag is None or feature_flag_problems(flag.get("spec")):
        return None
    return flag_basis(FeatureFlagSpec.model_validate(flag["spec"]))


def _list_migrations_early(
    kube: Kube, body: Mapping[str, Any]
) -> Future[list[dict[str, Any]]] | None:
    """A Microservice's first pass starts its first release, which asks for the
    namespace's SchemaMigrations: the list the admission webhook asked for beside its dry
    runs (:mod:`pilotboat.handlers.prefetch`), else one asked at the pass's start. Later
    passes list them only when a release starts, as before."""
    if not _first_pass(body):
        return None
    asked = prefetch.take_schema_migrations(body["metadata"]["uid"])
    metrics.first_pass_listed("pass" if asked is None else "admission")
    if asked is not None:  # by the admission webhook, beside its dry runs
        return asked
    return _aside.submit(kube.list, "SchemaMigration", body["metadata"]["namespace"])


def _release_gates(
    kube: Kube,
    rc: Reconcile,
    body: Mapping[str, Any],
    observed: ReleaseObservation,
    migrations: Future[list[dict[str, Any]]] | None = None,
) -> ReleaseGates:
    """The migrations and the API contract, asked only when a release starts or is retried
    (`gates_due`); the contract only once the migrations let it go."""
    spec, owner = observed.spec, observed.owner
    if spec is None or not gates_due(observed):
        return ReleaseGates()
    blocking = migrations_blocking(kube, owner.namespace, owner.name, spec.version, migrations)
    if blocking:
        return ReleaseGates(migrations=tuple(blocking))
    stable_revision = track_revision(observed.children.stable)
    revision = desired_revision(observed)
    gate = contract_gate(kube, rc, owner, spec, body["metadata"], stable_revision, revision)
    return ReleaseGates(contract_blocking=tuple(gate.blocking), contract=tuple(gate.conditions))


def _measure_analysis(rc: Reconcile, observed: ReleaseObservation) -> MeasuredAnalysis | None:
    """The analysis of the step the release runs, measured if a measurement is due."""
    index = analysis_step(observed)
    spec, strategy = observed.spec, observed.strategy
    if index is None or spec is None or strategy is None:
        return None
    step = strategy.steps[index].analysis
    assert step is not None
    previous = observed.status.analysis
    result = analyse_step(
        step=step,
        step_index=index,
        previous=previous.model_dump(by_alias=True, exclude_none=True) if previous else None,
        **_canary_and_stable(observed, strategy, spec),
    )
    _log_measured(rc, result, f"measured canary {spec.version}", background=False)
    return MeasuredAnalysis(result.outcome, result.status, result.next_due_in)


def _measure_background(rc: Reconcile, observed: ReleaseObservation) -> MeasuredAnalysis | None:
    """The background analysis of the release (`strategy.backgroundAnalysis`), measured if
    a measurement is due at the step the release is at (`background_step`)."""
    index = background_step(observed)
    spec, strategy = observed.spec, observed.strategy
    if index is None or spec is None or strategy is None:
        return None
    previous = observed.status.background_analysis
    result = analyse_background(
        step_index=index,
        steps=len(strategy.steps),
        previous=previous.model_dump(by_alias=True, exclude_none=True) if previous else None,
        **_canary_and_stable(observed, strategy, spec),
    )
    _log_measured(rc, result, f"background measurement of canary {spec.version}",
                  background=True)  # fmt: skip
    return MeasuredAnalysis(result.outcome, result.status, result.next_due_in)


def _canary_and_stable(
    observed: ReleaseObservation, strategy: CanaryStrategy, spec: MicroserviceSpec
) -> dict[str, Any]:
    """What an analysis measures, and where: the template, both tracks' versions and
    revisions, the Prometheus to ask, the time the step started, and the canary's share of
    the requests when a route (Gateway API) sets it."""
    prometheus = strategy.analysis.prometheus if strategy.analysis else None
    routed = strategy.traffic_routing.gateway_api is not None
    return {
        "template": effective_template(strategy.analysis),
        "step_started_at": release_state(observed.status).step_started_at,
        "service": observed.owner.name,
        "namespace": observed.owner.namespace,
        "canary_version": spec.version,
        "stable_version": track_version(observed.children.stable) or "",
        "canary_revision": desired_revision(observed),
        "stable_revision": pod_revision(observed.children.stable),
        "prometheus_url": (prometheus.address if prometheus and prometheus.address
                           else runtime().prometheus_url),
        "providers": runtime().providers,
        "now": _dt.datetime.fromtimestamp(observed.now, _dt.UTC),
        "canary_share": observed.status.actual_weight / 100 if routed else None,
    }  # fmt: skip


def _log_measured(rc: Reconcile, result: StepAnalysis, what: str, *, background: bool) -> None:
    if result.measured is None:
        return
    metrics.analysis_verdict(result.measured.verdict.value)
    extra: dict[str, Any] = {"verdict": result.measured.verdict.value,
                             "queries": result.measured.queries}
    if background:
        extra["background"] = True
    rc.log.info("%s: %s", what, result.measured.message, extra=extra)


# --- apply ------------------------------------------------------------------------------


def _write_children(
    kube: Kube, rc: Reconcile, observed: ReleaseObservation, plan: ReleasePlan
) -> ReleasePlan:
    """Write the plan's children in order. Returns the plan the pass ends with: this one,
    or, when the API server refused a child, the plan for that refusal (its back-off starts)."""
    if plan.hold is not None:
        return plan
    absent = _observed_absent(observed)
    try:
        if plan.pods_first and plan.traffic and plan.workloads:
            _write_side_by_side(kube, rc, observed.owner, plan, absent)
        else:
            _write_in_turn(kube, rc, observed.owner, plan.writes, absent)
    except ApiException as exc:
        assert observed.spec is not None
        refusal = child_refusal(exc, getattr(exc, "applied_object", None) or {}, observed.spec)
        if refusal is None:
            raise
        delay = _backoff.failed(observed.owner.uid, observed.generation, message=refusal.message)
        rc.log.warning(
            "%s; trying again in %.0fs", refusal.message, delay,
            extra={"reason": reasons.CHILD_REJECTED, "retry_in": delay},
        )  # fmt: skip
        return plan_release(replace(observed, rejection=ChildRejection(refusal.message, delay)))
    _backoff.succeeded(observed.owner.uid)
    return plan


def _observed_absent(observed: ReleaseObservation) -> frozenset[tuple[str, str]]:
    """The children (kind, name) the pass observed absent: writing one only creates it."""
    children, name = observed.children, observed.owner.name
    absent = {("Service", svc) for svc, found in children.services.items() if found is None}
    if children.stable is None:
        absent.add(("Deployment", deployment_name(name, "stable")))
    if children.canary is None:
        absent.add(("Deployment", deployment_name(name, "canary")))
    return frozenset(absent)


def _as_written(
    kube: Kube, body: Mapping[str, Any], observed: ReleaseObservation, plan: ReleasePlan
) -> ReleasePlan:
    """A first deploy's plan with the status its writes leave (`status_as_written`), on the
    children it wrote as the API server returned them (from the cache)."""
    if not plan.pods_first or observed.spec is None:
        return plan
    children = _children(kube, observed.owner, observed.spec, observed.strategy,
                         first=_first_pass(body))  # fmt: skip
    return status_as_written(plan, replace(observed, children=children))


def _write_in_turn(
    kube: Kube,
    rc: Reconcile,
    owner: Owner,
    writes: Sequence[ChildWrite],
    absent: frozenset[tuple[str, str]],
    created: list[ChildWrite] | None = None,
) -> None:
    """Write one after the other. With ``created`` (the side of :func:`_write_side_by_side`
    that runs aside), the writes that created a child are added to it, and their Events and
    crash points left to the caller."""
    for write in writes:
        if _write_child(kube, rc, owner, write, absent, tell=created is None):
            if created is not None:
                created.append(write)
        if created is None:
            crash_point(f"microservice.after-{write.kind.lower()}", rc.flush)


def _write_side_by_side(
    kube: Kube, rc: Reconcile, owner: Owner, plan: ReleasePlan, absent: frozenset[tuple[str, str]]
) -> None:
    """The first deploy (``pods_first``: no pods yet, so no traffic to move first): the
    Services are written while the Deployment is, one round trip instead of two in the pass
    every new Microservice starts with. The first refusal in the plan's order is raised,
    once both sides are done. When the Deployment's name is taken (someone else's object,
    found by its create-only write), the Services this pass created are deleted again, their
    Events untold: a pass that meets a taken name leaves nothing of its own behind, and no
    Service of this Microservice sends traffic to pods it does not own."""
    created: list[ChildWrite] = []
    traffic = _aside.submit(_write_in_turn, kube, rc, owner, plan.traffic, absent, created)
    try:
        _write_in_turn(kube, rc, owner, plan.workloads, absent)
    except LookAgain as taken:
        wait([traffic])
        for write in created:
            kube.delete(write.kind, owner.namespace, write.name)
            cache.forget(write.kind, owner.namespace, write.name)
            rc.log.info("%s %s deleted again: %s", write.kind, write.name, taken)
        raise
    except Exception:
        wait([traffic])  # the pass ends with both sides done, whichever failed
        raise
    traffic.result()
    for write in plan.traffic:
        if write in created:
            _tell(rc, write)
        crash_point(f"microservice.after-{write.kind.lower()}", rc.flush)


def _write_child(
    kube: Kube,
    rc: Reconcile,
    owner: Owner,
    write: ChildWrite,
    absent: frozenset[tuple[str, str]],
    *,
    tell: bool = True,
) -> bool:
    """Carry out one write, and tell it (its Event or log line) unless ``tell`` is False
    and it created the child; True when it created the child (it was observed absent)."""
    namespace = owner.namespace
    creates = write.verb == "apply" and (write.kind, write.name) in absent
    if creates:
        _remember(write.kind, _create(kube, owner, write))
    elif write.verb == "apply":
        _remember(write.kind, kube.apply(dict(write.body)))
    elif write.verb == "patch":
        _remember(write.kind, kube.merge_patch(write.kind, namespace, write.name,
                                               dict(write.body)))  # fmt: skip
    else:
        kube.delete(write.kind, namespace, write.name)
        cache.forget(write.kind, namespace, write.name)
    if tell or not creates:
        _tell(rc, write)
    return creates


def _tell(rc: Reconcile, write: ChildWrite) -> None:
    if write.event is not None:
        rc.event(write.event.reason, write.event.message, warning=write.event.warning)
    if write.note is not None:
        rc.log.info(write.note)


def _create(kube: Kube, owner: Owner, write: ChildWrite) -> dict[str, Any]:
    """Create a child the pass observed absent, by a server-side apply that only creates
    (:data:`CREATE_ONLY`): an object of that name made since, or one the cache did not
    hold and the first pass did not ask for, is refused by the API server (409), never
    written over. Then the name is contested (every read asks the API server, which tells
    whose it is) and the pass ends unwritten, to be planned again at once."""
    try:
        return kube.apply(create_only(write.body))
    except ApiException as exc:
        if exc.status != 409:
            raise
    cache.contested(write.kind, owner.namespace, write.name)
    raise LookAgain(f"{write.kind} {write.name} exists though this pass found none")


def _remember(kind: str, written: Mapping[str, Any] | None) -> None:
    """What a write returned is the child as it is now: the next pass reads it from the
    cache instead of one watch event older."""
    if written:
        cache.seen(kind, written)


_OPERATOR_FIELDS = tuple(
    field.alias or name
    for name, field in MicroserviceStatus.model_fields.items()
    if (field.alias or name) not in USER_STATUS_FIELDS
)


def _pruned(value: Any) -> Any:
    """`value` without null fields: what the API server keeps of it."""
    if isinstance(value, Mapping):
        return {k: _pruned(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def _write_status(kube: Kube, rc: Reconcile, status: MicroserviceStatus) -> None:
    """Patch the operator's status fields to `status` when they differ from what is there
    (a field now absent is written as null, so the merge patch removes it; the people's
    `commands` are never touched)."""
    desired = status.model_dump(by_alias=True, mode="json")
    current = dict(rc.body.get("status") or {})
    patch = {k: desired.get(k) for k in _OPERATOR_FIELDS
             if _pruned(desired.get(k)) != _pruned(current.get(k))}  # fmt: skip
    meta = rc.body["metadata"]
    rc.flush()  # the Events that explain this status are posted before it
    if patch:
        written = kube.merge_patch(
            str(rc.body["kind"]), meta["namespace"], meta["name"], {"status": patch},
            subresource="status",
        )  # fmt: skip
        if written:  # the next pass starts from this status
            owners.wrote("Microservice", written, settled=_only_status_moved(rc.body, written))
        rc.log.info("status written", extra={"status": patch})
    metrics.release_observed(
        meta["namespace"], meta["name"], status.phase, status.canary_weight, status.actual_weight
    )


def _only_status_moved(read: Mapping[str, Any], written: Mapping[str, Any]) -> bool:
    """Whether ``written`` is ``read`` with only the operator's status fields changed: then
    the pass that read it has seen everything else in it, and the watch event of
    ``written`` needs no pass of its own. Anything else moved (a spec, a label, the people's
    ``status.commands``), and its own event may have been folded into that one.

    >>> read = {"metadata": {"resourceVersion": "1"}, "spec": {"version": "v1"}}
    >>> _only_status_moved(read, {"metadata": {"resourceVersion": "2"},
    ...     "spec": {"version": "v1"}, "status": {"phase": "Healthy"}})
    True
    >>> _only_status_moved(read, {"metadata": {"resourceVersion": "3"},
    ...     "spec": {"version": "v2"}, "status": {"phase": "Healthy"}})
    False
    """

    def rest(obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in (obj.get("metadata") or {}).items()
                if k not in ("resourceVersion", "managedFields")}  # fmt: skip
        status = {k: v for k, v in (obj.get("status") or {}).items() if k not in _OPERATOR_FIELDS}
        return {**obj, "metadata": meta, "status": status}

    return rest(read) == rest(written)


_loop = ReconcileLoop(
    "Microservice",
    reconcile_microservice,
    retry_after=5.0,
    workers=WORKERS,
    read=lambda kube, namespace, name: owners.get(kube, "Microservice", namespace, name),
    gone=lambda namespace, name: metrics.release_observed(namespace, name, None, 0),
    events_aside=True,  # _write_status flushes them first
)


def _reconcile_guarded(
    namespace: str, name: str, logger: Any = None, *, urgent: bool = False
) -> None:
    """Visit the Microservice soon: its key joins the work queue (a burst of events for one
    object is one or two passes; see :mod:`pilotboat.handlers.loop`)."""
    _loop.enqueue(namespace, name, urgent=urgent)


# The watch handlers below only update caches and queue keys (no API call, nothing that
# blocks), so they are coroutines: Kopf runs them on its event loop instead of handing each
# event to a thread. Those that read the API server (the OwnedDatabase's claimants) stay
# functions, which Kopf runs on its threads.


@kopf.on.event(GROUP, VERSION, "microservices")
async def on_microservice_event(
    event: kopf.RawEvent, body: kopf.Body, logger: kopf.Logger, **_: Any
) -> None:
    meta = body["metadata"]
    # A new Microservice, or a changed spec, is what someone just asked for: its pass goes
    # before those that follow the Deployment controller's news.
    known = owners.generation("Microservice", meta["namespace"], meta["name"])
    urgent = known != int(meta.get("generation") or 0)
    raw = event.get("object") or body
    echo = event.get("type") == "MODIFIED" and owners.echo("Microservice", raw)
    owners.seen("Microservice", raw, deleted=event.get("type") == "DELETED")
    if event.get("type") == "DELETED" or meta.get("deletionTimestamp"):
        # Forgotten now, and once more by a pass queued behind any pass still running
        # (which read the object before it went, and would report its phase again).
        metrics.release_observed(meta["namespace"], meta["name"], None, 0)
    if echo:
        return  # the operator's own status write, back: the pass that wrote it saw the rest
    _reconcile_guarded(meta["namespace"], meta["name"], logger, urgent=urgent)


@kopf.on.event("apps", "v1", "deployments", labels={LABEL_MANAGED_BY: "pilotboat"})
async def on_child_deployment_event(
    event: kopf.RawEvent, body: kopf.Body, logger: kopf.Logger, **_: Any
) -> None:
    _child_event("Deployment", event, body)
    deleting_stable(body)


@kopf.on.event("apps", "v1", "deployments", annotations={ANNOTATION_ADOPTED_BY: kopf.PRESENT})
async def on_adopted_deployment_event(
    event: kopf.RawEvent, body: kopf.Body, logger: kopf.Logger, **_: Any
) -> None:
    """A change to an adopted Deployment (to its template: a release) visits the
    Microservice that adopted it."""
    adopted_by = (body["metadata"].get("annotations") or {}).get(ANNOTATION_ADOPTED_BY)
    if adopted_by and event.get("type") != "DELETED":
        _reconcile_guarded(body["metadata"]["namespace"], str(adopted_by))


@kopf.on.event("", "v1", "services", labels={LABEL_MANAGED_BY: "pilotboat"})
async def on_child_service_event(
    event: kopf.RawEvent, body: kopf.Body, logger: kopf.Logger, **_: Any
) -> None:
    _child_event("Service", event, body)


def _child_event(kind: str, event: kopf.RawEvent, body: kopf.Body) -> None:
    """Keep the child in the cache, and visit the Microservice that controls it."""
    raw = event.get("object") or body
    cache.seen(kind, raw, deleted=event.get("type") == "DELETED")
    for ref in body.get("metadata", {}).get("ownerReferences", []) or []:
        if ref.get("kind") == "Microservice" and ref.get("controller"):
            _reconcile_guarded(body["metadata"]["namespace"], ref["name"])


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
async def on_schema_migration_for_its_service(
    body: kopf.Body, logger: kopf.Logger, **_: Any
) -> None:
    service = ((body.get("spec") or {}).get("requiredBy") or {}).get("service")
    if service:
        _reconcile_guarded(body["metadata"]["namespace"], service, logger)
